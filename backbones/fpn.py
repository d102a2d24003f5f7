"""Feature Pyramid Network neck: a Backbone wrapping a Backbone, returning p2..p6 of equal width."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from .base import Backbone, Neck, ShapeSpec

TOP_BLOCKS = ("maxpool", "p6p7", "none")


class FPN(Neck):
    """torchvision's FeaturePyramidNetwork over `in_levels` of a backbone.

    Output `p{k}` has stride 2**k: with `in_levels` c2..c5 that is p2..p5, plus p6 from `top_block="maxpool"`
    (Faster R-CNN) or p6, p7 from `"p6p7"` (RetinaNet). Submodules are named `body` and `fpn` as in
    torchvision's `BackboneWithFPN`, so its detection state dicts map onto this module key for key.
    """

    def __init__(
        self,
        body: Backbone,
        in_levels: Sequence[str] = ("c2", "c3", "c4", "c5"),
        out_channels: int = 256,
        top_block: str = "maxpool",
        norm: str | None = None,
    ) -> None:
        super().__init__()
        shapes = body.output_shape()
        missing = [lvl for lvl in in_levels if lvl not in shapes]
        if missing:
            raise ValueError(
                f"FPN in_levels {list(in_levels)} need {missing}, but the backbone returns {list(shapes)}; "
                "add them to backbone.out_levels"
            )
        if top_block not in TOP_BLOCKS:
            raise ValueError(f"unknown FPN top_block {top_block!r}; choose one of {', '.join(TOP_BLOCKS)}")
        self.body = body
        self.in_levels = list(in_levels)
        extra = {"maxpool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(out_channels, out_channels), "none": None}
        norm_layer = (lambda c: nn.GroupNorm(32, c)) if norm == "gn" else None
        self.fpn = FeaturePyramidNetwork(
            [shapes[lvl].channels for lvl in self.in_levels], out_channels, extra[top_block], norm_layer
        )
        strides = [shapes[lvl].stride for lvl in self.in_levels]
        strides += {"maxpool": [strides[-1] * 2], "p6p7": [strides[-1] * 2, strides[-1] * 4], "none": []}[top_block]
        self._names = [f"p{int(math.log2(s))}" for s in strides]
        self._shapes = {name: ShapeSpec(out_channels, s) for name, s in zip(self._names, strides)}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, C, H, W) -> {p2: (B, out_channels, H/4, W/4), ..., p6: (B, out_channels, H/64, W/64)}."""
        feats = self.body(x)
        outs = self.fpn(OrderedDict((lvl, feats[lvl]) for lvl in self.in_levels))
        return dict(zip(self._names, outs.values()))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    @property
    def bottom_up(self) -> Backbone:
        return self.body
