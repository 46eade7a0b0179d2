"""Decoded-image cache: decoding thousands of PNG/JPEG files takes seconds to hours, so each folder
is decoded once into a raw uint8 file ``<cache_dir>/<key>.u8`` ([N,C,H,W], memory-mapped when
read: a set larger than memory is paged in as batches need it) beside ``<key>.json`` (labels,
class names, skipped files, statistics). The key hashes the files' names relative to their folder,
sizes and modification times plus the decode options, so any change to a file makes a new entry
and a copy (or a symlinked tree) of the same files shares the old one. The cache sits outside the
data folder, which may be read-only or shared.

The key misses one case: an image rewritten in place keeping its name, size and mtime. Damage to
the ``.u8`` file itself (a bad disk, a torn copy) is caught: the record keeps a CRC-32 of the ``.u8``
file (the decoded images, not the source files), computed when it is written and checked each time
it is opened (zlib's, stdlib: ~0.1 s for CIFAR-10's 175 MiB on a 2-core CPU, under 2 %
of a cached start-up); a mismatch decodes the split again. Files over CHECK_FULL_LIMIT are checked by
a strided sample of 256 MiB (and their size): a whole read would cost seconds at every start."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from src.errors import DataError

log = logging.getLogger(__name__)

# never fill a disk to the last byte: logs and checkpoints need room too
DISK_MARGIN = 256 * 2**20
# a .u8 file up to this size is checksummed whole (~0.35 s), a larger one by SAMPLE_CHUNKS chunks spread
# over it: either stays within ~5 % of a start-up
CHECK_FULL_LIMIT = 512 * 2**20
SAMPLE_CHUNK, SAMPLE_CHUNKS = 2**20, 256
_TEMP = re.compile(r"\.tmp(\d+)$")  # <key>.tmp<pid>: a split (or record) being written by process <pid>
_warned_unwritable: set[str] = set()  # one warning per cache folder and process, not one per split


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
        if meta.get("checksum") != checksum(data, int(np.prod(shape))):
            why = "no checksum: written by an older version" if "checksum" not in meta else \
                "damaged or changed since it was written"
            log.warning("cache file %s does not match its record (%s): decoding its images again", data, why)
            return None
        return _map(data, shape), meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _crc(f, size: int) -> str:
    if size <= CHECK_FULL_LIMIT:
        crc, buf = 0, bytearray(16 * 2**20)
        while n := f.readinto(buf):
            crc = zlib.crc32(memoryview(buf)[:n], crc)
        return f"crc32:{crc:08x}"
    crc = 0
    for i in range(SAMPLE_CHUNKS):  # evenly spread, the first and the last chunk included
        f.seek(i * (size - SAMPLE_CHUNK) // (SAMPLE_CHUNKS - 1))
        crc = zlib.crc32(f.read(SAMPLE_CHUNK), crc)
    return f"crc32-sample{SAMPLE_CHUNKS}x{SAMPLE_CHUNK}:{crc:08x}"


def checksum(path: Path, size: int) -> str:
    """CRC-32 of a .u8 file of ``size`` bytes (whole, or a strided sample above CHECK_FULL_LIMIT)."""
    with open(path, "rb") as f:
        return _crc(f, size)


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


def remove_dead_temps(folder: Path) -> None:
    """Delete the half-written files of killed decodes (``.tmp<pid>`` whose process is gone): they
    would hold their disk space forever. A live process's files, this one's included, are left."""
    for f in folder.iterdir():
        m = _TEMP.search(f.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            _discard(f)
        except (OSError, OverflowError):  # PermissionError: alive, another user's
            pass


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):  # gone already, or its folder with it
        path.unlink()


def _unwritable(folder: Path, e: OSError) -> None:
    if str(folder) not in _warned_unwritable:
        _warned_unwritable.add(str(folder))
        log.warning("cache folder %s is not usable (%s): decoding into memory, not cached, so the next run "
                    "decodes again; set paths.cache_dir (IMGCLS_CACHE_DIR) to a writable folder",
                    folder, e.strerror or type(e).__name__)


def _open_temp(cache_dir, key: str, shape: tuple[int, ...]):
    """(folder, tmp path, memmap, fd) of a fresh temp file, or None (one warning) where the cache
    folder cannot be created or written: both fall back to memory alike."""
    folder = Path(cache_dir)
    tmp = _paths(folder, key)[0].with_suffix(f".tmp{os.getpid()}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(folder)
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)  # sparse: takes no space yet
        # a descriptor keeps the file's data reachable when the cache folder is deleted mid-decode
        return folder, tmp, mm, os.open(tmp, os.O_RDWR)
    except OSError as e:
        _discard(tmp)
        _unwritable(folder, e)
        return None


def _save(folder: Path, key: str, tmp: Path, fd: int, size: int, meta: dict, what: str) -> Path | None:
    """Checksum the filled temp file and move it into place; None when it cannot be (then the
    caller maps it through ``fd``). The folder deleted meanwhile is made again and the data copied
    there from the still open file."""
    with os.fdopen(os.dup(fd), "rb") as f:
        meta["checksum"] = _crc(f, size)
    data = _paths(folder, key)[0]
    try:
        os.replace(tmp, data)
    except (FileNotFoundError, NotADirectoryError):  # the folder was deleted (or replaced) meanwhile
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.dup(fd), "rb") as src, open(tmp, "wb") as dst:
                src.seek(0)
                shutil.copyfileobj(src, dst, 16 * 2**20)
            os.replace(tmp, data)
        except OSError as e:
            _discard(tmp)
            log.warning("cache folder %s vanished while %s was decoded and cannot be made again (%s): the "
                        "images are used from the deleted file, not cached; check paths.cache_dir "
                        "(IMGCLS_CACHE_DIR)", folder, what, e.strerror or type(e).__name__)
            return None
        log.warning("cache folder %s vanished while %s was decoded: made it again", folder, what)
    write_meta(folder, key, meta)
    return data


def decode_into(cache_dir: str | Path | None, key: str, shape: tuple[int, ...], what: str,
                fill: Callable[[torch.Tensor], dict]) -> tuple[torch.Tensor, dict]:
    """Allocate [N,*shape] uint8 -- a file in the cache folder, else memory -- and let ``fill``
    write the images into it; ``fill`` returns the record, whose ``n`` may be below N (skipped
    files, compacted to the front). Refuses in one line when the images cannot fit there."""
    nbytes, row = int(np.prod(shape)), int(np.prod(shape[1:]))
    opened = _open_temp(cache_dir, key, shape) if cache_dir else None
    if opened is not None:
        folder, tmp, mm, fd = opened
        try:
            free = shutil.disk_usage(folder).free
            if nbytes + DISK_MARGIN > free:
                raise DataError(f"{what} decodes to {gib(nbytes)} but the cache folder {folder} has {gib(free)} "
                                f"free: free space there, point paths.cache_dir (IMGCLS_CACHE_DIR) at a larger "
                                f"disk, or lower data.image_size")
            meta = fill(torch.from_numpy(mm))
            mm.flush()
            del mm
            n = int(meta["n"])
            os.ftruncate(fd, n * row)  # skipped files leave no rows behind
            data = _save(folder, key, tmp, fd, n * row, meta, what)
            if data is None:  # the deleted file, through its descriptor: private pages, as _map
                with os.fdopen(os.dup(fd), "rb") as f:
                    return torch.from_numpy(np.memmap(f, dtype=np.uint8, mode="c", shape=(n, *shape[1:]))), meta
        except BaseException:
            _discard(tmp)
            raise
        finally:
            os.close(fd)
        return _map(data, (n, *shape[1:])), meta
    have = available_memory()
    if nbytes > have:
        raise DataError(f"{what} decodes to {gib(nbytes)} but only {gib(have)} of memory is available: set "
                        f"paths.cache_dir (IMGCLS_CACHE_DIR) to a folder with room, so it is decoded to a "
                        f"memory-mapped file there, or lower data.image_size")
    x = torch.empty(shape, dtype=torch.uint8)
    meta = fill(x)
    return x[: int(meta["n"])], meta
