"""The Backbone contract shared by every feature extractor and neck."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class ShapeSpec:
    """What one output level holds: `channels` maps at 1/`stride` of the input resolution."""

    channels: int
    stride: int


class Backbone(nn.Module, ABC):
    """A module mapping an image batch (B, C, H, W) to named feature maps.

    `forward` returns `{level: (B, channels, H / stride, W / stride)}` and `output_shape()` advertises
    `{level: ShapeSpec(channels, stride)}` for exactly the same keys, so heads and necks size
    themselves from it instead of from a model's internals.
    """

    @abstractmethod
    def forward(self, x: Tensor) -> dict[str, Tensor]: ...

    @abstractmethod
    def output_shape(self) -> dict[str, ShapeSpec]: ...

    @property
    def size_divisibility(self) -> int:
        """Input sides should be multiples of this so every level's map is a whole number of cells."""
        return max(spec.stride for spec in self.output_shape().values())
