"""Which files of an image folder are images of which class: ``folder/<class>/**`` in torchvision
ImageFolder's order (sorted class folders, then sorted walk), with three differences, each because
the folder a user points at is rarely clean:

- hidden folders and files (``.thumbnails/``, macOS' ``._x.jpg``, ``.DS_Store``) are neither classes
  nor images, here and in the class counter of the config (image_folder.count_classes) alike;
- files of other formats (``.gif``, ``.heic``, ``.txt``) are returned, so they are counted in the
  skipped-files line instead of vanishing unsaid;
- a dangling symlink is returned apart (it cannot even be stat'ed for the cache key).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from src.errors import DataError

# what the folder reader decodes (torchvision.io: JPEG, PNG, WebP; PIL: the rest); README lists them
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")


def hidden(name: str) -> bool:
    return name.startswith(".")


def class_folders(folder: Path) -> list[str]:
    """The sorted names of ``folder``'s visible sub-folders (symlinked ones included)."""
    return sorted(e.name for e in os.scandir(folder) if not hidden(e.name) and e.is_dir())


@dataclass
class Listing:
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    other_formats: list[str] = field(default_factory=list)  # not decoded, counted when skipped
    dangling: list[str] = field(default_factory=list)  # symlinks whose target is gone


def list_folder(folder: Path) -> Listing:
    """The images (and the other files) under ``folder/<class>/``; a missing folder, one without
    class folders, or a class folder without images is refused in one line."""
    expected = f"expected {folder}/<class>/*.jpg|png"
    try:
        out = Listing(classes=class_folders(folder))
    except OSError as e:
        raise DataError(f"no images in {folder}: {expected} ({e.strerror or type(e).__name__})") from None
    if not out.classes:
        raise DataError(f"no class folders in {folder}: {expected} (hidden folders do not count)")
    for label, name in enumerate(out.classes):
        walked = []
        for root, dirs, names in os.walk(folder / name, followlinks=True):
            dirs[:] = [d for d in dirs if not hidden(d)]  # pruned in place: os.walk skips them
            walked.append((root, names))
        found = 0
        for root, names in sorted(walked):
            for fname in sorted(names):
                path = os.path.join(root, fname)
                if hidden(fname):
                    continue
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    out.other_formats.append(path)
                elif not os.path.exists(path):  # follows the link: False for a dangling one
                    out.dangling.append(path)
                else:
                    out.files.append(path)
                    out.labels.append(label)
                    found += 1
        if not found:
            raise DataError(f"class folder {folder / name} holds no images ({' '.join(IMAGE_EXTENSIONS)}): "
                            f"add some, or delete (or hide, as .{name}) the folder")
    return out
