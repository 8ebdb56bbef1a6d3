"""Finding a folder dataset's images: the split layout, the class folders, the image files.

Read-only and cheap (directory listings and `stat` calls, no decoding), so `engine.data.folder`
can fingerprint a folder on every load and prepare it again only when it changed.
"""

from __future__ import annotations

import os
import unicodedata

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_SPLIT_DIRS = {"train": ("train",), "validation": ("val", "validation", "valid"), "test": ("test",)}


def _entries(directory: str) -> list[os.DirEntry]:
    with os.scandir(directory) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _walk_images(directory: str, found: list, ignored: list) -> None:
    """Appends `(path, size, mtime_ns)` of every image below `directory`, in sorted order."""
    for entry in _entries(directory):
        if entry.is_dir():
            _walk_images(entry.path, found, ignored)
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            stat = entry.stat()
            found.append((entry.path, stat.st_size, stat.st_mtime_ns))
        else:
            ignored.append(entry.path)


def scan(root: str) -> tuple[dict[str, list], tuple[str, ...], list[str]]:
    """({split: [(path, size, mtime_ns, label)]}, class names, ignored files) of a folder."""
    if not os.path.isdir(root):
        raise ValueError(f"image folder {root!r} does not exist or is not a directory")
    top = _entries(root)
    dirs = [e.name for e in top if e.is_dir()]
    split_names = {n: s for s, names in _SPLIT_DIRS.items() for n in names}
    if "train" in dirs:
        others = [d for d in dirs if d not in split_names]
        if others:
            raise ValueError(
                f"image folder {root!r} mixes split folders (train) with other folders "
                f"({', '.join(others[:5])}); use either train/ val/ test/ or one folder per class"
            )
        layout = {split_names[d]: os.path.join(root, d) for d in dirs}
        ignored = [e.path for e in top if not e.is_dir()]  # files beside train/ val/ test/
    else:
        layout, ignored = {"train": root}, []
    classes: dict[str, dict[str, str]] = {}
    for split, directory in layout.items():
        entries = _entries(directory)
        ignored += [e.path for e in entries if not e.is_dir()]
        classes[split] = {
            unicodedata.normalize("NFC", e.name): e.path for e in entries if e.is_dir()
        }
    names = tuple(sorted(classes["train"]))
    if not names:
        raise ValueError(f"image folder {root!r} has no class sub-folders (one per class)")
    files: dict[str, list] = {}
    for split, by_name in classes.items():
        unknown = sorted(set(by_name) - set(names))
        if unknown:
            raise ValueError(
                f"image folder {root!r}: {split} has classes that train lacks: "
                f"{', '.join(unknown[:5])}"
            )
        files[split] = []
        for label, name in enumerate(names):
            if name not in by_name:
                continue
            found: list = []
            _walk_images(by_name[name], found, ignored)
            if not found and split == "train":
                raise ValueError(
                    f"class folder {by_name[name]!r} has no {'/'.join(IMAGE_EXTENSIONS)} images"
                )
            files[split] += [(path, size, mtime, label) for path, size, mtime in found]
    return files, names, ignored
