"""The experiment's track for generative students: language models distilled from an LLM's labels
and rationales (the released distilling-step-by-step data; ``LMTrainConfig``).

The runs are over a fixed test file (``data.repeats.fixed_test_runs``): each draws its own
train/validation split of the training records (seed ``evaluation.seed + run``), which also
seeds the student's initialization (tiny students), batch order and dropout; one stratum, since
the labels are free text (cqa's are answers, svamp's numbers), not classes to balance. The
validation loss (the human label's token cross-entropy) drives early stopping and picks the
student to deploy; the test split is generated on once per student, after training, within the
prompt budget the students trained with (``training.max_prompt_tokens``). The teacher (the
LLM's outputs, and optionally a local model for token-level distillation) is the same in every
run. Of the students, run 0's are kept: the chosen method's is saved with ``save_pretrained``.

Under ``accelerate launch`` (or ``torchrun``) several processes share each student's batches and
generations (engines/processes.py); every process computes the same results and the main process
alone reports progress and writes files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from stepdistill.data.llm_outputs import dsbs_directory, read_dsbs
from stepdistill.data.repeats import RunRows, fixed_test_runs
from stepdistill.engines.base import TrainingData, TrainState, new_state
from stepdistill.engines.lm import DistillationRecord, LMData, LMOptions, TokenTeacher, distillation_records
from stepdistill.engines.processes import lm_accelerator, map_across, process_device
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import count_parameters
from stepdistill.experiment.loop import Experiment, Track, run_fractions
from stepdistill.experiment.records import Labelled, RunResult, TeacherFacts, Trained
from stepdistill.experiment.summary import Setup
from stepdistill.lm.config import LMDataConfig, LMTrainConfig
from stepdistill.lm.evaluate import answer_of, evaluate_generative_student, generate, label_correct
from stepdistill.lm.models import is_seq2seq, new_student, student_tokenizer, token_teacher_model
from stepdistill.lm.predict import LM_MANIFEST, LM_STUDENT_KIND
from stepdistill.lm.prompts import LMRecord, input_cut, lm_records, prompt_formats, target_cut
from stepdistill.progress import SILENT, Progress
from stepdistill.run_dir import CHOSEN_DIR, RunStudents
from stepdistill.terms import Method, Rationale, SoftTarget

# What the teacher of an lm-train run is, in its results.
TEACHER_KIND = "llm outputs"


# --- data ------------------------------------------------------------------------------------


@dataclass
class LMDataset:
    """The records of an experiment: ``train`` (``DistillationRecord``: both labels, the teacher's
    rationale), ``test`` (``LMRecord``: human labels, the teacher's rationale),
    ``test_teacher_labels`` (the teacher's label of each test record, None where it gave none),
    and warnings about records left out."""

    task: str
    train: list[DistillationRecord]
    test: list[LMRecord]
    test_teacher_labels: list[str | None]
    warnings: list[str]

    def teacher_test_metrics(self) -> dict[str, float]:
        """``label_accuracy``, the share of test records whose teacher label is the human one (an
        unparsed answer is wrong), and ``coverage``, the share whose label gives an answer."""
        pairs = list(zip(self.test_teacher_labels, self.test))
        return {
            "label_accuracy": float(np.mean([label_correct(self.task, label or "", record) for label, record in pairs])),
            "coverage": float(np.mean([answer_of(self.task, label or "", record) is not None for label, record in pairs])),
        }

    def fingerprint(self) -> str:
        """sha256 of every record the experiment reads, in order: the same records give the same print."""
        digest = hashlib.sha256(self.task.encode())
        for example in self.train:
            digest.update(json.dumps([example.record.id, example.record.text, example.record.label, example.record.rationale, example.teacher_label]).encode())
        for record, teacher_label in zip(self.test, self.test_teacher_labels):
            digest.update(json.dumps([record.id, record.text, record.label, record.rationale, teacher_label]).encode())
        return f"sha256:{digest.hexdigest()}"


def load_lm_data(data: LMDataConfig) -> LMDataset:
    """The configured splits as records; a split with too few usable records is an error."""
    directory = dsbs_directory(data.data_dir)
    frame, outputs = read_dsbs(directory, data.task, data.train_split)
    frame = frame.head(data.max_train_records) if data.max_train_records else frame
    human, no_rationale = lm_records(frame, outputs, data.task, "human")
    teacher, _ = lm_records(frame, outputs, data.task, "teacher")
    train, no_teacher_label = distillation_records(human, teacher)
    test_frame, test_outputs = read_dsbs(directory, data.task, data.test_split)
    test_frame = test_frame.head(data.max_test_records) if data.max_test_records else test_frame
    test, test_left_out = lm_records(test_frame, test_outputs, data.task, "human")
    if len(train) < 4 or not test:
        raise StepDistillError(
            f"{len(train)} usable training and {len(test)} test records; raise data.max_train_records (at least 4 usable) or max_test_records"
        )
    warnings = [
        f"{count} {split} records left out: {why}"
        for count, split, why in (
            (len(no_rationale), "training", "no teacher rationale"),
            (len(no_teacher_label), "training", "no teacher label (every method trains on the same records)"),
            (len(test_left_out), "test", "no teacher rationale"),
        )
        if count
    ]
    return LMDataset(data.task, train, test, [test_outputs.answers[record.id].label for record in test], warnings)


def cut_notes(config: LMTrainConfig, data: LMDataset, tokenizer, seq2seq: bool) -> list[str]:
    """What the user should know of texts cut to the token budgets (``training.max_prompt_tokens``
    for the inputs, ``training.max_target_tokens`` for what the students learn to write): a line
    for each that cuts any, or, with ``data.long_texts: refuse``, a one-line error instead."""
    budget = config.training
    inputs = [input_cut(tokenizer, example.record, seq2seq, budget.max_prompt_tokens) for example in data.train]
    test_inputs = [input_cut(tokenizer, record, seq2seq, budget.max_prompt_tokens) for record in data.test]
    targets = [
        target_cut(tokenizer, text, budget.max_target_tokens)
        for example in data.train
        for text in (example.record.label, example.teacher_label, example.record.rationale)
    ]
    notes = []
    if any(inputs) or any(test_inputs):
        notes.append(
            f"{sum(inputs)} of {len(inputs)} training and {sum(test_inputs)} of {len(test_inputs)} test records have an input longer than"
            f" training.max_prompt_tokens ({budget.max_prompt_tokens} tokens), which students read cut"
        )
    if any(targets):
        notes.append(
            f"{sum(targets)} of the {len(targets)} labels and rationales students learn to write are longer than training.max_target_tokens"
            f" ({budget.max_target_tokens} tokens) and learned cut"
        )
    if notes and config.data.long_texts == "refuse":
        raise StepDistillError(f"{notes[0]}; raise the budget, or set data.long_texts: cut to train on them cut")
    return [f"{note}; raise it to keep them whole, or set data.long_texts: refuse to refuse them" for note in notes]


def lm_runs(config: LMTrainConfig, data: LMDataset) -> list[RunRows]:
    """The runs (positions in ``data.train`` and ``data.test``, the test records after the
    training ones): a fixed test file's, one stratum."""
    evaluation = config.evaluation
    n_train, n_test = len(data.train), len(data.test)
    if evaluation.val_fraction * n_train < 1:
        raise StepDistillError(
            f"evaluation.val_fraction {evaluation.val_fraction:g} of {n_train} training records leaves no validation record; raise it or data.max_train_records"
        )
    return fixed_test_runs(np.zeros(n_train + n_test, dtype=np.int64), ["records"], n_test, evaluation.repeats, evaluation.val_fraction, evaluation.seed)


# --- the track -------------------------------------------------------------------------------


@dataclass
class LMRun:
    """A run's training and validation records."""

    train: list[DistillationRecord]
    val: list[DistillationRecord]


@dataclass
class LMFraction:
    """What students train on at a labelled fraction: the run's records, the validation records
    whose human labels the validation loss reads, and the training data (``LMData``: the hard
    term on the labelled records only)."""

    train: list[DistillationRecord]
    val: list[DistillationRecord]
    val_seen: list[LMRecord]
    data: LMData


class LMTrack(Track):
    """Generative students of ``config``: the released records read once, the student's tokenizer
    (SmolLM2's by default, converted once by one process), the token teacher if any, and this
    process's share of the work among several."""

    kind = "lm"
    compared_metrics = ("label_accuracy",)

    def __init__(self, config: LMTrainConfig):
        self.config = config
        self.data: LMDataset | None = None
        self.accelerator = None
        self.tokenizer = None
        self.teacher: TokenTeacher | None = None
        self.device = None
        self.notes: list[str] = []  # what reading the records found worth a warning

    @property
    def main_process(self) -> bool:
        """Whether this process reports and writes (the only one, or the main one of several)."""
        if self.accelerator is None:
            self.accelerator = lm_accelerator()
        return self.accelerator.is_main_process

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def read(self, progress: Progress) -> None:
        config = self.config
        if self.data is None:
            with progress.task("reading the records"):
                self.data = load_lm_data(config.data)
        lm_runs(config, self.data)  # before any model loads: a split too small is an error
        _without_library_progress_bars()
        if self.accelerator is None:
            self.accelerator = lm_accelerator()
        # The default student is converted once, on first use: by one process, the others then read it.
        with self.accelerator.main_process_first():
            self.tokenizer = student_tokenizer(config.student)
        self.device = process_device(self.accelerator)
        self.notes = cut_notes(config, self.data, self.tokenizer, is_seq2seq(config.student))
        if config.teacher is not None:
            model = token_teacher_model(config.teacher, self.tokenizer, config.student, self.device)
            self.teacher = TokenTeacher(model, config.teacher.temperature, (SoftTarget, Rationale) if config.teacher.rationale else (SoftTarget,))

    def fingerprints(self) -> dict:
        if self.data is None:
            self.data = load_lm_data(self.config.data)
        return {"records": self.data.fingerprint()}

    def runs(self, hidden_labels: bool) -> list[RunRows]:
        return lm_runs(self.config, self.data)  # one stratum: no label decides a split

    def start_run(self, run: RunRows, labelled: Labelled, progress: Progress) -> LMRun:
        return LMRun([self.data.train[i] for i in run.train], [self.data.train[i] for i in run.val])

    def teacher_facts(self, context: LMRun) -> TeacherFacts:
        # Written before the experiment, the same in every run; its rationales are text, with no width.
        return TeacherFacts(None, None, None, None)

    def split_ids(self, context: LMRun) -> tuple[list[str], list[str], list[str]]:
        return [e.record.id for e in context.train], [e.record.id for e in context.val], [record.id for record in self.data.test]

    def at_fraction(self, context: LMRun, run: RunRows, labelled: Labelled, progress: Progress) -> LMFraction:
        val_seen = [example.record for i, example in enumerate(context.val) if labelled.val is None or labelled.val[i]]
        seen = None if labelled.train is None else labelled.train.tolist()
        options = LMOptions(**self.config.training.engine_options())
        data = LMData(self.tokenizer, context.train, val_seen, options, self.accelerator, self.teacher, seen)
        return LMFraction(context.train, context.val, val_seen, data)

    def n_train(self, at: LMFraction) -> int:
        return len(at.train)

    def new_states(self, at: LMFraction, methods: list[Method], seeds: list[int]) -> list[TrainState]:
        return [new_state(m.name, m, partial(new_student, self.config.student, self.tokenizer, seed), seed, device=self.device) for m, seed in zip(methods, seeds, strict=True)]

    def training_data(self, at: LMFraction) -> TrainingData:
        return at.data

    def validation_metrics(self, at: LMFraction, state: TrainState) -> dict[str, float]:
        """The validation loss of the student as it ends: its best epoch's when those weights were
        restored, else its last epoch's."""
        if state.best_model is not None and state.diverged is None:
            return {"log_loss": state.best_val_loss}
        return {"log_loss": state.history[-1]["val_loss"] if state.history else float("nan")}

    def test(self, at: LMFraction, trained: dict[str, Trained], measure: bool) -> RunResult:
        config, data = self.config, self.data
        result = RunResult(
            teacher={"test": data.teacher_test_metrics()},
            majority=None,
            n_train=len(at.train),
            n_val=len(at.val),
            n_test=len(data.test),
        )
        result.test_rows = {
            "id": [record.id for record in data.test],
            "label": [record.label for record in data.test],
            "teacher": [answer_of(data.task, label or "", record) or "" for label, record in zip(data.test_teacher_labels, data.test)],
        }
        for name, t in trained.items():
            state = t.state
            scores = evaluate_generative_student(
                state.model, self.tokenizer, data.test, data.task, config.evaluation.batch_size, config.evaluation.max_new_tokens,
                config.evaluation.rationales, _generator(self.accelerator), max_prompt_tokens=config.training.max_prompt_tokens,
            )
            result.methods[name] = {
                "test": scores.metrics,
                "validation": self.validation_metrics(at, state),
                "params": count_parameters(state.model),
                "method": state.method.describe(),
                "never_predicts": [],
                "diverged": state.diverged,
                "settings": t.settings,
                "tuning": t.validation,
                "history": state.history,
            }
            result.correct[name] = np.asarray(scores.correct)
            result.test_rows[name] = scores.answers
        return result

    def kept(self, context: LMRun, trained: dict[str, Trained], run: RunRows) -> RunStudents:
        """Run 0's students, one of which is deployed (a language model is too large to keep one per run)."""
        models = {name: t.state.model.to("cpu").eval() for name, t in trained.items()} if run.index == 0 else {}
        return RunStudents(run.index, None, models)

    def warnings(self, results: list[RunResult]) -> list[str]:
        return self.data.warnings + self.notes

    def setup(self) -> Setup:
        return Setup(teacher_kind=TEACHER_KIND, refit=False, scheme="fixed test file", fixed_test=True, classes=None)

    def saved_students(self, students: RunStudents) -> dict:
        return {name: {"config": model.config.to_json_string(), "weights": model.state_dict()} for name, model in students.models.items()}

    def students_from(self, saved: dict, index: int) -> RunStudents:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        models = {}
        for name, student in saved.items():
            settings = json.loads(student["config"])
            model_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
            loader = AutoModelForSeq2SeqLM if model_config.is_encoder_decoder else AutoModelForCausalLM
            models[name] = loader.from_config(model_config)
            models[name].load_state_dict(student["weights"])
            models[name].eval()
        return RunStudents(index, None, models)

    def write_students(self, staging_dir: Path, results: dict, students: list[RunStudents]) -> list[str]:
        """The chosen method's student of run 0 into ``staging_dir/student``: the model and its
        tokenizer (``save_pretrained``), and its manifest (what ``stepdistill predict`` reads:
        the task, the prompts' format, the generation settings)."""
        chosen = results["chosen"]["method"]
        model = students[0].models[chosen]
        directory = staging_dir / CHOSEN_DIR
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        config = self.config
        manifest = {
            "kind": LM_STUDENT_KIND,
            "task": config.data.task,
            "prompts": prompt_formats(model.config.is_encoder_decoder),
            "generation": {"max_new_tokens": config.evaluation.max_new_tokens, "max_prompt_tokens": config.training.max_prompt_tokens},
            "chosen": {**results["chosen"], "run": students[0].index},
            "student": config.student.model_dump(mode="json"),
            "date": results["date"],
        }
        (directory / LM_MANIFEST).write_text(json.dumps(manifest, indent=2))
        return [CHOSEN_DIR]


def run_lm(config: LMTrainConfig, progress: Progress = SILENT, fractions: list[float] | None = None, compare_with: str | None = None) -> Experiment:
    """The lm-train experiment of ``config`` at ``fractions`` (default: ``data.labelled_fraction``),
    without checkpoints: for library use."""
    return run_fractions(LMTrack(config), fractions or [config.data.labelled_fraction], progress, compare_with=compare_with)


def _without_library_progress_bars() -> None:
    """Silence transformers' own bars (loading and saving weights): stepdistill shows its own
    progress, and ``--quiet`` means quiet."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _generator(accelerator) -> Callable[..., list[str]]:
    """``lm.evaluate.generate`` with its batches dealt to the processes and the texts gathered back
    in order on every one (each batch is the one a single process generates)."""

    def generate_across(model, tokenizer, records, task, batch_size, max_new_tokens, *, max_prompt_tokens) -> list[str]:
        batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
        return map_across(
            accelerator, lambda batch: generate(model, tokenizer, batch, task, batch_size, max_new_tokens, max_prompt_tokens=max_prompt_tokens), batches
        )

    return generate_across
