"""Generative students' building blocks on tiny random models with the SmolLM2 tokenizer: a
2-layer Llama (causal) and a 2-layer T5 (seq2seq) of width 32. A causal student's batches are
packed (one row per record input, its tasks as branches); their losses and gradients are checked
against the separate ``input + tag + target`` sequences."""

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import raises_one_line
from pydantic import ValidationError

from stepdistill.data.llm_outputs import LLMAnswer, LLMOutputs
from stepdistill.engines.lm_batching import (
    IGNORE_INDEX,
    LengthGroupedBatchSampler,
    MultiTaskCollator,
    both_tasks,
    branch_attention_mask,
    supports_packing,
    target_logits,
    task_losses,
    task_token_sums,
    unpacked,
)
from stepdistill.lm.config import LMTokenTeacherConfig
from stepdistill.lm.models import check_same_vocabulary
from stepdistill.lm.prompts import LABEL_TASK, RATIONALE_TASK, LMRecord, encode_task, lm_records, prompt_ids
from stepdistill.losses import soft_target_kl

RECORDS = [
    LMRecord("q1", "Where do you keep milk?\nAnswer Choices:\n(a) fridge\n(b) car", "fridge", "Milk must stay cold, and a fridge keeps things cold."),
    LMRecord("q2", "Premise: A dog runs.\nHypothesis: An animal moves.", "entailment", "A dog is an animal and running is moving."),
    LMRecord("q3", "Luke scored 84 points in 2 rounds. How many points per round?", "42", "84 / 2 = 42."),
    LMRecord("q4", "Is the sky green?", "no", "The sky is blue on a clear day, so it is not green; it can be grey when it is cloudy."),
]


@pytest.fixture(scope="session")
def tokenizer(smollm2):
    """The SmolLM2 tokenizer (49,152 tokens), from the converted default model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


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


@pytest.fixture(params=["packed", "rows", "seq2seq"])
def model_and_collator(request, tokenizer, tiny_llama, tiny_t5):
    seq2seq = request.param == "seq2seq"
    return (tiny_t5 if seq2seq else tiny_llama), MultiTaskCollator(tokenizer, seq2seq=seq2seq, packed=request.param == "packed")


def separate(collator):
    """A collator like ``collator`` that gives every (record, task) a row of its own."""
    return MultiTaskCollator(collator.tokenizer, collator.seq2seq, collator.max_prompt_tokens, collator.max_target_tokens, packed=False)


def reference_task_loss(model, collator, items):
    """The released trainer's per-task loss: the model's own mean token cross-entropy, over one
    row per item."""
    batch = separate(collator)(items)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "labels")}
    return model(**inputs).loss


def with_attention(model, implementation):
    """A copy of ``model`` whose attention is ``implementation``."""
    copied = copy.deepcopy(model)
    copied.set_attn_implementation(implementation)
    assert copied.config._attn_implementation == implementation
    return copied


def test_causal_prompts_put_the_task_tag_after_the_shared_input(tokenizer):
    record = RECORDS[0]
    label, rationale = (prompt_ids(tokenizer, record, task, seq2seq=False) for task in (LABEL_TASK, RATIONALE_TASK))
    assert tokenizer.decode(label) == f"{record.text}\npredict:\n" and tokenizer.decode(rationale) == f"{record.text}\nexplain:\n"
    shared = tokenizer(record.text)["input_ids"]
    assert label[: len(shared)] == rationale[: len(shared)] == shared
    encoded = encode_task(tokenizer, record, RATIONALE_TASK, seq2seq=False)
    assert encoded.shared_ids == tuple(shared) and tokenizer.decode(encoded.branch_ids).startswith("\nexplain:\n")


def test_causal_labels_cover_exactly_the_target_tokens(tokenizer):
    collator = MultiTaskCollator(tokenizer, seq2seq=False, packed=False)
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
        assert tokenizer.decode(encoded.prompt_ids) == record.text + ("\npredict:\n" if task == LABEL_TASK else "\nexplain:\n")
    # Dynamic padding: the batch is as long as its longest sequence, no longer.
    assert batch["input_ids"].shape[1] == max(collator.encoded(r, t).tokens for r, t in items)
    assert batch["attention_mask"].sum() == sum(collator.encoded(r, t).tokens for r, t in items)
    assert batch["task_ids"].tolist() == [LABEL_TASK, RATIONALE_TASK] * 2


def test_packed_rows_hold_each_input_once_and_every_target_after_it(tokenizer):
    collator = MultiTaskCollator(tokenizer, seq2seq=False)
    # The human- and the teacher-labelled twin of a record share its input: one row, three branches.
    teacher = dataclasses.replace(RECORDS[0], label="car")
    items = [(RECORDS[0], LABEL_TASK), (teacher, LABEL_TASK), (RECORDS[0], RATIONALE_TASK), (RECORDS[1], LABEL_TASK)]
    batch = collator(items, ids=[0, 1, 2, 0])
    assert set(batch) == {"input_ids", "labels", "position_ids", "segments", "task_ids"}
    assert batch["input_ids"].shape[0] == 2
    row = 0
    shared = collator.encoded(RECORDS[0], LABEL_TASK).shared
    assert batch["segments"][row, :shared].eq(0).all() and batch["position_ids"][row, :shared].tolist() == list(range(shared))
    start = shared
    for branch, ((record, task), term) in enumerate(zip(items[:3], [0, 1, 2]), start=1):
        encoded = collator.encoded(record, task)
        end = start + len(encoded.branch_ids)
        assert batch["input_ids"][row, start:end].tolist() == list(encoded.branch_ids)
        assert batch["segments"][row, start:end].eq(branch).all() and batch["task_ids"][row, start:end].eq(term).all()
        # Each branch continues from the input's end, as its own sequence input + tag + target does.
        assert batch["position_ids"][row, start:end].tolist() == list(range(shared, shared + end - start))
        labels = batch["labels"][row, start:end]
        assert labels[labels != IGNORE_INDEX].tolist() == list(encoded.target_ids)
        start = end
    assert batch["segments"][row, start:].eq(-1).all() and batch["labels"][row, start:].eq(IGNORE_INDEX).all()
    # A record's row alone is its length for length grouping.
    assert collator.record_length(RECORDS[1]) == collator(both_tasks(RECORDS[1:2]))["input_ids"].shape[1]
    assert collator.record_length(RECORDS[0]) == shared + sum(len(collator.encoded(RECORDS[0], t).branch_ids) for t in (LABEL_TASK, RATIONALE_TASK))


def test_seq2seq_batch_is_prompts_in_targets_out(tokenizer):
    collator = MultiTaskCollator(tokenizer, seq2seq=True)
    assert not collator.packed
    items = both_tasks(RECORDS[2:])
    batch = collator(items)
    for row, (record, task) in enumerate(items):
        encoded = collator.encoded(record, task)
        # The released prompt, unchanged: the task prefix, then the input.
        expected = tokenizer(("predict: " if task == LABEL_TASK else "explain: ") + record.text + "\n")["input_ids"]
        assert list(encoded.prompt_ids) == expected and encoded.shared == 0
        assert batch["input_ids"][row, : len(encoded.prompt_ids)].tolist() == list(encoded.prompt_ids)
        assert batch["attention_mask"][row].sum() == len(encoded.prompt_ids)
        labels = batch["labels"][row]
        assert labels[labels != IGNORE_INDEX].tolist() == list(encoded.target_ids)
    assert batch["task_ids"].tolist() == [LABEL_TASK, RATIONALE_TASK] * 2
    with raises_one_line("seq2seq"):
        MultiTaskCollator(tokenizer, seq2seq=True, packed=True)


def test_targets_are_truncated_but_keep_their_end(tokenizer):
    encoded = encode_task(tokenizer, RECORDS[3], RATIONALE_TASK, seq2seq=True, max_prompt_tokens=5, max_target_tokens=4)
    assert len(encoded.prompt_ids) == 5 and len(encoded.target_ids) == 4
    assert encoded.target_ids[-1] == tokenizer.eos_token_id


def test_causal_prompts_are_truncated_in_the_input_the_same_for_every_task(tokenizer):
    label, rationale = (encode_task(tokenizer, RECORDS[3], task, seq2seq=False, max_prompt_tokens=6) for task in (LABEL_TASK, RATIONALE_TASK))
    # "\nexplain:\n" is the longer tag (5 tokens): the input is cut to 1 token for both tasks.
    assert len(rationale.prompt_ids) == 6 and label.shared_ids == rationale.shared_ids and len(label.shared_ids) == 1
    assert tokenizer.decode(label.prompt_ids[1:]) == "\npredict:\n" and tokenizer.decode(rationale.prompt_ids[1:]) == "\nexplain:\n"
    with raises_one_line("max_prompt_tokens"):
        prompt_ids(tokenizer, RECORDS[3], LABEL_TASK, seq2seq=False, max_prompt_tokens=5)


def test_one_pass_equals_two_passes_one_per_task(model_and_collator):
    model, collator = model_and_collator
    with torch.no_grad():
        one_pass = task_losses(model, collator(both_tasks(RECORDS)))
        per_task = [reference_task_loss(model, collator, [(record, task) for record in RECORDS]) for task in (LABEL_TASK, RATIONALE_TASK)]
    torch.testing.assert_close(one_pass, torch.stack(per_task), rtol=0, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_the_separate_sequences_losses_and_gradients(attention, tiny_llama, tokenizer):
    model = with_attention(tiny_llama, attention)
    assert supports_packing(model)
    # Three terms as the LM engine numbers them: hard (human label), soft (teacher label), rationale.
    items, ids = [], []
    for record in RECORDS:
        items += [(record, LABEL_TASK), (dataclasses.replace(record, label="maybe"), LABEL_TASK), (record, RATIONALE_TASK)]
        ids += [0, 1, 2]
    packed = MultiTaskCollator(tokenizer, seq2seq=False)
    batches = {"packed": packed(items, ids), "separate": separate(packed)(items, ids)}
    assert batches["packed"]["input_ids"].shape[0] == len(RECORDS) and batches["separate"]["input_ids"].shape[0] == len(items)
    losses, gradients = {}, {}
    for name, batch in batches.items():
        model.zero_grad()
        losses[name] = task_losses(model, batch, n_tasks=3)
        losses[name].sum().backward()
        gradients[name] = {key: parameter.grad.clone() for key, parameter in model.named_parameters()}
    torch.testing.assert_close(losses["packed"], losses["separate"], rtol=0, atol=1e-5)
    for key, gradient in gradients["separate"].items():
        difference = (gradients["packed"][key] - gradient).norm() / gradient.norm().clamp(min=1e-12)
        assert difference <= 1e-4, f"{key}: relative gradient difference {difference:.2e}"


def test_a_branch_never_sees_another(tiny_llama, tokenizer):
    collator = MultiTaskCollator(tokenizer, seq2seq=False)
    record = RECORDS[0]
    # The label branch comes first: under plain causal attention, the rationale branch would read it.
    changed = dataclasses.replace(record, label="a car, surely")
    with torch.no_grad():
        logits, _, tasks = target_logits(tiny_llama, collator([(record, LABEL_TASK), (record, RATIONALE_TASK)]))
        changed_logits, _, changed_tasks = target_logits(tiny_llama, collator([(changed, LABEL_TASK), (record, RATIONALE_TASK)]))
    assert collator([(changed, LABEL_TASK), (record, RATIONALE_TASK)])["input_ids"].shape[0] == 1  # one row, two branches
    rationale, changed_rationale = logits[tasks == RATIONALE_TASK], changed_logits[changed_tasks == RATIONALE_TASK]
    torch.testing.assert_close(changed_rationale, rationale, rtol=0, atol=1e-6)
    assert (changed_tasks == LABEL_TASK).sum() != (tasks == LABEL_TASK).sum()  # the label branch did change
    # Without the branch mask (plain causal attention over the row) the rationale would change.
    batch = collator([(changed, LABEL_TASK), (record, RATIONALE_TASK)])
    with torch.no_grad():
        plain = tiny_llama.base_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
        masked = tiny_llama.base_model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=branch_attention_mask(batch["segments"], tiny_llama)
        ).last_hidden_state
    rationale_tokens = batch["segments"][0] == 2
    assert not torch.allclose(plain[0, rationale_tokens], masked[0, rationale_tokens])


def test_padding_in_packed_rows_stays_finite(tiny_llama, tokenizer):
    batch = MultiTaskCollator(tokenizer, seq2seq=False)(both_tasks(RECORDS))
    assert (batch["segments"] == -1).any()  # rows of different lengths: padding
    for attention in ("sdpa", "eager"):
        model = with_attention(tiny_llama, attention)
        with torch.no_grad():
            mask = branch_attention_mask(batch["segments"], model)
            hidden = model.base_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask).last_hidden_state
        assert torch.isfinite(hidden).all(), attention
    assert branch_attention_mask(batch["segments"], tiny_llama).dtype == torch.bool
    assert branch_attention_mask(batch["segments"], with_attention(tiny_llama, "eager")).dtype == torch.float32


@pytest.fixture
def rows_only_attention():
    """An attention implementation that is not among those packing needs (sdpa's kernel under
    another name, as a flash-attention model would be): it reads no custom 4D mask."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("rows_only", sdpa_attention_forward)
    AttentionMaskInterface.register("rows_only", sdpa_mask)
    return "rows_only"


def test_models_that_cannot_read_the_branch_mask_get_rows(tiny_llama, tokenizer, rows_only_attention):
    model = with_attention(tiny_llama, rows_only_attention)
    assert not supports_packing(model) and not supports_packing(SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=False, _attn_implementation="flash_attention_2")))
    items = both_tasks(RECORDS)
    rows = MultiTaskCollator(tokenizer, seq2seq=False, packed=supports_packing(model))
    assert not rows.packed and "attention_mask" in rows(items)
    packed_batch = MultiTaskCollator(tokenizer, seq2seq=False)(items)
    # unpacked: the rows collator's batch, up to the padding's (masked) ids.
    row_batch, from_packed = rows(items), unpacked(packed_batch)
    for key in ("attention_mask", "labels", "task_ids"):
        assert torch.equal(from_packed[key], row_batch[key]), key
    assert torch.equal(from_packed["input_ids"][row_batch["attention_mask"] == 1], row_batch["input_ids"][row_batch["attention_mask"] == 1])
    # A packed batch given to such a model (a token-distillation teacher reads the student's) is
    # unpacked: the same targets in the same order as the student's.
    with torch.no_grad():
        logits, targets, tasks = target_logits(model, packed_batch)
        expected_logits, expected_targets, expected_tasks = target_logits(tiny_llama, packed_batch)
        sums, counts = task_token_sums(model, packed_batch)
        expected_sums, expected_counts = task_token_sums(tiny_llama, rows(items))
    assert torch.equal(targets, expected_targets) and torch.equal(tasks, expected_tasks)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(sums, expected_sums, rtol=1e-6, atol=1e-4)
    assert torch.equal(counts, expected_counts)


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
    collator = MultiTaskCollator(tokenizer, seq2seq=False, packed=False)
    lengths = [collator.record_length(record) for record in RECORDS]
    assert lengths == [max(collator.encoded(r, t).tokens for t in (LABEL_TASK, RATIONALE_TASK)) for r in RECORDS]


def test_token_kd_is_zero_for_identical_logits_and_positive_otherwise():
    """Token-level distillation is the package's one KL (losses.soft_target_kl) over a vocabulary,
    at the target tokens a batch selects."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 11, generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert soft_target_kl(student[mask], student[mask].clone(), temperature=2.0).abs().max() < 1e-6
    teacher = torch.randn(2, 5, 11, generator=generator)
    assert (soft_target_kl(student[mask], teacher[mask], temperature=2.0) > 0).all()
    # The teacher's logits are a fixed target: the student's get a gradient, the teacher's none.
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    soft_target_kl(student[mask], teacher[mask], 2.0).sum().backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    with pytest.raises(ValidationError, match="temperature"):
        LMTokenTeacherConfig(model="teacher", temperature=0)


def test_token_kd_has_the_t_squared_scale_of_hinton():
    student, teacher = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    p = torch.softmax(teacher / 4, -1)
    expected = 16 * (p * (p.log() - torch.log_softmax(student / 4, -1))).sum()
    assert soft_target_kl(student, teacher, 4.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_vocabulary_mismatch_is_a_one_line_error_naming_both(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    check_same_vocabulary(tokenizer, tokenizer)
    other_path = Path(tmp_path / "other")
    tokenizer.save_pretrained(other_path)
    other = AutoTokenizer.from_pretrained(other_path)
    other.add_tokens(["<extra-token>"])
    with raises_one_line("tokenizer .* differ") as error:
        check_same_vocabulary(tokenizer, other)
    message = str(error.value)
    assert tokenizer.name_or_path in message and str(other_path) in message


def test_lm_records_take_labels_from_humans_or_the_teacher():
    import pandas as pd

    frame = pd.DataFrame({"id": ["a", "b"], "input": ["2 + 2?", "3 * 3?"], "label": ["4", "9"]})
    answers = {"a": LLMAnswer("a", "5", ["2 + 2 = 4."]), "b": LLMAnswer("b", None, ["3 * 3 = 9."])}
    outputs = LLMOutputs(answers, ("5",), 1, [])
    human, left_out = lm_records(frame, outputs, "svamp", "human")
    assert [(r.label, r.rationale) for r in human] == [("4", "2 + 2 = 4."), ("9", "3 * 3 = 9.")] and left_out == []
    teacher, left_out = lm_records(frame, outputs, "svamp", "teacher")
    assert [r.label for r in teacher] == ["5"] and left_out == ["b"]
    with raises_one_line("lack 1 of 2"):
        lm_records(frame, LLMOutputs({"a": answers["a"]}, (), 0, []), "svamp")


@pytest.mark.usefixtures("smollm2")  # the benchmark's students read SmolLM2's tokenizer
def test_benchmark_smoke_reports_both_speeds(tmp_path, capsys, monkeypatch, dsbs_dir):
    import json

    # In this process, so that torch and transformers are not imported again.
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    import lm_step

    output = tmp_path / "lm_step.json"
    lm_step.main(["--smoke", "--data-dir", str(dsbs_dir), "--output", str(output)])
    results = json.loads(output.read_text())
    one_pass, released = results["one_pass"], results["released"]
    assert one_pass["tokens"] > 0 and released["tokens"] > 0
    assert results["ratio"] == pytest.approx(one_pass["tokens_per_second"] / released["tokens_per_second"], rel=1e-2)
    printed = capsys.readouterr().out
    assert f"{one_pass['tokens_per_second']:10.1f} tokens/s" in printed and f"{released['tokens_per_second']:10.1f} tokens/s" in printed
    assert torch.get_num_threads() == 1
