"""Listing a dataset folder as torchvision's ImageFolder does (`os.walk(followlinks=True)`, sorted), keeping what
does not load in view: files in sub-folders, broken symbolic links and files that are not images."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Problems
from .images import IMAGE_EXTENSIONS, is_image_file


@dataclass
class Listing:
    """The non-hidden files under a folder, sorted: `images` and `others` (not images by extension), each
    with `nested` the subset in sub-folders; `broken` symbolic links whose target does not exist."""

    folder: Path
    images: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)
    broken: list[Path] = field(default_factory=list)

    def nested(self, paths: list[Path]) -> list[Path]:
        return [p for p in paths if p.parent != self.folder]

    def top(self, paths: list[Path]) -> list[Path]:
        return [p for p in paths if p.parent == self.folder]


def list_folder(folder: Path) -> Listing:
    """Walk `folder` and its sub-folders (links followed, each real folder once; hidden names skipped)."""
    listing, seen = Listing(folder), set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):  # top-down, dirnames sorted in place
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back to a folder already walked
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            if not path.exists():  # os.walk lists a link whose target is gone as a file
                listing.broken.append(path)
            else:
                (listing.images if is_image_file(path) else listing.others).append(path)
    return listing


def _link(path: Path) -> str:
    try:
        return f"{path} -> {os.readlink(path)}"
    except OSError:
        return str(path)


def report_skipped(folder: Path, broken: list[Path], others: list[Path], problems: Problems) -> None:
    """Warn about the `broken` links and the non-image files `others` under `folder` that are left out (a count
    and examples when training, one line per file in data.check)."""
    problems.each("warning", "broken link", broken,
                  lambda s: f"{folder}: skipped {len(s)} broken symbolic link{'s' * (len(s) > 1)} (the file linked "
                            f"to does not exist), e.g. {', '.join(_link(p) for p in s[:3])}; restore the targets "
                            "or delete the links",
                  lambda p: f"skipped {_link(p)}: a broken symbolic link (the file linked to does not exist); "
                            "restore the target or delete the link")
    problems.each("warning", "not an image", others,
                  lambda s: f"{folder}: ignored {len(s)} files that are not images, e.g. {s[0]}",
                  lambda p: f"ignored {p}: not an image ({', '.join(IMAGE_EXTENSIONS)})")
