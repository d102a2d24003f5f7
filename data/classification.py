"""LightningDataModule for classification on an ImageFolder (given, or the generated synthetic one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import RAISE, DataError, Problems
from .imagefolder import FolderIndex, ImageFolderDataset, scan_split
from .images import sample_sizes
from .preprocessing import Preprocessing
from .scale import check_classification_size, validate_size
from .splits import STAGE_SPLITS, SplitDataModule, split_folder
from .synthetic import synthetic_classification
from .transforms import augment_options, classification_transforms


class ImageFolderDataModule(SplitDataModule):
    """Reads `root/train/<class>/*`, `root/val/<class>/*` and, if present, `root/test/<class>/*` (else tests on val).

    Args:
        root: dataset folder; `None` with `synthetic` set means "generate the synthetic set and use it".
        synthetic: arguments of `data.synthetic.synthetic_classification`.
        image_size: side of the square crops fed to the model (at least 32 px); a size far from the train
            images' own is said at setup.
        augment: options of `classification_transforms` for training (scale, hflip, color_jitter) and the eval
            `crop_pct`. Eval transforms are the preprocessing record's (`use_preprocessing`; until then, made from
            these options); images come out in [0, 1], the model normalises them.
    """

    def __init__(
        self,
        root: str | None = None,
        *,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int | None = None,
        augment: Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if root is None and synthetic is None:
            raise DataError("data.root is not set: pass data.root=/path/to/imagefolder (with train/ and val/)")
        self.root = Path(root).expanduser() if root is not None else None
        self.synthetic = dict(synthetic) if synthetic else None
        self.image_size = validate_size("data.image_size", image_size)
        self.augment_enabled, self.augment = augment_options(augment, "classification")
        self._splits: dict[str, FolderIndex] = {}
        self._sizes_checked = False

    def prepare_data(self) -> None:
        """Generate the synthetic set on first use (idempotent; runs on one process per node)."""
        if self.root is None:
            self.root = synthetic_classification(**self.synthetic)

    def _index(self, split: str) -> FolderIndex:
        if split not in self._splits:
            if self.root is None:
                self.prepare_data()
            classes = None if split == "train" else self._index("train").classes
            split_dir = split_folder(self.root, split)
            self._splits[split] = scan_split(split_dir, classes)
        return self._splits[split]

    @property
    def class_names(self) -> list[str]:
        """Class names in label order, from the train split's folder names."""
        return self._index("train").classes

    def check_sizes(self, sizes: Sequence[tuple[int, int]], problems: Problems = RAISE) -> None:
        """Say when data.image_size is far from the train images' (width, height) `sizes`."""
        check_classification_size(self.image_size, sizes, problems)

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", ("train", "val", "test")):
            self._index(split)
        if not self._sizes_checked:  # from a sample of image headers: milliseconds
            self._sizes_checked = True
            self.check_sizes(sample_sizes([p for p, _ in self._index("train").samples]))

    @property
    def record(self) -> Preprocessing:
        """The model's preprocessing record, else the one of these data options."""
        return self.preprocessing or Preprocessing.from_data(
            "classification", {"image_size": self.image_size, "augment": self.augment})

    def dataset(self, split: str, train: bool) -> ImageFolderDataset:
        record = self.record
        if train and self.augment_enabled:
            augment = {k: v for k, v in self.augment.items() if k != "crop_pct"}
            tf = classification_transforms(True, int(record.size), **augment)
        else:
            tf = record.eval_transform()
        return ImageFolderDataset(self._index(split), tf)
