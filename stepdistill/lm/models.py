"""Generative students' models: the tokenizer, a fresh student (SmolLM2-135M-Instruct by default,
a local Hugging Face directory, or a tiny random model for tests and CPU demos), and the frozen
teacher of token-level distillation, checked to share the student's tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from stepdistill.errors import StepDistillError
from stepdistill.lm.config import LMStudentConfig, LMTokenTeacherConfig, TinyStudent


def student_tokenizer(student: LMStudentConfig):
    """The tokenizer of ``student``: its model directory's, else SmolLM2's."""
    from transformers import AutoTokenizer

    from stepdistill.lm.smollm2 import converted_model_directory

    source = student.model if student.model is not None else converted_model_directory()
    if not Path(source).is_dir():
        raise StepDistillError(f"student.model {source} is not a directory; give a local Hugging Face model directory")
    return AutoTokenizer.from_pretrained(source)


def is_seq2seq(student: LMStudentConfig) -> bool:
    """Whether ``student`` is an encoder-decoder (seq2seq) model rather than a causal LM."""
    from transformers import AutoConfig

    if student.tiny is not None:
        return student.tiny.kind == "seq2seq"
    # SmolLM2 by default, a causal LM
    return student.model is not None and AutoConfig.from_pretrained(student.model).is_encoder_decoder


def new_student(student: LMStudentConfig, tokenizer, seed: int):
    """A fresh student model on the CPU: loaded from its directory (SmolLM2 by default), or a tiny
    one initialized from ``seed``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from stepdistill.lm.smollm2 import converted_model_directory

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if student.tiny is not None:
            return _tiny_model(student.tiny, tokenizer)
        source = student.model if student.model is not None else converted_model_directory()
        loader = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(source).is_encoder_decoder else AutoModelForCausalLM
        return loader.from_pretrained(source)


def _tiny_model(tiny: TinyStudent, tokenizer):
    """A random Llama (causal) or T5 (seq2seq) of width ``tiny.hidden`` over the tokenizer's
    vocabulary. Untied embeddings: a random tied output layer favours special tokens, and the
    generations would be empty."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    if tiny.kind == "seq2seq":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        config = T5Config(
            vocab_size=len(tokenizer), d_model=tiny.hidden, d_kv=tiny.hidden // tiny.heads, d_ff=2 * tiny.hidden, num_layers=tiny.layers,
            num_heads=tiny.heads, pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=tokenizer.eos_token_id,
        )
        return T5ForConditionalGeneration(config)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=tiny.hidden, intermediate_size=2 * tiny.hidden, num_hidden_layers=tiny.layers,
        num_attention_heads=tiny.heads, num_key_value_heads=tiny.heads, max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def check_same_vocabulary(student_tokenizer, teacher_tokenizer) -> None:
    """Raise a one-line ``StepDistillError`` naming both tokenizers unless they map the same
    tokens to the same ids (token distillation compares logits id by id)."""
    student_vocabulary, teacher_vocabulary = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocabulary == teacher_vocabulary:
        return
    differing = sorted(set(student_vocabulary.items()) ^ set(teacher_vocabulary.items()), key=lambda item: item[1])
    raise StepDistillError(
        f"the student's tokenizer {student_tokenizer.name_or_path!r} ({len(student_vocabulary)} tokens) and the teacher's "
        f"{teacher_tokenizer.name_or_path!r} ({len(teacher_vocabulary)} tokens) differ (e.g. token {differing[0][0]!r} -> "
        f"id {differing[0][1]}); token distillation needs a teacher with the student's tokenizer, or use the teacher's rationales only"
    )


def token_teacher_model(teacher: LMTokenTeacherConfig, tokenizer, student: LMStudentConfig, device):
    """The frozen teacher model of token-level distillation on ``device``, after checking, before
    it loads, that its tokenizer is the student's (``check_same_vocabulary``) and its kind (causal
    or seq2seq) the student's."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if not teacher.model.is_dir():
        raise StepDistillError(f"teacher.model {teacher.model} is not a directory; give a local Hugging Face model directory")
    check_same_vocabulary(tokenizer, AutoTokenizer.from_pretrained(teacher.model))
    seq2seq = AutoConfig.from_pretrained(teacher.model).is_encoder_decoder
    if seq2seq != is_seq2seq(student):
        raise StepDistillError(f"teacher.model {teacher.model} is {'a seq2seq' if seq2seq else 'a causal'} model and the student is not; token distillation needs the same kind")
    return (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(teacher.model).to(device).eval().requires_grad_(False)
