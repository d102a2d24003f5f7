"""The run's checkpoints: `last.ckpt`, the latest full state for resuming after a crash or a preemption, and the
best model by the monitored metric, slim (weights, config and classes).

Lightning's ModelCheckpoint takes one trigger (every N steps, every N epochs or every T minutes) and its
`save_last` follows that trigger; with the `monitor`ed best model it rewrites `last.ckpt` only when it saves.
Resuming needs all three: the end of every epoch, and every N steps and every T minutes within one, so a
preemption loses minutes, not an epoch.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class LastCheckpoint(L.Callback):
    """Write `dirpath/last.ckpt` (the full training state: weights, optimizer, LR schedule, loop counters and
    every callback's state) at the end of each training epoch (after its validation), every `every_n_steps`
    optimizer steps and every `every_n_minutes` minutes of training. The file is replaced atomically, so a kill
    during the write leaves the previous one whole; the loggers are flushed first, so the logs on disk go as far
    as the checkpoint.

    Args:
        dirpath: the checkpoint folder.
        every_n_steps: also save every this many optimizer steps (0: off).
        every_n_minutes: also save when this many minutes passed since the last save (0: off).
        filename: the file name, `last.ckpt` by default.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 0, every_n_minutes: float = 10.0,
                 filename: str = "last.ckpt") -> None:
        if every_n_steps < 0 or every_n_minutes < 0:
            raise ValueError("LastCheckpoint: every_n_steps and every_n_minutes must be >= 0 (0: off)")
        self.path = Path(dirpath) / filename
        self.every_n_steps = every_n_steps
        self.every_n_minutes = every_n_minutes
        self._last_save = time.monotonic()
        self._last_step = -1

    def _due(self, trainer: L.Trainer) -> bool:
        step = trainer.global_step
        if step == self._last_step:  # several batches per optimizer step (gradient accumulation)
            return False
        by_steps = self.every_n_steps > 0 and step % self.every_n_steps == 0
        elapsed = time.monotonic() - self._last_save
        by_time = self.every_n_minutes > 0 and elapsed >= 60 * self.every_n_minutes
        # every rank must agree, since saving is collective under DDP
        return bool(trainer.strategy.broadcast(by_steps or by_time))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not trainer.sanity_checking and self._due(trainer):
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run:  # a smoke test leaves no checkpoints behind
            return
        for logger in trainer.loggers:
            logger.save()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state; collective: rank 0 writes, all wait
        self._replace(tmp)
        trainer.strategy.barrier("LastCheckpoint.save")
        self._last_save, self._last_step = time.monotonic(), trainer.global_step

    @rank_zero_only
    def _replace(self, tmp: Path) -> None:
        os.replace(tmp, self.path)
        log.debug("saved %s", self.path)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (the best model by `monitor`) written without the training state: no optimizer
    or LR-schedule state (AdamW's doubles a file's size), no copy of the pre-EMA weights. It keeps the weights (EMA's
    averaged ones when EMA is on: every callback's checkpoint hook runs first), the run config, the class names and
    the counters, which is what testing, `predict.py`, `init_from` and export read; `last.ckpt` keeps the full state
    for resuming. Like ModelCheckpoint it writes nothing under `fast_dev_run`."""

    TRAINING_STATE = ("optimizer_states", "lr_schedulers", "current_model_state", "averaging_state")

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        with trainer.profiler.profile("save_checkpoint"):
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            for key in self.TRAINING_STATE:
                checkpoint.pop(key, None)
            trainer.strategy.save_checkpoint(checkpoint, filepath)
            trainer.strategy.barrier("BestCheckpoint.save")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
