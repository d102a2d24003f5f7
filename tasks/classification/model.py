"""Image classifier head: global average pool of the chosen levels -> dropout -> linear; and the one-head model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.base import ShapeSpec
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

from ..multihead import MultiHeadModel


class ClassificationHead(nn.Module):
    """Pools `in_features` (default: the coarsest level of `shapes`) and concatenates them before the linear layer.

    Args:
        shapes: the body's `output_shape()`; widths are read from it.
        num_classes: size of the linear layer, from the dataset.
        dropout: dropout before the linear layer.
        in_features: level names to pool, e.g. `[c5]` or `[p2, p3, p4, p5]`.

    forward(feats: {level: (B, C, h, w)}, x: the body's input (unused)) -> logits (B, num_classes).
    """

    kind = "classification"

    def __init__(self, shapes: Mapping[str, ShapeSpec], num_classes: int, dropout: float = 0.0,
                 in_features: Sequence[str] | None = None) -> None:
        super().__init__()
        if in_features is None:
            in_features = [max(shapes, key=lambda name: shapes[name].stride)]
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"classifier in_features {missing} are not among the body's levels {list(shapes)}")
        self.in_features = list(in_features)
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(sum(shapes[f].channels for f in self.in_features), num_classes)

    def forward(self, feats: Mapping[str, Tensor], x: Tensor | None = None) -> Tensor:
        pooled = torch.cat([self.pool(feats[f]).flatten(1) for f in self.in_features], dim=1)
        return self.fc(self.dropout(pooled))


def ClassificationModel(body: Backbone, num_classes: int, dropout: float = 0.0,  # noqa: N802 - the config's target
                        in_features: Sequence[str] | None = None, *, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD) -> MultiHeadModel:
    """The classifier (`task=classification`): `body` and one `ClassificationHead` named "classification".
    Input (B, 3, H, W) RGB in [0, 1], normalised with `mean` / `std` (the preprocessing record's)."""
    head = ClassificationHead(body.output_shape(), num_classes, dropout, in_features)
    return MultiHeadModel(body, {"classification": head}, mean=mean, std=std)
