"""Throughput benchmark: fine-tuning a text student's encoder, stepdistill's encoder student against
a plain PyTorch / Hugging Face training loop of the same model, data and recipe.

Data: e-SNLI premise-hypothesis pairs from the released distilling-step-by-step data (its
validation file: the first ``--train`` records to train on, the next ``--val`` to score),
all-MiniLM-L6-v2 (bundled) read as a siamese pair encoder (mean-pooled u, v;
``[u, v, |u - v|, u * v]`` into an MLP of 256), texts cut at 128 tokens, batches of 32, AdamW
with 1e-3 for the head, cross-entropy on the human labels. Two recipes (``RECIPES``):

- ``whole``: the whole encoder trained at 2e-5, one epoch;
- ``preset``: the ``esnli`` preset's: the embeddings and 3 lowest of the 6 layers frozen, the
  rest at 1e-4, 3 epochs.

Two paths for each:

- ``plain``: the usual loop: a shuffled ``DataLoader`` of record indices, each batch tokenized
  with dynamic padding (``tokenizer(..., padding=True)``), forward, backward, step; frozen
  parameters take no gradient.
- ``stepdistill``: ``EncoderStudentModel`` (students/encoder.py) trained by ``fit`` (the engine
  every student trains with): tokenized once, batches of similar lengths cut to their longest
  row, bfloat16 autocast where the processor computes it natively (``precision: auto``), the
  frozen layers' outputs computed once.

Both are timed over the epochs and the pass over the validation records that ends each (what
early stopping reads; stepdistill's also measures its loss terms on 128 training records),
tokenizing included (once, before the first epoch, for stepdistill; in the loop for the plain
one). Records per second (training records times epochs), their ratio, and each path's validation
accuracy.

    .venv/bin/python bench/encoder_speed.py [--data-dir ../shared/data/dsbs] [--train 1000] [--val 500] [--threads 2]

Writes bench/encoder_speed.json and prints the table; a line per recipe says whether the target
(ratio >= 2 at accuracy within 0.02) was met.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from stepdistill.data.llm_outputs import dsbs_directory, read_dsbs
from stepdistill.data.table import Table
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.methods import method_spec
from stepdistill.students.build import StudentShape, native_bf16, student_factory
from stepdistill.students.config import EncoderStudent
from stepdistill.terms import method_of
from stepdistill.text.tokens import encoder_directory, load_encoder_files, token_features

MAX_TOKENS, BATCH, HEAD_LR, HIDDEN = 128, 32, 1e-3, 256
# name: (frozen lowest layers, the encoder's learning rate, epochs)
RECIPES = {"whole": (0, 2e-5, 1), "preset": (3, 1e-4, 3)}
TARGET_RATIO, ACCURACY_TOLERANCE = 2.0, 0.02
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "encoder_speed.json"


def plain(premises, hypotheses, y, val, seed: int, recipe: tuple[int, float, int]) -> tuple[float, float]:
    """The usual loop; (seconds for the epochs, validation accuracy after the last)."""
    from transformers import AutoModel, AutoTokenizer

    directory = encoder_directory(None)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(directory)
    frozen, encoder_lr, epochs = recipe
    for module in [encoder.embeddings, *encoder.encoder.layer[:frozen]] if frozen else []:
        module.requires_grad_(False)
    width = encoder.config.hidden_size
    head = nn.Sequential(nn.Linear(4 * width, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 3))
    trained = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": head.parameters(), "lr": HEAD_LR}, {"params": trained, "lr": encoder_lr}], weight_decay=0.0)

    def pooled(texts):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        states = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (states * mask).sum(1) / mask.sum(1)

    def logits(indices):
        u, v = pooled([premises[i] for i in indices]), pooled([hypotheses[i] for i in indices])
        return head(torch.cat([u, v, (u - v).abs(), u * v], dim=1))

    val_premises, val_hypotheses, val_y = val
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        encoder.train()
        for indices in DataLoader(range(len(y)), batch_size=BATCH, shuffle=True, generator=order):
            loss = F.cross_entropy(logits(indices.tolist()), torch.as_tensor(y[indices.numpy()]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # Each epoch ends, as the recipe's early stopping needs, with a pass over the validation records.
        encoder.eval()
        with torch.no_grad():
            predicted = []
            for start in range(0, len(val_y), 128):
                u, v = pooled(val_premises[start : start + 128]), pooled(val_hypotheses[start : start + 128])
                predicted.append(head(torch.cat([u, v, (u - v).abs(), u * v], dim=1)).argmax(1))
    seconds = time.perf_counter() - started
    return seconds, float((torch.cat(predicted).numpy() == val_y).mean())


def stepdistill_path(frame, y, val_frame, val_y, seed: int, recipe: tuple[int, float, int]) -> tuple[float, float]:
    """stepdistill's encoder student through ``fit``; (seconds for tokenizing and the epochs, validation accuracy after the last)."""
    frozen, encoder_lr, epochs = recipe
    config = EncoderStudent(kind="encoder", max_tokens=MAX_TOKENS, hidden=(HIDDEN,), encoder_lr=encoder_lr, freeze_layers=frozen)
    tokenizer, _ = load_encoder_files(encoder_directory(None))
    started = time.perf_counter()
    train_ids, _ = token_features(frame, ("premise", "hypothesis"), tokenizer, "siamese", MAX_TOKENS)
    val_ids, _ = token_features(val_frame, ("premise", "hypothesis"), tokenizer, "siamese", MAX_TOKENS)
    tokenize_seconds = time.perf_counter() - started
    classes = ("contradiction", "entailment", "neutral")
    names = tuple(train_ids.columns)
    train = Table(torch.arange(len(y)), torch.tensor(train_ids.to_numpy().copy()), torch.tensor(y), classes, names)
    val = Table(torch.arange(len(val_y)) + len(y), torch.tensor(val_ids.to_numpy().copy()), torch.tensor(val_y), classes, names)
    make = student_factory(config, StudentShape(train.n_features, 3, text_layout="pair"))
    # No early stopping: the plain loop trains every epoch, and so does this one.
    method = method_of(method_spec("baseline", {"optimizer": "adamw", "lr": HEAD_LR, "epochs": epochs, "batch_size": BATCH, "early_stopping_patience": None}))
    state = new_state("stepdistill", method, make, seed)
    started = time.perf_counter()
    fit([state], TabularData(train, val))
    seconds = tokenize_seconds + time.perf_counter() - started  # fit's epochs end with the validation loss
    state.model.eval()
    with torch.no_grad():
        predicted = torch.cat([state.model(val.X[start : start + 128]).logits.argmax(1) for start in range(0, len(val), 128)])
    return seconds, float((predicted.numpy() == val_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame, _ = read_dsbs(dsbs_directory(args.data_dir), "esnli", "valid")
    classes = {"contradiction": 0, "entailment": 1, "neutral": 2}
    train, held = frame.iloc[: args.train], frame.iloc[args.train : args.train + args.val]
    y, val_y = train["label"].map(classes).to_numpy(np.int64), held["label"].map(classes).to_numpy(np.int64)
    train_texts = (train["premise"].tolist(), train["hypothesis"].tolist())
    held_texts = (held["premise"].tolist(), held["hypothesis"].tolist(), val_y)
    recipes = []
    for name, recipe in RECIPES.items():
        frozen, encoder_lr, epochs = recipe
        plain_seconds, plain_accuracy = plain(*train_texts, y, held_texts, seed=0, recipe=recipe)
        ours_seconds, ours_accuracy = stepdistill_path(train, y, held, val_y, seed=0, recipe=recipe)
        rows = [
            {"path": path, "seconds": round(seconds, 1), "records_per_s": round(args.train * epochs / seconds, 1), "val_accuracy": round(accuracy, 3)}
            for path, seconds, accuracy in (("plain", plain_seconds, plain_accuracy), ("stepdistill", ours_seconds, ours_accuracy))
        ]
        ratio = plain_seconds / ours_seconds
        for row in rows:
            print(f"{name:<8} {row['path']:<12} {row['seconds']:>8.1f} s {row['records_per_s']:>8.1f} records/s  validation accuracy {row['val_accuracy']:.3f}")
        met = ratio >= TARGET_RATIO and ours_accuracy >= plain_accuracy - ACCURACY_TOLERANCE
        print(f"{name}: ratio {ratio:.2f}x (bf16: {native_bf16()}): target >= {TARGET_RATIO}x at equal accuracy {'met' if met else 'NOT met'}")
        setting = {"frozen_layers": frozen, "encoder_lr": encoder_lr, "epochs": epochs}
        recipes.append({"recipe": name, "setting": setting, "runs": rows, "ratio": round(ratio, 2)})
    report = {
        "command": "python bench/encoder_speed.py" + (f" --train {args.train}" if args.train != 1000 else "") + (f" --threads {args.threads}" if args.threads != 2 else ""),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "bf16": native_bf16(),
        "data": {"train": args.train, "val": args.val, "max_tokens": MAX_TOKENS, "batch": BATCH, "head_lr": HEAD_LR},
        "recipes": recipes,
    }
    args.output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
