"""Image folders -> one uint8 tensor [N,C,H,W], decoded once (through the cache) on all cores.

The resize happens here, once per image at decode time, never per batch: RESIZE_FILTER below,
torchvision's antialiased bilinear resize of the decoded uint8 tensor, to image_size x image_size
(the aspect ratio is not kept: a non-square image is squashed, as Keras' image_dataset_from_directory
does by default). Class names and their order come from the sorted sub-folder names, as in
torchvision's ImageFolder (listing.py says which files count).

Every image becomes 8 bits per channel: a 16-bit PNG, PGM/PPM or TIFF keeps the high byte of each
value (x >> 8), as PIL does for 16-bit RGB PNG and TIFF (its 16-bit PPM reader rounds, x * 255 / maxval,
and is used as is). PIL's own conversion of 16-bit grey ("I;16" -> "L") clips at 255, which would
make nearly every 16-bit grey image white, so it is not used.
"""
from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from src.datamodules.cache import decode_into, fingerprint, read_decoded
from src.datamodules.listing import Listing, list_folder
from src.errors import DataError

log = logging.getLogger(__name__)

RESIZE_FILTER = "bilinear, antialiased (torchvision.transforms.v2.functional.resize on the uint8 tensor)"


class Unreadable(Exception):
    pass


# torchvision's C++ errors start "decode_png, /__w/vision/.../decode_png.cpp:79, ": only the rest is for users
_CPP_PLACE = re.compile(r"^\S+, \S+\.(?:cpp|cc|cu|h|hpp):\d+, ")


def readable(exc: BaseException) -> str:
    """An exception's message on one line, without the C++ source place torchvision puts first."""
    return _CPP_PLACE.sub("", " ".join(str(exc).split())) or type(exc).__name__


def _to_8bit(img: torch.Tensor) -> torch.Tensor:
    """uint16 (or int32: PIL's 16-bit PGM) -> uint8, the high byte, as the module docstring says."""
    return (img.to(torch.int32).clamp_(0, 65535) >> 8).to(torch.uint8)


def _decode_pil(path: str, grayscale: bool) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grey: scaled here, not clipped by PIL
            arr = _to_8bit(torch.from_numpy(np.asarray(im).astype(np.int32)))
            arr = arr if grayscale else arr.unsqueeze(-1).expand(*arr.shape, 3)
        else:
            arr = torch.from_numpy(np.array(im.convert("L" if grayscale else "RGB")))
    return arr.unsqueeze(0) if arr.ndim == 2 else arr.permute(2, 0, 1).contiguous()


def decode_file(path: str, grayscale: bool, image_size: int | None) -> torch.Tensor:
    """One image as uint8 [C,H,W], resized when image_size is given. The only place files are
    decoded (the cache tests count its calls)."""
    try:
        if grayscale and path.lower().endswith(".webp"):  # torchvision's WebP decoder ignores GRAY (and
            img = _decode_pil(path, grayscale)             # warns on stderr per file): PIL converts
        else:
            img = decode_image(read_file(path), mode=ImageReadMode.GRAY if grayscale else ImageReadMode.RGB)
        if img.shape[0] != (1 if grayscale else 3):  # any other decoder that ignores the mode
            img = _decode_pil(path, grayscale)
    except Exception as first:  # BMP, TIFF, PPM: formats torchvision.io does not decode, PIL does
        try:
            img = _decode_pil(path, grayscale)
        except Exception as second:  # name the error of the decoder meant for the format
            unsupported = "Unsupported image file" in str(first)
            raise Unreadable(readable(second if unsupported else first)) from None
    if img.dtype != torch.uint8:  # 16-bit PNG from torchvision
        img = _to_8bit(img)
    if image_size and img.shape[-2:] != (image_size, image_size):
        img = TF.resize(img, [image_size, image_size], antialias=True)
    return img


def decode_folder(folder: Path, image_size: int | None, grayscale: bool, cache_dir,
                  skip_bad: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str], dict]:
    """(images, labels, classes, record) of ``folder``; only the first call decodes."""
    found = list_folder(folder)
    if found.dangling and not skip_bad:
        link, more = found.dangling[0], len(found.dangling) - 1
        target = os.readlink(link) if os.path.islink(link) else "?"
        raise DataError(f"broken link {link} (its target {target} is missing)" + (f" (and {more} more)" if more else "")
                        + "; restore the target or delete the link, or set data.skip_bad_images=true to skip them")
    files, labels, classes = found.files, found.labels, found.classes
    try:
        stamp = fingerprint(folder, files, image_size, grayscale, "bilinear-aa")
        key = f"{folder.parent.name}-{folder.name}-{stamp}"
    except OSError as e:  # a file gone or unreadable since it was listed
        raise DataError(f"cannot read {e.filename}: {e.strerror}; check the files under {folder}") from None
    hit = read_decoded(cache_dir, key)
    if hit is not None:
        x, meta = hit
        _report_skipped(folder, meta["skipped"], skip_bad, found)
        return x, torch.tensor(meta["labels"], dtype=torch.int64), list(meta["classes"]), meta

    if image_size:
        c, h, w = (1 if grayscale else 3), image_size, image_size
    else:  # native size: the first readable image sets it, every other must match
        c, h, w = _probe(files, grayscale, skip_bad)

    def fill(out: torch.Tensor) -> dict:
        def one(i: int) -> str | None:
            try:
                img = decode_file(files[i], grayscale, image_size)
            except Unreadable as e:
                return str(e)
            if img.shape != out.shape[1:]:  # decode_file converts the channels, so (H, W) differ
                raise DataError(f"images in {folder} differ in size ({files[i]} is {_size(img.shape, out.shape[1:])}, "
                                f"others {_size(out.shape[1:], img.shape)}): set data.image_size to resize them")
            out[i] = img
            return None

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            errors = list(pool.map(one, range(len(files))))
        bad = [i for i, e in enumerate(errors) if e is not None]
        if bad and not skip_bad:
            raise DataError(f"unreadable image {files[bad[0]]}: {errors[bad[0]]}"
                            + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                            + "; replace or delete the file, or set data.skip_bad_images=true to skip such files")
        good = [i for i, e in enumerate(errors) if e is None]
        if not good:
            raise DataError(f"no readable image in {folder}: every one of its {len(files)} files failed to decode")
        for row, i in enumerate(good):  # compact: rows only move forward, so in place is safe
            if row != i:
                out[row] = out[i]
        return {"key": key, "n": len(good), "shape": [c, h, w], "labels": [labels[i] for i in good], "classes": classes,
                "skipped": [files[i] for i in bad], "resize": RESIZE_FILTER if image_size else None}

    x, meta = decode_into(cache_dir, key, (len(files), c, h, w), f"{folder} ({len(files)} images)", fill)
    _report_skipped(folder, meta["skipped"], skip_bad, found)
    return x, torch.tensor(meta["labels"], dtype=torch.int64), list(meta["classes"]), meta


def _size(shape, other) -> str:
    """(H, W), or (C, H, W) where the channels are what differs: a message never shows equal sizes."""
    return str(tuple(shape[1:]) if shape[0] == other[0] else tuple(shape))


def _probe(files: list[str], grayscale: bool, skip_bad: bool) -> tuple[int, int, int]:
    for f in files:
        try:
            return tuple(decode_file(f, grayscale, None).shape)
        except Unreadable as e:
            if not skip_bad:
                raise DataError(f"unreadable image {f}: {e}; replace or delete the file, "
                                f"or set data.skip_bad_images=true to skip such files") from None
    raise DataError(f"no readable image among the {len(files)} files in {Path(files[0]).parent.parent}")


def _report_skipped(folder: Path, skipped: list[str], skip_bad: bool, found: Listing) -> None:
    """Skipping is said every time, also when the images come from the cache, in one line: the
    unreadable images and broken links (data.skip_bad_images=true) and the files of other formats."""
    bad = skipped + found.dangling
    if skipped and not skip_bad:  # decoded earlier with skip_bad_images=true: the files are still bad
        raise DataError(f"unreadable image {skipped[0]}" + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1
                        else "") + "; replace or delete the file, or set data.skip_bad_images=true to skip such files")
    parts = []
    if bad:
        parts.append(f"{len(bad)} unreadable image(s) (data.skip_bad_images=true), e.g. {bad[0]}")
    if found.other_formats:
        exts = sorted({Path(f).suffix.lower() or Path(f).name for f in found.other_formats})
        parts.append(f"{len(found.other_formats)} file(s) of formats not read ({', '.join(exts[:5])}"
                     f"{', ...' if len(exts) > 5 else ''}), e.g. {found.other_formats[0]}: convert them to .png "
                     f"to use them")
    if parts:
        log.warning("skipped %s in %s", " and ".join(parts), folder)
