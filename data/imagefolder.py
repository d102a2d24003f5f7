"""ImageFolder classification data: `root/<split>/<class>/<image>`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from .errors import RAISE, Problems
from .files import list_folder, report_skipped
from .images import load_rgb


@dataclass(frozen=True)
class FolderIndex:
    """The files of one split: `samples[i] = (path, class index)`."""

    split_dir: Path
    classes: list[str]
    samples: list[tuple[Path, int]]


def scan_split(split_dir: Path, classes: Sequence[str] | None = None, problems: Problems = RAISE) -> FolderIndex:
    """List `split_dir/<class>/*` images; `classes` (from train) fixes the class order for val/test.

    Images in sub-folders of a class folder belong to the class, as in torchvision's ImageFolder (which walks
    them too); their count is noted. Reports to `problems` (by default: raises DataError naming the path) when
    the split is missing or empty, a class folder has no images, or val/test has a class that train does not;
    files that are not images and broken symbolic links are skipped with a warning that counts them. When
    collecting, the bad folders are left out and the scan goes on.
    """
    if not split_dir.is_dir():
        problems.error("layout", f"split directory {split_dir} does not exist; create it with one sub-folder per class")
        return FolderIndex(split_dir, list(classes or []), [])
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        problems.error("layout", f"split directory {split_dir} has no class folders; put images in "
                                 f"{split_dir}/<class name>/")
        return FolderIndex(split_dir, list(classes or []), [])
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            problems.error("classes", f"{split_dir} has class folders {extra} that the train split does not have; "
                                      "every class must appear in train (rename or remove them)")
    samples: list[tuple[Path, int]] = []
    broken: list[Path] = []
    others: list[Path] = []
    nested: list[Path] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue  # a class absent from val/test is allowed; train defines the classes
        listing = list_folder(folder)
        broken += listing.broken
        others += listing.others
        nested += listing.nested(listing.images)
        if not listing.images:
            problems.error("layout", f"class folder {folder} has no images (PNG/JPEG); add images or remove the folder")
        samples += [(p, label) for p in listing.images]
    report_skipped(split_dir, broken, others, problems)
    problems.each("note", "sub-folder images", nested,
                  lambda s: f"{split_dir}: {len(s)} of {len(samples)} images are in sub-folders of their class "
                            f"folder (e.g. {s[0]}); they are included in that class, as torchvision's ImageFolder "
                            "does",
                  lambda p: f"{p} is in a sub-folder of its class folder; included in that class (as torchvision's "
                            "ImageFolder does)")
    return FolderIndex(split_dir, list(classes), samples)


class ImageFolderDataset(Dataset):
    """Items are `(image (3, H, W) float, label int)` after `transform`."""

    def __init__(self, index: FolderIndex, transform: Callable | None = None) -> None:
        self.index = index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.index.samples[i]
        img = load_rgb(path)
        return (self.transform(img) if self.transform else img), label
