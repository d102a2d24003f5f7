"""Learning-rate schedules stepped once per optimizer step, built as `partial(optimizer, total_steps)`.

`total_steps` comes from `Trainer.estimated_stepping_batches`, so schedules follow max_epochs, gradient
accumulation and device count without being edited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR, OneCycleLR


def _warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return min(total_steps - 1, int(round(warmup_ratio * total_steps))) if total_steps > 1 else 0


def cosine_warmup(optimizer: Optimizer, total_steps: int, warmup_ratio: float = 0.05,
                  warmup_start: float = 0.01, min_lr_ratio: float = 0.01) -> LRScheduler:
    """Linear warmup from `warmup_start * lr` over `warmup_ratio` of training, then cosine to `min_lr_ratio * lr`."""
    warmup = _warmup_steps(total_steps, warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_start + (1 - warmup_start) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def multistep(optimizer: Optimizer, total_steps: int, milestones: Sequence[float] = (0.67, 0.89),
              gamma: float = 0.1) -> LRScheduler:
    """Multiply the lr by `gamma` at each milestone, given as a fraction of training (detectron2's "steps")."""
    return MultiStepLR(optimizer, [int(m * total_steps) for m in milestones], gamma)


def one_cycle(optimizer: Optimizer, total_steps: int, pct_start: float = 0.25, div_factor: float = 25.0,
              final_div_factor: float = 1e4) -> LRScheduler:
    """torch's OneCycleLR peaking at each param group's configured lr."""
    return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(1, total_steps),
                      pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor)
