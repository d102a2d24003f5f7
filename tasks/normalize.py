"""The model's own input normalisation: the first layer of the classification and segmentation models (detection's
is torchvision's transform), with the statistics of the preprocessing record, i.e. of the backbone's weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD


class Normalize(nn.Module):
    """(B, C, H, W) RGB in [0, 1] -> (x - mean) / std per channel. The statistics are non-persistent buffers: they
    follow the model across devices and dtypes but stay out of state dicts (the record in the checkpoint holds
    them), so torchvision / timm / smp state dicts and older checkpoints load key for key."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"input normalisation needs one mean and one positive std per channel "
                             f"(backbone.mean={list(mean)}, backbone.std={list(std)})")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.flatten().tolist()]}, " \
               f"std={[round(v, 4) for v in self.std.flatten().tolist()]}"
