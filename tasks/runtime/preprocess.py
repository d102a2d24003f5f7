"""The eval preprocessing of `data/preprocessing.py`'s record with Pillow and numpy, equal to the torchvision
transforms that evaluation and predict.py use on checkpoints (`Preprocessing.eval_transform`; tested bit for bit):
classification short side to round(size / crop_pct), centre crop; segmentation short side to `size` when the
record has one, batches padded with the mean colour; R-CNN images as they are (the graph resizes them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

CROP_PCT = 0.875  # data.preprocessing.CROP_PCT (not imported: that module imports torch)


def to_float(image: Image.Image) -> np.ndarray:
    """RGB PIL image -> (3, H, W) float32 in [0, 1], as torchvision's ToImage + ToDtype(float32, scale=True)."""
    return np.ascontiguousarray((np.asarray(image, dtype=np.uint8).astype(np.float32) * np.float32(1.0 / 255))
                                .transpose(2, 0, 1))


def resize_short(image: Image.Image, short: int) -> Image.Image:
    """Short side to `short`, the long side in proportion (rounded down), bilinear: torchvision's Resize(int) on a
    PIL image."""
    w, h = image.size
    if w <= h:
        size = (short, int(short * h / w))
    else:
        size = (int(short * w / h), short)
    return image.resize(size, Image.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop(size) on a PIL image at least `size` on each side."""
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def classification_input(image: Image.Image, record: Mapping[str, Any]) -> np.ndarray:
    """(3, size, size) float32."""
    size = int(record["size"])
    crop_pct = float(record.get("crop_pct") or CROP_PCT)
    return to_float(center_crop(resize_short(image, round(size / crop_pct)), size))


def segmentation_input(image: Image.Image, record: Mapping[str, Any]) -> np.ndarray:
    """(3, H, W) float32, the short side resized to the record's `size` when it has one."""
    return to_float(resize_short(image, int(record["size"])) if record.get("size") else image)


def pad_to_batch(images: Sequence[np.ndarray], size_divisibility: int, value: Sequence[float]) -> np.ndarray:
    """(3, H_i, W_i) -> (B, 3, H, W) padded at the bottom / right with `value` per channel to a multiple of
    `size_divisibility` (`data.preprocessing.pad_to_batch`)."""
    d = max(int(size_divisibility), 1)
    height = -(-max(i.shape[-2] for i in images) // d) * d
    width = -(-max(i.shape[-1] for i in images) // d) * d
    out = np.empty((len(images), 3, height, width), dtype=np.float32)
    out[:] = np.asarray(value, dtype=np.float32).reshape(1, 3, 1, 1)
    for k, image in enumerate(images):
        out[k, :, : image.shape[-2], : image.shape[-1]] = image
    return out
