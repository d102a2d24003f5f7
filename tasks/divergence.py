"""Stop a diverging run at the step it diverges, with what to do about it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

import lightning as L
from torch import Tensor

from .checkpointing import LastCheckpoint


class DivergenceError(RuntimeError):
    """Training produced a non-finite or exploding loss; the message says where and what to try."""


def _value(x: Any) -> float:
    return float(x.detach()) if isinstance(x, Tensor) else float(x)


class DivergenceGuard(L.Callback):
    """Raise `DivergenceError` after a training step whose loss is NaN / inf, or more than `explode_factor` times
    the median loss of the first `reference_steps` steps. It runs before the checkpoint callbacks (Lightning
    orders those last), so no checkpoint is written from the diverged weights.

    Task modules return `{"loss": total, <term>: value, ...}` from `training_step`; the terms are named in the
    message.

    Args:
        explode_factor: a finite loss above this multiple of the reference is divergence (0: only non-finite).
        reference_steps: the first steps whose median is the reference.
    """

    def __init__(self, explode_factor: float = 100.0, reference_steps: int = 10) -> None:
        self.explode_factor = explode_factor
        self.reference_steps = reference_steps
        self._first: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        terms = {k: _value(v) for k, v in outputs.items()} if isinstance(outputs, Mapping) else (
            {"loss": _value(outputs)} if outputs is not None else {})
        if "loss" not in terms:
            return
        loss = terms["loss"]
        reason = None
        if not math.isfinite(loss):
            reason = f"the loss is {loss}"
        elif len(self._first) < self.reference_steps:
            self._first.append(loss)
        elif self.explode_factor > 0:
            reference = statistics.median(self._first)
            if reference > 0 and loss > self.explode_factor * reference:
                reason = (f"the loss {loss:.4g} is over {self.explode_factor:g}x the median {reference:.4g} of the "
                          f"first {self.reference_steps} steps")
        # every rank stops together (one rank raising alone would leave the others waiting in a collective)
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False) and reason is None:
            reason = "the loss diverged on another process"
        if reason is not None:
            raise DivergenceError(self.message(trainer, reason, terms, batch_idx))

    def message(self, trainer: L.Trainer, reason: str, terms: dict[str, float], batch_idx: int) -> str:
        lrs = sorted({g["lr"] for opt in trainer.optimizers for g in opt.param_groups})
        lr = ", ".join(f"{x:.3g}" for x in lrs)
        ckpt = _last_good_checkpoint(trainer)
        resume = f"; resume from it with ckpt_path={ckpt}" if ckpt else ""
        loss_terms = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        return (
            f"training diverged at epoch {trainer.current_epoch}, batch {batch_idx} (optimizer step "
            f"{trainer.global_step}): {reason}.\n"
            f"  loss terms: {loss_terms}\n"
            f"  learning rate: {lr}\n"
            "  likely fixes: a lower learning rate (optim.lr=...), gradient clipping "
            "(trainer.gradient_clip_val=1.0), a longer warm-up (scheduler.warmup_ratio=0.1), pretrained weights "
            "(backbone.weights=DEFAULT), precision 32-true if you train in 16-mixed; check the data with "
            "`python -m data.check` (same data options)\n"
            f"  last good checkpoint: {ckpt or '(none saved yet)'}{resume}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"first": list(self._first)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._first = [float(x) for x in state_dict.get("first", [])]


def _last_good_checkpoint(trainer: L.Trainer) -> str:
    """The newest checkpoint on disk: `last.ckpt` if written, else the best one."""
    for cb in trainer.callbacks:
        if isinstance(cb, LastCheckpoint) and cb.path.is_file():
            return str(cb.path)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    return best or ""
