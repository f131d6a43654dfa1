"""Scoring a generative student's generations, and batched greedy generation on tiny models."""

import copy
import os

import pytest
import torch
from test_lm_tasks import RECORDS, tiny_llama, tiny_t5, tokenizer  # noqa: F401 (fixtures)

from stepdistill.lm.evaluate import (
    chosen_answer,
    evaluate_generative_student,
    generate,
    label_accuracy,
    label_correct,
    numeric_value,
    rouge_l,
)
from stepdistill.lm.prompts import LABEL_TASK, RATIONALE_TASK, LMRecord

CQA = LMRecord("c", "Where do you keep milk?", "fridge", "It stays cold.", ("car", "fridge", "garden center."))
SVAMP = LMRecord("s", "84 points in 2 rounds; points per round?", "42", "84 / 2 = 42.")
ESNLI = LMRecord("e", "Premise: A dog runs.\nHypothesis: An animal moves.", "entailment", "A dog is an animal.")


@pytest.mark.parametrize("generated", ["fridge", "Fridge.", " FRIDGE ", "(b)", "(b) fridge", "b", "B."])
def test_cqa_answers_match_by_text_or_letter(generated):
    assert chosen_answer(generated, CQA.choices) == "fridge"
    assert label_correct("cqa", generated, CQA)


@pytest.mark.parametrize("generated", ["car", "(a)", "(f)", "a fridge", "", "milk"])
def test_cqa_other_answers_are_wrong(generated):
    assert not label_correct("cqa", generated, CQA)


def test_cqa_choice_with_final_period_matches_without_it():
    assert chosen_answer("garden center", CQA.choices) == "garden center."
    assert chosen_answer("(c)", CQA.choices) == "garden center."


@pytest.mark.parametrize("generated, correct", [("( 84.0 / 2.0 )", True), ("42", True), ("42.00001", True), ("84/2", True), ("$42", True), ("42.01", False), ("21 * 3", False), ("forty-two", False), ("", False)])
def test_svamp_answers_are_compared_by_value(generated, correct):
    assert label_correct("svamp", generated, SVAMP) is correct


def test_svamp_code_is_scored_wrong_and_never_run(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command) or 0)
    for generated in ["__import__('os').system('x')", "9 ** 9 ** 9", "(lambda: 42)()", "42 if True else 0"]:
        assert numeric_value(generated) is None
        assert not label_correct("svamp", generated, SVAMP)
    assert calls == []


def test_esnli_label_word_ignores_case_and_final_period():
    assert label_correct("esnli", "Entailment.", ESNLI)
    assert not label_correct("esnli", "neutral", ESNLI) and not label_correct("esnli", "entails", ESNLI)


def test_label_accuracy_is_the_share_correct():
    assert label_accuracy("svamp", ["42", "41"], [SVAMP, SVAMP]) == 0.5


def test_rouge_l_is_one_for_identical_texts_and_zero_for_disjoint_ones():
    assert rouge_l(["A dog is an animal."], ["A dog is an animal."]) == pytest.approx(1.0)
    assert rouge_l(["cats sleep"], ["A dog runs."]) == 0.0
    assert 0 < rouge_l(["a dog is running"], ["A dog runs."]) < 1


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_batched_generation_equals_one_prompt_at_a_time(architecture, tokenizer, tiny_llama, tiny_t5):  # noqa: F811
    model = tiny_t5 if architecture == "seq2seq" else tiny_llama
    # Prompts of different lengths: a decoder-only model's short prompts are left-padded.
    batched = generate(model, tokenizer, RECORDS, LABEL_TASK, batch_size=4, max_new_tokens=6, max_prompt_tokens=512)
    alone = [generate(model, tokenizer, [record], LABEL_TASK, max_new_tokens=6, max_prompt_tokens=512)[0] for record in RECORDS]
    assert batched == alone and all(batched)


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_generation_prompts_are_the_training_prompts(architecture, tokenizer, tiny_llama, tiny_t5, monkeypatch):  # noqa: F811
    from stepdistill.engines.lm_batching import MultiTaskCollator

    model = copy.deepcopy(tiny_t5 if architecture == "seq2seq" else tiny_llama)
    seen = []

    def record_prompts(input_ids, attention_mask, **settings):
        seen.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask))
        return input_ids if architecture == "causal" else input_ids[:, :1]

    monkeypatch.setattr(model, "generate", record_prompts)
    collator = MultiTaskCollator(tokenizer, seq2seq=architecture == "seq2seq", max_prompt_tokens=12)
    for task in (LABEL_TASK, RATIONALE_TASK):
        seen.clear()
        generate(model, tokenizer, RECORDS, task, batch_size=3, max_prompt_tokens=12)
        assert seen == [list(collator.encoded(record, task).prompt_ids) for record in RECORDS]
    if architecture == "causal":  # the input first, then the task's tag
        assert tokenizer.decode(seen[0]).endswith("\nexplain:\n") and len(seen[0]) == 12


def test_scores_of_generations_like_the_teacher(tokenizer, tiny_llama, monkeypatch):  # noqa: F811
    from stepdistill.lm import evaluate as lm_eval

    records = [SVAMP, SVAMP]
    written = {LABEL_TASK: ["( 84.0 / 2.0 )", "41", "many"], RATIONALE_TASK: [record.rationale for record in records]}
    monkeypatch.setattr(lm_eval, "generate", lambda model, tok, given, task, *args, **kwargs: written[task][: len(given)])
    scores = evaluate_generative_student(tiny_llama, tokenizer, records, "svamp", max_prompt_tokens=512)
    assert scores.metrics == {"label_accuracy": 0.5, "coverage": 1.0, "rationale_rouge_l": pytest.approx(1.0)}
    assert scores.answers == ["42", "41"]
    # An answer that names no value is a wrong one, and lowers the coverage.
    unparsed = evaluate_generative_student(tiny_llama, tokenizer, [SVAMP] * 3, "svamp", rationales=False, max_prompt_tokens=512)
    assert unparsed.metrics == {"label_accuracy": pytest.approx(1 / 3), "coverage": pytest.approx(2 / 3)} and unparsed.answers[2] == ""


def test_evaluation_runs_end_to_end_on_a_tiny_model(tokenizer, tiny_llama):  # noqa: F811
    torch.manual_seed(0)
    scores = evaluate_generative_student(tiny_llama, tokenizer, [CQA, CQA], "cqa", batch_size=2, max_new_tokens=4, max_prompt_tokens=512).metrics
    assert 0 <= scores["label_accuracy"] <= 1 and 0 <= scores["rationale_rouge_l"] <= 1
