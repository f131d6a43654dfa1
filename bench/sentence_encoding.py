"""Speed benchmark: ``SentenceEncoder.encode`` (cold cache, then warm) against the plain
sentence-transformers ``encode`` call, same texts, same model (the bundled all-MiniLM-L6-v2).

Texts: the first ``--n`` distinct premises of the e-SNLI validation split (distinct, so that the
encoder's de-duplication does not make its cold run look faster than the plain call).

- **plain:** ``SentenceTransformer(model_dir).encode(texts, batch_size=64, convert_to_tensor=True)``.
- **cold:** ``SentenceEncoder(batch_size=64).encode(texts)`` over an empty cache directory: hashing,
  the model and writing the cache shards.
- **warm:** the same call again on the same encoder (its index of the cache is in memory).
- **warm, new encoder:** a new ``SentenceEncoder`` over that cache, as the next run would: hashing
  the model directory, reading the shards' keys and embeddings; the model is never loaded.

Both models are loaded and warmed up on a few other texts before timing; loading is not timed.

    .venv/bin/python bench/sentence_encoding.py [--n 2000] [--threads 1] [--output bench/sentence_encoding.json]

Prints texts per second for each and writes them to the output file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from stepdistill.text import encoders
from stepdistill.text.encoders import SentenceEncoder, bundled_model_directory

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "dsbs" / "datasets" / "esnli" / "esnli_valid.json"
DEFAULT_OUTPUT = HERE / "sentence_encoding.json"
BATCH_SIZE = 64
WARM_UP = ["A short warm-up sentence.", "Another one, a little longer than the first warm-up sentence."]


def distinct_premises(path: Path, n: int) -> list[str]:
    premises: dict[str, None] = {}
    with path.open() as lines:
        for line in lines:
            premises[json.loads(line)["premise"]] = None
            if len(premises) == n:
                break
    return list(premises)


def timed(call):
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="distinct e-SNLI premises to encode")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every path")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="e-SNLI JSON lines with a 'premise' field")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts = distinct_premises(args.data, args.n)
    from sentence_transformers import SentenceTransformer

    plain_model = SentenceTransformer(str(bundled_model_directory()), device="cpu", local_files_only=True)
    plain_model.encode(WARM_UP, batch_size=BATCH_SIZE, convert_to_tensor=True)
    plain, plain_seconds = timed(lambda: plain_model.encode(texts, batch_size=BATCH_SIZE, convert_to_tensor=True, show_progress_bar=False))

    with tempfile.TemporaryDirectory(prefix="sentence-bench-") as cache_dir:
        encoder = SentenceEncoder(batch_size=BATCH_SIZE, cache_dir=Path(cache_dir))
        encoder.model.encode(WARM_UP, batch_size=BATCH_SIZE, convert_to_tensor=True)  # loads the model, untimed
        cold, cold_seconds = timed(lambda: encoder.encode(texts))
        warm, warm_seconds = timed(lambda: encoder.encode(texts))
        encoders._identities.clear()  # a new process hashes the model directory again
        next_run = SentenceEncoder(batch_size=BATCH_SIZE, cache_dir=Path(cache_dir))
        reread, next_run_seconds = timed(lambda: next_run.encode(texts))
        assert next_run._model is None, "the warm cache should not need the model"

    seconds = {"plain": plain_seconds, "cold": cold_seconds, "warm": warm_seconds, "warm_new_encoder": next_run_seconds}
    results = {
        "texts": len(texts),
        "threads": torch.get_num_threads(),
        "batch_size": BATCH_SIZE,
        "texts_per_second": {name: round(len(texts) / value, 1) for name, value in seconds.items()},
        "seconds": {name: round(value, 4) for name, value in seconds.items()},
        "cold_over_plain": round(cold_seconds / plain_seconds, 3),
        "warm_identical_to_cold": torch.equal(warm, cold) and torch.equal(reread, cold),
        "max_abs_difference_from_plain": float((cold - plain.cpu()).abs().max()),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
    }
    print(f"{len(texts)} distinct e-SNLI premises, {results['threads']} thread(s), batch {BATCH_SIZE}")
    for name, value in seconds.items():
        print(f"  {name:<17} {value:8.3f} s  {len(texts) / value:10.1f} texts/s")
    print(f"  cold / plain time: {results['cold_over_plain']}; warm bit-identical to cold: {results['warm_identical_to_cold']}; max |cold - plain|: {results['max_abs_difference_from_plain']:.2e}")
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
