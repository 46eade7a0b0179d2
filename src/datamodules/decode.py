"""Image folders -> one uint8 tensor [N,C,H,W], decoded once (through the cache) on all cores.

The resize happens here, once per image at decode time, never per batch: RESIZE_FILTER below,
torchvision's antialiased bilinear resize of the decoded uint8 tensor, to image_size x image_size
(the aspect ratio is not kept: a non-square image is squashed, as Keras' image_dataset_from_directory
does by default). Class names and their order come from the sorted sub-folder names, as in
torchvision's ImageFolder.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from src.datamodules.cache import decode_into, fingerprint, read_decoded
from src.errors import DataError

log = logging.getLogger(__name__)

RESIZE_FILTER = "bilinear, antialiased (torchvision.transforms.v2.functional.resize on the uint8 tensor)"


class Unreadable(Exception):
    pass


def list_folder(folder: Path) -> tuple[list[str], list[int], list[str]]:
    """Files, labels and class names of ``folder/<class>/*`` (torchvision's image extensions)."""
    try:
        classes, to_idx = datasets.folder.find_classes(str(folder))
        samples = datasets.folder.make_dataset(str(folder), to_idx, extensions=datasets.folder.IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"no images in {folder}: expected {folder}/<class>/*.jpg|png ({' '.join(str(e).split())})") from None
    return [p for p, _ in samples], [t for _, t in samples], classes


def decode_file(path: str, grayscale: bool, image_size: int | None) -> torch.Tensor:
    """One image as uint8 [C,H,W], resized when image_size is given. The only place files are
    decoded (the cache tests count its calls)."""
    try:
        img = decode_image(read_file(path), mode=ImageReadMode.GRAY if grayscale else ImageReadMode.RGB)
    except Exception as first:  # BMP, TIFF, PPM: formats torchvision.io does not decode, PIL does
        try:
            from PIL import Image

            with Image.open(path) as im:
                arr = torch.from_numpy(np.array(im.convert("L" if grayscale else "RGB")))
            img = arr.unsqueeze(0) if arr.ndim == 2 else arr.permute(2, 0, 1).contiguous()
        except Exception:
            raise Unreadable(" ".join(str(first).split()) or type(first).__name__) from None
    if image_size and img.shape[-2:] != (image_size, image_size):
        img = TF.resize(img, [image_size, image_size], antialias=True)
    return img


def decode_folder(folder: Path, image_size: int | None, grayscale: bool, cache_dir,
                  skip_bad: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str], dict]:
    """(images, labels, classes, record) of ``folder``; only the first call decodes."""
    files, labels, classes = list_folder(folder)
    key = f"{folder.parent.name}-{folder.name}-" + fingerprint(folder, files, image_size, grayscale, "bilinear-aa")
    hit = read_decoded(cache_dir, key)
    if hit is not None:
        x, meta = hit
        _report_skipped(folder, meta["skipped"], skip_bad)
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
            if img.shape != out.shape[1:]:
                raise DataError(f"images in {folder} differ in size ({files[i]} is {tuple(img.shape[1:])}, "
                                f"others {tuple(out.shape[2:])}): set data.image_size to resize them")
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
    _report_skipped(folder, meta["skipped"], skip_bad)
    return x, torch.tensor(meta["labels"], dtype=torch.int64), list(meta["classes"]), meta


def _probe(files: list[str], grayscale: bool, skip_bad: bool) -> tuple[int, int, int]:
    for f in files:
        try:
            return tuple(decode_file(f, grayscale, None).shape)
        except Unreadable as e:
            if not skip_bad:
                raise DataError(f"unreadable image {f}: {e}; replace or delete the file, "
                                f"or set data.skip_bad_images=true to skip such files") from None
    raise DataError(f"no readable image among the {len(files)} files in {Path(files[0]).parent.parent}")


def _report_skipped(folder: Path, skipped: list[str], skip_bad: bool) -> None:
    """Skipping is said every time, also when the images come from the cache."""
    if not skipped:
        return
    if not skip_bad:  # decoded earlier with skip_bad_images=true: the files are still bad
        raise DataError(f"unreadable image {skipped[0]}" + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1
                        else "") + "; replace or delete the file, or set data.skip_bad_images=true to skip such files")
    log.warning("skipped %d unreadable image(s) in %s (data.skip_bad_images=true), e.g. %s",
                len(skipped), folder, skipped[0])
