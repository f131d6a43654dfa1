"""Throughput benchmark: fine-tuning a text student's encoder, stepdistill's encoder student against
a plain PyTorch / Hugging Face training loop of the same model, data and recipe.

Setting: e-SNLI premise-hypothesis pairs from the released distilling-step-by-step data (its
validation file: the first ``--train`` records to train on, the next ``--val`` to score),
all-MiniLM-L6-v2 (bundled) read as a siamese pair encoder (mean-pooled u, v;
``[u, v, |u - v|, u * v]`` into an MLP of 256), texts cut at 128 tokens, one epoch in batches of
32, AdamW at 2e-5 for the encoder and 1e-3 for the head, cross-entropy on the human labels.

- ``plain``: the usual loop: a shuffled ``DataLoader`` of record indices, each batch tokenized
  with dynamic padding (``tokenizer(..., padding=True)``), forward, backward, step.
- ``stepdistill``: ``EncoderStudentModel`` (students/encoder.py) trained by ``fit`` (the engine
  every student trains with): tokenized once, batches of similar lengths cut to their longest
  row, bfloat16 autocast where the processor computes it natively (``precision: auto``).

Both are timed over the epoch and the pass over the validation records that ends it (what early
stopping reads; stepdistill's also measures its loss terms on 256 training records), tokenizing
included (once, before the epoch, for stepdistill; in the loop for the plain one). Records per
second, their ratio, and each path's validation accuracy.

    .venv/bin/python bench/encoder_speed.py [--data-dir ../shared/data/dsbs] [--train 1000] [--val 500] [--threads 2]

Writes bench/encoder_speed.json and prints the table; the last line says whether the target
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

MAX_TOKENS, BATCH, HEAD_LR, ENCODER_LR, HIDDEN = 128, 32, 1e-3, 2e-5, 256
TARGET_RATIO, ACCURACY_TOLERANCE = 2.0, 0.02
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "encoder_speed.json"


def plain(premises, hypotheses, y, val, seed: int) -> tuple[float, float]:
    """The usual loop; (seconds for the epoch, validation accuracy)."""
    from transformers import AutoModel, AutoTokenizer

    directory = encoder_directory(None)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(directory)
    width = encoder.config.hidden_size
    head = nn.Sequential(nn.Linear(4 * width, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 3))
    optimizer = torch.optim.AdamW([{"params": head.parameters(), "lr": HEAD_LR}, {"params": encoder.parameters(), "lr": ENCODER_LR}], weight_decay=0.0)

    def pooled(texts):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        states = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (states * mask).sum(1) / mask.sum(1)

    def logits(indices):
        u, v = pooled([premises[i] for i in indices]), pooled([hypotheses[i] for i in indices])
        return head(torch.cat([u, v, (u - v).abs(), u * v], dim=1))

    encoder.train()
    started = time.perf_counter()
    for indices in DataLoader(range(len(y)), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        loss = F.cross_entropy(logits(indices.tolist()), torch.as_tensor(y[indices.numpy()]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # The epoch ends, as the recipe's early stopping needs, with a pass over the validation records.
    encoder.eval()
    val_premises, val_hypotheses, val_y = val
    with torch.no_grad():
        predicted = []
        for start in range(0, len(val_y), 128):
            u, v = pooled(val_premises[start : start + 128]), pooled(val_hypotheses[start : start + 128])
            predicted.append(head(torch.cat([u, v, (u - v).abs(), u * v], dim=1)).argmax(1))
    seconds = time.perf_counter() - started
    return seconds, float((torch.cat(predicted).numpy() == val_y).mean())


def stepdistill_path(frame, y, val_frame, val_y, seed: int) -> tuple[float, float]:
    """stepdistill's encoder student through ``fit``; (seconds for tokenizing and the epoch, validation accuracy)."""
    config = EncoderStudent(kind="encoder", max_tokens=MAX_TOKENS, hidden=(HIDDEN,), encoder_lr=ENCODER_LR)
    tokenizer, _ = load_encoder_files(encoder_directory(None))
    started = time.perf_counter()
    train_ids, _ = token_features(frame, ("premise", "hypothesis"), tokenizer, "siamese", MAX_TOKENS)
    val_ids, _ = token_features(val_frame, ("premise", "hypothesis"), tokenizer, "siamese", MAX_TOKENS)
    tokenize_seconds = time.perf_counter() - started
    classes = ("contradiction", "entailment", "neutral")
    names = tuple(train_ids.columns)
    train = Table(torch.arange(len(y)), torch.tensor(train_ids.to_numpy().copy()), torch.as_tensor(y), classes, names)
    val = Table(torch.arange(len(val_y)) + len(y), torch.tensor(val_ids.to_numpy().copy()), torch.as_tensor(val_y), classes, names)
    make = student_factory(config, StudentShape(train.n_features, 3, text_layout="pair"))
    method = method_of(method_spec("baseline", {"optimizer": "adamw", "lr": HEAD_LR, "epochs": 1, "batch_size": BATCH}))
    state = new_state("stepdistill", method, make, seed)
    started = time.perf_counter()
    fit([state], TabularData(train, val))
    seconds = tokenize_seconds + time.perf_counter() - started  # fit's epoch ends with the validation loss
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
    plain_seconds, plain_accuracy = plain(train["premise"].tolist(), train["hypothesis"].tolist(), y, (held["premise"].tolist(), held["hypothesis"].tolist(), val_y), seed=0)
    ours_seconds, ours_accuracy = stepdistill_path(train, y, held, val_y, seed=0)
    rows = [
        {"path": "plain", "seconds": round(plain_seconds, 1), "records_per_s": round(args.train / plain_seconds, 1), "val_accuracy": round(plain_accuracy, 3)},
        {"path": "stepdistill", "seconds": round(ours_seconds, 1), "records_per_s": round(args.train / ours_seconds, 1), "val_accuracy": round(ours_accuracy, 3)},
    ]
    ratio = plain_seconds / ours_seconds
    for row in rows:
        print(f"{row['path']:<12} {row['seconds']:>8.1f} s {row['records_per_s']:>8.1f} records/s  validation accuracy {row['val_accuracy']:.3f}")
    report = {
        "command": "python bench/encoder_speed.py" + (f" --train {args.train}" if args.train != 1000 else "") + (f" --threads {args.threads}" if args.threads != 2 else ""),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "bf16": native_bf16(),
        "setting": {"train": args.train, "val": args.val, "max_tokens": MAX_TOKENS, "batch": BATCH, "encoder_lr": ENCODER_LR, "head_lr": HEAD_LR, "epochs": 1},
        "runs": rows,
        "ratio": round(ratio, 2),
    }
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    met = ratio >= TARGET_RATIO and ours_accuracy >= plain_accuracy - ACCURACY_TOLERANCE
    print(f"ratio {ratio:.2f}x (bf16: {native_bf16()}): target >= {TARGET_RATIO}x at equal accuracy {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
