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
    themselves from it instead of from a model's internals. Its stages are named c1 (the stem) .. c5:
    `level_modules(level)` are the modules computing one, which fine-tuning freezes and unfreezes
    (`freeze(at)`, gradual unfreezing); inputs whose sides are multiples of `size_divisibility` give every
    level a whole number of cells.
    """

    @abstractmethod
    def forward(self, x: Tensor) -> dict[str, Tensor]: ...

    @abstractmethod
    def output_shape(self) -> dict[str, ShapeSpec]: ...

    @abstractmethod
    def level_modules(self, level: str) -> list[nn.Module]:
        """The modules that compute stage `level` (`c1`..`c5`) from the previous one; empty if it has none."""

    @abstractmethod
    def freeze(self, at: int) -> None:
        """Freeze the stages producing c1..c{at} (0: nothing, 1: the stem, 2: stem + first stage): no gradient, and
        their BatchNorms become FrozenBatchNorm so their statistics do not drift either (as detectron2 does)."""

    @property
    def size_divisibility(self) -> int:
        """Input sides should be multiples of this so every level's map is a whole number of cells."""
        return max(spec.stride for spec in self.output_shape().values())


class Neck(Backbone):
    """A Backbone that wraps a Backbone (`bottom_up`, detectron2's name) and maps its levels to new ones (an FPN's
    p2..p6). The stages (`level_modules`, `freeze`) are the wrapped backbone's."""

    @property
    @abstractmethod
    def bottom_up(self) -> Backbone: ...

    def level_modules(self, level: str) -> list[nn.Module]:
        return self.bottom_up.level_modules(level)

    def freeze(self, at: int) -> None:
        self.bottom_up.freeze(at)


def registry_backbone(body: Backbone) -> Backbone:
    """The registry backbone inside "backbone + neck" (the body itself when there is no neck)."""
    return body.bottom_up if isinstance(body, Neck) else body
