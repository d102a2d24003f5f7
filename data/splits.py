"""What every DataModule shares: loader settings and one DataLoader per split (train / val / test)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


def split_folder(root: Path, split: str) -> Path:
    """`root/split`, except a missing `root/test`, which is `root/val`: without a test split, tests run on val."""
    if split == "test" and not (root / "test").exists():
        return root / "val"
    return root / split


STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class SplitDataModule(L.LightningDataModule):
    """Subclasses implement `dataset(split, train)`; `collate_fn` is None for stackable items.

    num_workers None means min(4, CPU count); pin_memory None means "when CUDA is available".
    """

    collate_fn: Callable | None = None

    def __init__(self, batch_size: int, num_workers: int | None, pin_memory: bool | None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    def dataset(self, split: str, train: bool) -> Dataset:
        raise NotImplementedError

    def collate(self) -> Callable | None:
        """The loaders' collate function: the class's `collate_fn` unless a subclass needs instance settings."""
        return type(self).collate_fn

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.dataset(split, train)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > self.batch_size,  # no 1-image last batch for BatchNorm
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
