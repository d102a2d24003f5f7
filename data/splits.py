"""What every DataModule shares: loader settings and one DataLoader per split (train / val / test)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import RAISE, Problems
from .preprocessing import Preprocessing


def split_folder(root: Path, split: str) -> Path:
    """`root/split`, except a missing `root/test`, which is `root/val`: without a test split, tests run on val."""
    if split == "test" and not (root / "test").exists():
        return root / "val"
    return root / split


SPLITS = ("train", "val", "test")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def drops_last(num_images: int, batch_size: int, world_size: int = 1) -> bool:
    """Whether training drops its last batch: only when it would hold a single image (per process, as
    DistributedSampler splits the data), which breaks BatchNorm; a larger partial batch trains."""
    per_process = math.ceil(num_images / max(world_size, 1))
    return per_process > batch_size and per_process % batch_size == 1


def report_drop_last(num_images: int, batch_size: int, world_size: int = 1, problems: Problems = RAISE) -> None:
    """A note when `drops_last`: which image count leaves one out of every epoch, and how to avoid it."""
    if drops_last(num_images, batch_size, world_size):
        processes = f" per process ({world_size} processes)" if world_size > 1 else ""
        problems.note("last batch", f"1 of {math.ceil(num_images / max(world_size, 1))} training images{processes} is "
                                    f"left out of each epoch (a different one each time: the data is shuffled): with "
                                    f"data.batch_size={batch_size} the last batch would hold a single image, which "
                                    "BatchNorm cannot normalize; a batch size that leaves more over keeps it")


class SplitDataModule(L.LightningDataModule):
    """Subclasses implement `dataset(split, train)`; `collate_fn` is None for stackable items.

    num_workers None means min(4, CPU count); pin_memory None means "when CUDA is available".
    """

    collate_fn: Callable | None = None
    # the model's preprocessing record (`use_preprocessing`); None until then: the data options' own
    preprocessing: Preprocessing | None = None

    def __init__(self, batch_size: int, num_workers: int | None, pin_memory: bool | None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    def dataset(self, split: str, train: bool) -> Dataset:
        raise NotImplementedError

    def use_preprocessing(self, record: Preprocessing) -> None:
        """Take the model's preprocessing record (built with the model, stored in its checkpoints): its eval transform
        and batch padding are then the ones of training, evaluation and prediction alike. Call before the loaders."""
        self.preprocessing = record

    def collate(self) -> Callable | None:
        """The loaders' collate function: the class's `collate_fn` unless a subclass needs instance settings."""
        return type(self).collate_fn

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        if train:
            report_drop_last(len(dataset), self.batch_size, self._world_size())
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and drops_last(len(dataset), self.batch_size, self._world_size()),
            num_workers=self.num_workers,
            collate_fn=self.collate(),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
