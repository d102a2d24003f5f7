"""torchvision.transforms.v2 pipelines for classification (PIL image -> normalized float tensor)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_transforms(
    train: bool,
    image_size: int,
    *,
    crop_pct: float = 0.875,
    scale: Sequence[float] = (0.35, 1.0),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Train: random resized crop, flip, optional colour jitter. Eval: resize to size/crop_pct, centre crop.

    Output: (3, image_size, image_size) float32, normalized by `mean` / `std`.
    """
    if train:
        ops: list[v2.Transform] = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True),
        ]
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        if color_jitter > 0:
            ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    else:
        ops = [
            v2.ToImage(),
            v2.Resize(round(image_size / crop_pct), antialias=True),
            v2.CenterCrop(image_size),
        ]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)
