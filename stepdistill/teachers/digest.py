"""A content hash of values: what teachers are fingerprinted and their cached outputs keyed by."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch


def digest(*parts: object) -> str:
    """The sha256 (hex) of ``parts``: bytes, text, numbers, None, arrays and tensors (dtype,
    shape and values), frames (column names, dtypes, index and values) and lists, tuples and
    dicts of these. Each part is tagged with its type and framed by its length, so that no two
    different sequences of parts give the same bytes ("ab", "c" against "a", "bc"; 1 against "1").
    Anything else is a TypeError: its text could hold a memory address, which differs per run."""
    hasher = hashlib.sha256()
    for part in parts:
        tag, data = _tagged_bytes(part)
        hasher.update(tag + len(data).to_bytes(8, "little") + data)
    return hasher.hexdigest()


def _tagged_bytes(part: object) -> tuple[bytes, bytes]:
    if isinstance(part, bytes):
        return b"b", part
    if isinstance(part, str):
        return b"s", part.encode()
    if part is None or isinstance(part, (bool, int, float)):
        return b"n", repr(part).encode()
    if isinstance(part, torch.Tensor):
        return _tagged_bytes(part.detach().cpu().numpy())
    if isinstance(part, np.ndarray):
        if part.dtype == object:  # holds references, not values
            return b"o", digest(list(part.shape), part.ravel().tolist()).encode()
        return b"a", digest(part.dtype.str, list(part.shape)).encode() + np.ascontiguousarray(part).tobytes()
    if isinstance(part, pd.DataFrame):
        rows = pd.util.hash_pandas_object(part, index=True).to_numpy()
        return b"f", digest([str(c) for c in part.columns], [str(t) for t in part.dtypes], rows).encode()
    if isinstance(part, (list, tuple)):
        return b"l", digest(*part).encode()
    if isinstance(part, dict):
        return b"d", digest(*(item for pair in part.items() for item in pair)).encode()
    raise TypeError(f"cannot digest a {type(part).__name__}")
