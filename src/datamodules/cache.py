"""Decoded-image cache: decoding 60,000 JPEGs takes seconds, so the uint8 tensors are saved once
(outside the data folder, which may be read-only) and keyed by the source files' names, sizes and
modification times plus the decode options — any change to the files makes a new entry."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch


def fingerprint(files: list[str], *extra: object) -> str:
    h = hashlib.sha1()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(repr(extra).encode())
    return h.hexdigest()[:20]


def cached(cache_dir: str | None, key: str, build: Callable[[], dict]) -> dict:
    """Return ``build()``, read from ``cache_dir/key.pt`` when there (written atomically otherwise)."""
    if not cache_dir:
        return build()
    path = Path(cache_dir) / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a torn or foreign file: rebuild it rather than fail the run
            path.unlink(missing_ok=True)
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(value, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs the next run a decode
    return value
