"""Faults and bad input of image folders (issue 23): 16-bit files, a damaged or vanishing cache,
killed decodes, unwritable cache folders, dangling links, hidden folders, other formats, grayscale
WebP and torchvision's C++ error text. Every file is fabricated under tmp_path in its real format."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.datamodules import cache, decode
from src.datamodules.decode import decode_file, decode_folder
from src.datamodules.image_folder import count_classes
from src.errors import DataError
from tests.fabricate_sets import write_folder

RNG = np.random.default_rng(23)


def png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit PNG (grey for [H,W], RGB for [H,W,3]) written chunk by chunk: PIL cannot write 16-bit RGB."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def pnm16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit binary PGM ([H,W]) or PPM ([H,W,3]), maxval 65535."""
    h, w = arr.shape[:2]
    path.write_bytes(f"{'P6' if arr.ndim == 3 else 'P5'}\n{w} {h}\n65535\n".encode() + arr.astype(">u2").tobytes())


def tiff16_rgb(path: Path, arr: np.ndarray) -> None:
    """A little-endian, uncompressed, one-strip 16-bit RGB TIFF (PIL writes 16-bit grey only)."""
    h, w, _ = arr.shape
    pixels = arr.astype("<u2").tobytes()
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, 8 + 2 + 10 * 12 + 4), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, 8 + 2 + 10 * 12 + 4 + 6), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)),
            (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", t, kind, n) + (struct.pack("<HH", v, 0) if kind == 3 and n == 1 else struct.pack("<I", v))
        for t, kind, n, v in tags) + struct.pack("<I", 0)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<HHH", 16, 16, 16) + pixels)


def pil(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def chw(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy()


def test_16_bit_files_keep_their_high_byte_as_pil_does(tmp_path):
    """Random values over the whole 16-bit range: keeping the low byte (the bug) is noise."""
    grey, rgb = RNG.integers(0, 65536, (6, 7), dtype=np.uint16), RNG.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    png16(tmp_path / "g.png", grey)
    png16(tmp_path / "c.png", rgb)
    pnm16(tmp_path / "g.pgm", grey)
    pnm16(tmp_path / "c.ppm", rgb)
    Image.fromarray(grey).save(tmp_path / "g.tif")  # PIL's own 16-bit grey TIFF ("I;16")
    tiff16_rgb(tmp_path / "c.tif", rgb)
    # PIL reduces 16-bit RGB PNG/TIFF itself (high byte) and 16-bit PPM (rounded): taken pixel for pixel
    for name in ("c.png", "c.tif", "c.ppm"):
        assert pil(tmp_path / name).dtype == np.uint8
        assert np.array_equal(chw(decode_file(str(tmp_path / name), False, None)), pil(tmp_path / name)), name
    assert np.array_equal(pil(tmp_path / "c.png"), rgb >> 8)
    # PIL leaves 16-bit grey at 16 bits ("I;16", "I"; its own conversion to "L" clips at 255): its high byte
    for name in ("g.png", "g.pgm", "g.tif"):
        high = (pil(tmp_path / name).astype(np.int64) >> 8).astype(np.uint8)
        assert np.array_equal(high, grey >> 8), name
        assert np.array_equal(chw(decode_file(str(tmp_path / name), True, None)), high), name
        assert np.array_equal(chw(decode_file(str(tmp_path / name), False, None)), np.stack([high] * 3, -1)), name
    # RGB to grey: torchvision converts at 16 bits, PIL after reducing to 8: within one level
    as_grey = chw(decode_file(str(tmp_path / "c.png"), True, None)).astype(int)
    with Image.open(tmp_path / "c.png") as im:
        assert np.abs(as_grey - np.asarray(im.convert("L")).astype(int)).max() <= 1
    # and through a folder, the cache included
    for k, name in enumerate(("g.png", "g.pgm", "g.tif")):
        (tmp_path / "set" / f"c{k}").mkdir(parents=True)
        shutil.copy(tmp_path / name, tmp_path / "set" / f"c{k}" / name)
    x, y, _, _ = decode_folder(tmp_path / "set", None, True, tmp_path / "cache")
    assert all(np.array_equal(x[i, 0].numpy(), grey >> 8) for i in range(3))


def _three_classes(root: Path) -> Path:
    write_folder(root, {"a": 4, "b": 4, "c": 4}, size=(12, 10))
    return root


def test_a_damaged_cache_file_is_decoded_again_with_one_warning(tmp_path, monkeypatch, caplog):
    folder = _three_classes(tmp_path / "set")
    x0, *_ = decode_folder(folder, None, False, tmp_path / "cache")
    x0 = x0.clone()
    (data,) = tmp_path.glob("cache/*.u8")
    meta = json.loads(data.with_suffix(".json").read_text())
    assert meta["checksum"].startswith("crc32:")
    calls = []
    real = decode.decode_file
    monkeypatch.setattr(decode, "decode_file", lambda *a: calls.append(a) or real(*a))
    decode_folder(folder, None, False, tmp_path / "cache")
    assert not calls  # intact: read from the cache
    data.write_bytes(RNG.integers(0, 256, data.stat().st_size, dtype=np.uint8).tobytes())  # same size
    with caplog.at_level(logging.WARNING):
        x1, *_ = decode_folder(folder, None, False, tmp_path / "cache")
    assert torch.equal(x1, x0) and len(calls) >= 12  # every file (and the size probe)
    lines = [r.getMessage() for r in caplog.records if "does not match its record" in r.getMessage()]
    assert len(lines) == 1 and "damaged or changed" in lines[0] and "\n" not in lines[0]
    calls.clear()
    assert torch.equal(decode_folder(folder, None, False, tmp_path / "cache")[0], x0) and not calls  # repaired
    # a record without a checksum (an older version's) is not trusted either
    meta = json.loads(data.with_suffix(".json").read_text())
    del meta["checksum"]
    data.with_suffix(".json").write_text(json.dumps(meta))
    decode_folder(folder, None, False, tmp_path / "cache")
    assert len(calls) >= 12


def test_large_cache_files_are_checked_by_a_strided_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CHECK_FULL_LIMIT", 1000)
    monkeypatch.setattr(cache, "SAMPLE_CHUNK", 10)
    f = tmp_path / "x.u8"
    f.write_bytes(bytes(5000))
    sampled = cache.checksum(f, 5000)
    assert sampled.startswith("crc32-sample")
    f.write_bytes(bytes(4999) + b"\1")  # the last chunk is always in the sample
    assert cache.checksum(f, 5000) != sampled


def test_dangling_links_are_named_or_skipped_and_counted(tmp_path, caplog):
    folder = _three_classes(tmp_path / "set")
    os.symlink(tmp_path / "gone.png", folder / "b" / "009.png")
    with pytest.raises(DataError) as e:
        decode_folder(folder, None, False, tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and "broken link" in msg and "b/009.png" in msg and "data.skip_bad_images=true" in msg
    with caplog.at_level(logging.WARNING):
        x, *_ = decode_folder(folder, None, False, tmp_path / "cache", skip_bad=True)
    assert len(x) == 12 and "skipped 1 unreadable image(s)" in caplog.text and "b/009.png" in caplog.text


def test_the_cache_folder_deleted_mid_decode_is_made_again(tmp_path, monkeypatch, caplog):
    folder = _three_classes(tmp_path / "set")
    want, *_ = decode_folder(folder, None, False, None)
    real = decode.decode_file

    def deleting(*a):
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        return real(*a)

    monkeypatch.setattr(decode, "decode_file", deleting)
    with caplog.at_level(logging.WARNING):
        x, *_ = decode_folder(folder, None, False, tmp_path / "cache")
    assert torch.equal(x, want) and "vanished" in caplog.text and "made it again" in caplog.text
    monkeypatch.setattr(decode, "decode_file", real)
    (data,) = tmp_path.glob("cache/*.u8")
    assert json.loads(data.with_suffix(".json").read_text())["checksum"] == cache.checksum(data, data.stat().st_size)
    # cannot be made again (a file now stands where the folder was): the deleted file's data are used
    lock = threading.Lock()  # files are decoded on several threads

    def replacing(*a):
        with lock:
            if (tmp_path / "cache2").is_dir():
                shutil.rmtree(tmp_path / "cache2")
                (tmp_path / "cache2").write_text("")
        return real(*a)

    monkeypatch.setattr(decode, "decode_file", replacing)
    x, *_ = decode_folder(folder, None, False, tmp_path / "cache2")
    assert torch.equal(x, want) and "cannot be made again" in caplog.text


def test_temp_files_of_killed_decodes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "cache").mkdir()
    stale = tmp_path / "cache" / f"old-key.tmp{int(dead.stdout)}"
    live = tmp_path / "cache" / f"other-key.tmp{os.getppid()}"  # a decode still running elsewhere
    stale.write_bytes(bytes(100))
    live.write_bytes(bytes(100))
    decode_folder(_three_classes(tmp_path / "set"), None, False, tmp_path / "cache")
    assert not stale.exists() and live.exists()
    assert not list((tmp_path / "cache").glob(f"*.tmp{os.getpid()}"))


def test_read_only_and_uncreatable_cache_folders_fall_back_to_memory_alike(tmp_path, monkeypatch, caplog):
    folder = _three_classes(tmp_path / "set")
    want, *_ = decode_folder(folder, None, False, None)
    (tmp_path / "file").write_text("")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: the file system's refusal, faked
        real = np.memmap

        def refuse(path, *a, mode="r+", **k):
            if mode == "w+" and Path(path).parent == read_only:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *a, mode=mode, **k)

        monkeypatch.setattr(cache.np, "memmap", refuse)
    for where in (read_only, tmp_path / "file" / "cache"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            for split in ("train", "test"):  # two splits, one warning
                shutil.copytree(folder, tmp_path / f"data-{where.name}" / split, dirs_exist_ok=True)
                x, *_ = decode_folder(tmp_path / f"data-{where.name}" / split, None, False, where)
                assert torch.equal(x, want)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "decoding into memory" in lines[0], lines
        assert "paths.cache_dir" in lines[0] and "IMGCLS_CACHE_DIR" in lines[0] and "hydra.run.dir" not in lines[0]
    read_only.chmod(0o755)


def test_hidden_folders_and_files_and_other_formats(tmp_path, caplog):
    folder = _three_classes(tmp_path / "set")
    write_folder(folder / ".thumbnails", {"x": 2}, size=(12, 10))  # hidden class folder, images inside
    write_folder(folder / "a", {".cache": 2}, size=(12, 10))  # hidden sub-folder of a class
    shutil.copy(folder / "a" / "000.png", folder / "a" / "._000.png")  # macOS metadata twin
    Image.new("RGB", (12, 10)).save(folder / "b" / "anim.gif")
    (folder / "c" / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic")
    assert count_classes(str(folder), str(tmp_path)) == 3
    with caplog.at_level(logging.WARNING):
        x, y, classes, _ = decode_folder(folder, None, False, tmp_path / "cache")
    assert classes == ["a", "b", "c"] and torch.bincount(y).tolist() == [4, 4, 4]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "skipped 2 file(s) of formats not read (.gif, .heic)" in line and "unreadable" not in line
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # said again when read from the cache
        decode_folder(folder, None, False, tmp_path / "cache")
    assert "2 file(s) of formats not read" in caplog.text


def test_grayscale_webp_and_size_messages(tmp_path):
    folder = tmp_path / "set"
    write_folder(folder, {"a": 2, "b": 2}, size=(32, 32), mode="L")
    write_folder(folder, {"a": 2, "b": 2}, size=(32, 32), mode="L", ext="webp", seed=1)
    x, y, _, _ = decode_folder(folder, None, True, tmp_path / "cache")
    assert tuple(x.shape) == (8, 1, 32, 32)
    webp = folder / "a" / "000.webp"
    with Image.open(webp) as im:
        assert np.array_equal(x[1, 0].numpy(), np.asarray(im.convert("L")))
    write_folder(tmp_path / "odd", {"a": 2, "b": 1}, size=(32, 32))
    write_folder(tmp_path / "odd", {"b": 2}, size=(20, 32), ext="webp")
    with pytest.raises(DataError, match=r"is \(32, 20\), others \(32, 32\)\): set data.image_size"):
        decode_folder(tmp_path / "odd", None, True, tmp_path / "cache")


def test_error_lines_do_not_quote_torchvision_source_paths(tmp_path):
    folder = _three_classes(tmp_path / "set")
    (folder / "a" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "b" / "001.pgm").write_bytes(b"P5\n4 4\n255\n\1")  # truncated: PIL's message, not torchvision's
    with pytest.raises(DataError) as e:
        decode_folder(folder, None, False, tmp_path / "cache")
    msg = str(e.value)
    assert "a/001.png: Out of bound read in decode_png" in msg and ".cpp" not in msg and "/__w/" not in msg
    with pytest.raises(decode.Unreadable) as e:
        decode_file(str(folder / "b" / "001.pgm"), False, None)
    assert "Unsupported image file" not in str(e.value) and ".cpp" not in str(e.value)
