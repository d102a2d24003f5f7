"""Image classifier: normalise -> backbone (+ neck) -> global average pool -> dropout -> linear."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from backbones import Backbone
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

from ..normalize import Normalize


class ClassificationModel(nn.Module):
    """Pools `in_features` (default: the coarsest level the body returns) and concatenates them.

    Args:
        body: a Backbone (a backbone or backbone + neck); widths are read from its `output_shape()`.
        num_classes: size of the linear layer, from the dataset.
        dropout: dropout before the linear layer.
        in_features: level names to pool, e.g. `[c5]` or `[p2, p3, p4, p5]`.
        mean, std: the input normalisation (the preprocessing record's, i.e. the weights' statistics).
    """

    def __init__(self, body: Backbone, num_classes: int, dropout: float = 0.0,
                 in_features: Sequence[str] | None = None, *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        shapes = body.output_shape()
        if in_features is None:
            in_features = [max(shapes, key=lambda name: shapes[name].stride)]
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"classifier in_features {missing} are not among the body's levels {list(shapes)}")
        self.body = body
        self.in_features = list(in_features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(sum(shapes[f].channels for f in self.in_features), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> logits (B, num_classes)."""
        feats = self.body(self.normalize(x))
        pooled = torch.cat([self.pool(feats[f]).flatten(1) for f in self.in_features], dim=1)
        return self.fc(self.dropout(pooled))
