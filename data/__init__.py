"""Cerberus data: LightningDataModules per format, transforms, and the synthetic data generator.

The names below load on first use, so that the torch-free modules (images.py, errors.py) import without torch, e.g.
for predict.py on an exported model (tasks/runtime/)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ImageFolderDataModule": "classification",
    "CocoDetectionDataModule": "detection",
    "DataError": "errors",
    "CocoSegmentationDataModule": "segmentation",
    "MaskDataModule": "segmentation",
}

__all__ = ["CocoDetectionDataModule", "CocoSegmentationDataModule", "DataError", "ImageFolderDataModule",
           "MaskDataModule"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
