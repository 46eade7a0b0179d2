"""Decoded-image cache: decoding thousands of PNG/JPEG files takes seconds to hours, so each folder
is decoded once into a raw uint8 file ``<cache_dir>/<key>.u8`` ([N,C,H,W], memory-mapped when
read: a set larger than memory is paged in as batches need it) beside ``<key>.json`` (labels,
class names, skipped files, statistics). The key hashes the files' names relative to their folder,
sizes and modification times plus the decode options, so any change to a file makes a new entry
and a copy (or a symlinked tree) of the same files shares the old one. The cache sits outside the
data folder, which may be read-only or shared."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from src.errors import DataError

# never fill a disk to the last byte: logs and checkpoints need room too
DISK_MARGIN = 256 * 2**20


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def fingerprint(folder: Path, files: list[str], *extra: object) -> str:
    h = hashlib.sha1()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(repr(extra).encode())
    return h.hexdigest()[:20]


def available_memory() -> int:
    """Bytes the kernel says a new allocation can take (MemAvailable), or a large number if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def _paths(cache_dir: str | Path, key: str) -> tuple[Path, Path]:
    return Path(cache_dir) / f"{key}.u8", Path(cache_dir) / f"{key}.json"


def _map(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    # mode "c": private copy-on-write pages, so the tensor is writable for torch but never writes back
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=shape))


def read_decoded(cache_dir: str | Path | None, key: str) -> tuple[torch.Tensor, dict] | None:
    """The cached images (memory-mapped) and their record, or None when absent or torn."""
    if not cache_dir:
        return None
    data, meta_path = _paths(cache_dir, key)
    try:
        meta = json.loads(meta_path.read_text())
        shape = (int(meta["n"]), *map(int, meta["shape"]))
        if meta["n"] < 1 or data.stat().st_size != int(np.prod(shape)):
            return None
        return _map(data, shape), meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_meta(cache_dir: str | Path | None, key: str, meta: dict) -> None:
    """Replace the record atomically (the record is what marks an entry complete)."""
    if not cache_dir:
        return
    _, meta_path = _paths(cache_dir, key)
    tmp = meta_path.with_suffix(f".tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)
    except OSError:
        pass  # an unwritable cache only costs the next run a decode


def decode_into(cache_dir: str | Path | None, key: str, shape: tuple[int, ...], what: str,
                fill: Callable[[torch.Tensor], dict]) -> tuple[torch.Tensor, dict]:
    """Allocate [N,*shape] uint8 -- a file in the cache folder, else memory -- and let ``fill``
    write the images into it; ``fill`` returns the record, whose ``n`` may be below N (skipped
    files, compacted to the front). Refuses in one line when the images cannot fit there."""
    nbytes = int(np.prod(shape))
    folder = Path(cache_dir) if cache_dir else None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
        except OSError:
            folder = None  # unwritable: decode into memory, as without a cache
    if folder is not None:
        if nbytes + DISK_MARGIN > free:
            raise DataError(f"{what} decodes to {gib(nbytes)} but the cache folder {folder} has {gib(free)} free: "
                            f"free space there, point paths.cache_dir (IMGCLS_CACHE_DIR) at a larger disk, "
                            f"or lower data.image_size")
        data, _ = _paths(folder, key)
        tmp = data.with_suffix(f".tmp{os.getpid()}")
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        try:
            meta = fill(torch.from_numpy(mm))
            mm.flush()
            del mm
            n = int(meta["n"])
            os.truncate(tmp, n * int(np.prod(shape[1:])))  # skipped files leave no rows behind
            os.replace(tmp, data)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        write_meta(folder, key, meta)
        return _map(data, (n, *shape[1:])), meta
    have = available_memory()
    if nbytes > have:
        raise DataError(f"{what} decodes to {gib(nbytes)} but only {gib(have)} of memory is available: set "
                        f"paths.cache_dir (IMGCLS_CACHE_DIR) to a folder with room, so it is decoded to a "
                        f"memory-mapped file there, or lower data.image_size")
    x = torch.empty(shape, dtype=torch.uint8)
    meta = fill(x)
    return x[: int(meta["n"])], meta
