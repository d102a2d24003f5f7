"""A backbone that runs a source model's top-level children in order and taps c1..c5 between them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import Backbone, ShapeSpec
from .catalog import LEVELS
from .norm import convert_norm


class StagedBackbone(Backbone):
    """Children are registered under their source names (`conv1`, `layer1`, ...), so state dicts of the
    torchvision or timm model they came from load without renaming.

    Args:
        children: the source model's children in execution order, as `(name, module)`.
        taps: `{child name: level}`; the level's feature map is that child's output.
        shapes: `{level: ShapeSpec}` for every tapped level.
        out_levels: levels `forward` returns; children after the deepest one are dropped.
    """

    def __init__(
        self,
        children: Sequence[tuple[str, nn.Module]],
        taps: dict[str, str],
        shapes: dict[str, ShapeSpec],
        out_levels: Sequence[str] = LEVELS,
    ) -> None:
        super().__init__()
        out_levels = list(out_levels)
        unknown = [lvl for lvl in out_levels if lvl not in shapes]
        if not out_levels or unknown:
            raise ValueError(f"out_levels {out_levels} must be a non-empty subset of {list(shapes)}")
        self.out_levels = sorted(out_levels, key=LEVELS.index)
        deepest = self.out_levels[-1]
        self._plan: list[tuple[str, str | None]] = []
        self._level_children: dict[str, list[str]] = {lvl: [] for lvl in shapes}
        pending: list[str] = []
        for name, child in children:
            self.add_module(name, child)
            pending.append(name)
            tap = taps.get(name)
            self._plan.append((name, tap))
            if tap is not None:
                self._level_children[tap] = pending
                pending = []
                if tap == deepest:
                    break
        self._shapes = {lvl: shapes[lvl] for lvl in self.out_levels}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """(B, C, H, W) -> {level: (B, channels, H / stride, W / stride)} for `out_levels`."""
        out: dict[str, Tensor] = {}
        for name, tap in self._plan:
            x = self._modules[name](x)
            if tap in self._shapes:
                out[tap] = x
        return out

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def level_modules(self, level: str) -> list[nn.Module]:
        """The children that compute `level` from the previous level (the stem for `c1`)."""
        return [self._modules[name] for name in self._level_children.get(level, [])]

    def freeze(self, at: int) -> None:
        """Freeze every child that produces c1..c{at} (see `Backbone.freeze`)."""
        if not 0 <= at <= len(LEVELS):
            raise ValueError(f"freeze_at must be in 0..{len(LEVELS)} (got {at})")
        for level in LEVELS[:at]:
            for name in self._level_children.get(level, []):
                child = convert_norm(self._modules[name], "frozen_bn")
                child.requires_grad_(False)
                self._modules[name] = child

    @torch.jit.unused
    def extra_repr(self) -> str:
        return f"out_levels={self.out_levels}"
