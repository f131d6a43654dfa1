"""Generative students' building blocks on tiny random models with the SmolLM2 tokenizer: a
2-layer Llama (causal) and a 2-layer T5 (seq2seq) of width 32."""

from pathlib import Path

import pytest
import torch

from stepdistill.errors import StepDistillError
from stepdistill.text.llm_outputs import LLMAnswer, LLMOutputs
from stepdistill.text.lm_tasks import (
    IGNORE_INDEX,
    LABEL_TASK,
    RATIONALE_TASK,
    LengthGroupedBatchSampler,
    LMRecord,
    MultiTaskCollator,
    both_tasks,
    check_same_vocabulary,
    encode_task,
    lm_records,
    task_losses,
    token_kd_loss,
)

DSBS_DIR = Path(__file__).parents[2] / "shared" / "data" / "dsbs"

RECORDS = [
    LMRecord("q1", "Where do you keep milk?\nAnswer Choices:\n(a) fridge\n(b) car", "fridge", "Milk must stay cold, and a fridge keeps things cold."),
    LMRecord("q2", "Premise: A dog runs.\nHypothesis: An animal moves.", "entailment", "A dog is an animal and running is moving."),
    LMRecord("q3", "Luke scored 84 points in 2 rounds. How many points per round?", "42", "84 / 2 = 42."),
    LMRecord("q4", "Is the sky green?", "no", "The sky is blue on a clear day, so it is not green; it can be grey when it is cloudy."),
]


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer (49,152 tokens), from the converted default model (once per session,
    shared with the lm-teach tests)."""
    from transformers import AutoTokenizer

    from stepdistill.text.smollm2 import converted_model_directory

    return AutoTokenizer.from_pretrained(converted_model_directory())


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    # Untied, its random output layer writes words rather than special tokens, so that
    # generations are non-empty text.
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_t5(tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    pad = tokenizer.pad_token_id
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, dropout_rate=0.0,
        pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=tokenizer.eos_token_id,
    )
    return T5ForConditionalGeneration(config).eval()


@pytest.fixture(params=["causal", "seq2seq"])
def model_and_collator(request, tokenizer, tiny_llama, tiny_t5):
    seq2seq = request.param == "seq2seq"
    return (tiny_t5 if seq2seq else tiny_llama), MultiTaskCollator(tokenizer, seq2seq=seq2seq)


def reference_task_loss(model, batch):
    """The released trainer's per-task loss: the model's own mean token cross-entropy."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}
    return model(**inputs).loss


def test_causal_labels_cover_exactly_the_target_tokens(tokenizer):
    collator = MultiTaskCollator(tokenizer, seq2seq=False)
    items = both_tasks(RECORDS[:2])
    batch = collator(items)
    for row, (record, task) in enumerate(items):
        encoded = collator.encoded(record, task)
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        targets = labels != IGNORE_INDEX
        assert targets.sum() == len(encoded.target_ids)
        # The targets follow the prompt at once; everything else is prompt or padding.
        start = len(encoded.prompt_ids)
        assert targets[start : start + len(encoded.target_ids)].all() and not targets[:start].any()
        assert labels[targets].tolist() == ids[targets].tolist() == list(encoded.target_ids)
        assert encoded.target_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(encoded.target_ids, skip_special_tokens=True) == (record.label if task == LABEL_TASK else record.rationale)
        assert tokenizer.decode(encoded.prompt_ids).startswith("predict: " if task == LABEL_TASK else "explain: ")
    # Dynamic padding: the batch is as long as its longest sequence, no longer.
    assert batch["input_ids"].shape[1] == max(collator.encoded(r, t).tokens for r, t in items)
    assert batch["attention_mask"].sum() == sum(collator.encoded(r, t).tokens for r, t in items)
    assert batch["task_ids"].tolist() == [LABEL_TASK, RATIONALE_TASK] * 2


def test_seq2seq_batch_is_prompts_in_targets_out(tokenizer):
    collator = MultiTaskCollator(tokenizer, seq2seq=True)
    items = both_tasks(RECORDS[2:])
    batch = collator(items)
    for row, (record, task) in enumerate(items):
        encoded = collator.encoded(record, task)
        assert batch["input_ids"][row, : len(encoded.prompt_ids)].tolist() == list(encoded.prompt_ids)
        assert batch["attention_mask"][row].sum() == len(encoded.prompt_ids)
        labels = batch["labels"][row]
        assert labels[labels != IGNORE_INDEX].tolist() == list(encoded.target_ids)


def test_targets_are_truncated_but_keep_their_end(tokenizer):
    encoded = encode_task(tokenizer, RECORDS[3], RATIONALE_TASK, max_prompt_tokens=5, max_target_tokens=4)
    assert len(encoded.prompt_ids) == 5 and len(encoded.target_ids) == 4
    assert encoded.target_ids[-1] == tokenizer.eos_token_id


def test_one_pass_equals_two_passes_one_per_task(model_and_collator):
    model, collator = model_and_collator
    with torch.no_grad():
        one_pass = task_losses(model, collator(both_tasks(RECORDS)))
        per_task = [reference_task_loss(model, collator([(record, task) for record in RECORDS])) for task in (LABEL_TASK, RATIONALE_TASK)]
    torch.testing.assert_close(one_pass, torch.stack(per_task), rtol=0, atol=1e-5)


def test_padding_does_not_change_losses(model_and_collator):
    model, collator = model_and_collator
    short = RECORDS[2]
    with torch.no_grad():
        alone = task_losses(model, collator(both_tasks([short])))
        # Beside the longest record, the short one's sequences are mostly padding.
        beside_long = task_losses(model, collator([(short, LABEL_TASK), (RECORDS[3], RATIONALE_TASK)]))
    torch.testing.assert_close(beside_long[0], alone[0], rtol=0, atol=1e-5)


def test_a_task_missing_from_the_batch_contributes_nothing(model_and_collator):
    model, collator = model_and_collator
    losses = task_losses(model, collator([(RECORDS[0], LABEL_TASK)]))
    assert losses[0] > 0 and losses[1] == 0


def test_task_losses_train_both_tasks(tiny_llama, tokenizer):
    model = type(tiny_llama)(tiny_llama.config)
    model.load_state_dict(tiny_llama.state_dict())
    model.train()
    collator = MultiTaskCollator(tokenizer, seq2seq=False)
    batch = collator(both_tasks(RECORDS[:2]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = task_losses(model, batch).detach()
    for _ in range(5):
        optimizer.zero_grad()
        losses = task_losses(model, batch)
        (0.5 * losses[0] + 0.5 * losses[1]).backward()
        optimizer.step()
    after = task_losses(model, batch).detach()
    assert (after < before).all()


def padding_share(batches, lengths):
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return 1 - sum(lengths) / padded


def test_length_grouping_pads_less_than_random_batches():
    lengths = torch.randint(5, 200, (2000,), generator=torch.Generator().manual_seed(0)).tolist()
    grouped = list(LengthGroupedBatchSampler(lengths, batch_size=16, seed=0))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [shuffled[i : i + 16] for i in range(0, len(shuffled), 16)]
    assert sorted(i for batch in grouped for i in batch) == list(range(len(lengths)))
    assert len(grouped) == len(random_batches)
    assert padding_share(grouped, lengths) < 0.1 and padding_share(random_batches, lengths) > 0.3


def test_length_grouping_is_seeded_per_epoch():
    lengths = list(range(100))
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert first == list(LengthGroupedBatchSampler(lengths, batch_size=8, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_record_lengths_group_records_by_their_longer_task(tokenizer):
    collator = MultiTaskCollator(tokenizer, seq2seq=False)
    lengths = [collator.record_length(record) for record in RECORDS]
    assert lengths == [max(collator.encoded(r, t).tokens for t in (LABEL_TASK, RATIONALE_TASK)) for r in RECORDS]


def test_token_kd_is_zero_for_identical_logits_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 11, generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert token_kd_loss(student, student.clone(), mask, temperature=2.0) == pytest.approx(0, abs=1e-6)
    teacher = torch.randn(2, 5, 11, generator=generator)
    assert token_kd_loss(student, teacher, mask, temperature=2.0) > 0
    # Masked-out positions do not count.
    changed = teacher.clone()
    changed[~mask] += 100
    assert token_kd_loss(student, changed, mask, 2.0) == pytest.approx(token_kd_loss(student, teacher, mask, 2.0).item())
    with pytest.raises(StepDistillError, match="temperature"):
        token_kd_loss(student, teacher, mask, temperature=0)


def test_token_kd_has_the_t_squared_scale_of_hinton():
    student, teacher = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.tensor([True])
    p = torch.softmax(teacher / 4, -1)
    expected = 16 * (p * (p.log() - torch.log_softmax(student / 4, -1))).sum()
    assert token_kd_loss(student, teacher, mask, 4.0) == pytest.approx(expected.item(), rel=1e-5)


def test_vocabulary_mismatch_is_a_one_line_error_naming_both(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    check_same_vocabulary(tokenizer, tokenizer)
    other_path = Path(tmp_path / "other")
    tokenizer.save_pretrained(other_path)
    other = AutoTokenizer.from_pretrained(other_path)
    other.add_tokens(["<extra-token>"])
    with pytest.raises(StepDistillError) as error:
        check_same_vocabulary(tokenizer, other)
    message = str(error.value)
    assert "\n" not in message and tokenizer.name_or_path in message and str(other_path) in message


def test_lm_records_take_labels_from_humans_or_the_teacher():
    import pandas as pd

    frame = pd.DataFrame({"id": ["a", "b"], "input": ["2 + 2?", "3 * 3?"], "label": ["4", "9"]})
    answers = {"a": LLMAnswer("a", "5", ["2 + 2 = 4."]), "b": LLMAnswer("b", None, ["3 * 3 = 9."])}
    outputs = LLMOutputs(answers, ("5",), 1, [])
    human, left_out = lm_records(frame, outputs, "svamp", "human")
    assert [(r.label, r.rationale) for r in human] == [("4", "2 + 2 = 4."), ("9", "3 * 3 = 9.")] and left_out == []
    teacher, left_out = lm_records(frame, outputs, "svamp", "teacher")
    assert [r.label for r in teacher] == ["5"] and left_out == ["b"]
    with pytest.raises(StepDistillError, match="lack 1 of 2"):
        lm_records(frame, LLMOutputs({"a": answers["a"]}, (), 0, []), "svamp")


def test_benchmark_smoke_reports_both_speeds(tmp_path, capsys, monkeypatch):
    import json

    if not (DSBS_DIR / "datasets" / "cqa").is_dir():
        pytest.skip("the distilling-step-by-step release is not beside the project")
    # In this process, so that torch and transformers are not imported again.
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    import lm_step

    output = tmp_path / "lm_step.json"
    lm_step.main(["--smoke", "--data-dir", str(DSBS_DIR), "--output", str(output)])
    results = json.loads(output.read_text())
    one_pass, released = results["one_pass"], results["released"]
    assert one_pass["tokens"] > 0 and released["tokens"] > 0
    assert results["ratio"] == pytest.approx(one_pass["tokens_per_second"] / released["tokens_per_second"], rel=1e-2)
    printed = capsys.readouterr().out
    assert f"{one_pass['tokens_per_second']:10.1f} tokens/s" in printed and f"{released['tokens_per_second']:10.1f} tokens/s" in printed
    assert torch.get_num_threads() == 1
