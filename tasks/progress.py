"""Progress in any log: one line every N optimizer steps and one per epoch, through Python logging (so it is on
stdout and in the run's `train.log`), whether or not a terminal shows the progress bar.

    epoch 2/6  step 150/480 (31%)  loss 0.532  lr 1.2e-04  38.2 img/s  ETA 3m12s
    epoch 2/6 done in 2m03s: train/loss 0.410  val/acc1 0.930  val/loss 0.210  (best val/acc1 0.950, epoch 1)

On a terminal the step lines go only to `train.log` (the bar shows them); the epoch lines go to both.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

log = logging.getLogger(__name__)
STEP_LOGGER = f"{__name__}.steps"
step_log = logging.getLogger(STEP_LOGGER)


PER_CLASS_MARK = "/IoU/"  # per-class entries: <split>/IoU/<class>, in joint runs <split>/<head>/IoU/<class>


def is_per_class(key: str) -> bool:
    """A per-class entry ("val/IoU/car"): kept out of the one-line epoch summary and the results table (the task
    prints its own per-class table); nested metric names such as "val/segm/AP" stay in."""
    return PER_CLASS_MARK in key


def duration(seconds: float) -> str:
    """`1h02m`, `3m12s`, `45s`."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def batch_images(batch: Any) -> int:
    """Images in a batch: `(images (B, C, H, W), targets)` or `(list of images, targets)`."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if isinstance(first, Tensor):
        return int(first.shape[0]) if first.dim() == 4 else 1
    return len(first) if isinstance(first, (list, tuple)) else 0


def _epoch(trainer: L.Trainer) -> str:
    """`epoch 2/6`, counted from 1 (the checkpoint names count from 0)."""
    last = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    return f"epoch {trainer.current_epoch + 1}" + (f"/{last}" if last else "")


def _value(x: Any) -> float:
    return float(x.detach()) if isinstance(x, Tensor) else float(x)


def terminal_only_bar() -> None:
    """Keep step lines off console handlers that write to a terminal (the progress bar is there); a file or a
    redirected stdout still gets them."""

    class _NoSteps(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.name.startswith(STEP_LOGGER)

    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if not isinstance(handler, logging.FileHandler) and stream is not None and _isatty(stream):
            if not any(isinstance(f, _NoSteps) for f in handler.filters):
                handler.addFilter(_NoSteps())


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def stdout_is_terminal() -> bool:
    return _isatty(sys.stdout)


class LogProgress(L.Callback):
    """Log training progress every `every_n_steps` optimizer steps (and after the first) and each epoch's metrics.

    Args:
        every_n_steps: a step line every this many optimizer steps (0: epoch lines only).
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 0:
            raise ValueError(f"LogProgress: every_n_steps must be >= 0 (0: off), got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._fit_start = self._epoch_start = self._window_start = 0.0
        self._window_images = 0
        self._first_step = 0
        self.best: tuple[float, int] | None = None  # (value of the checkpoint's monitor, epoch counted from 1)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        terminal_only_bar()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        if not self._fit_start:
            self._fit_start, self._first_step = now, trainer.global_step
        self._epoch_start = self._window_start = now
        self._window_images = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._window_images += batch_images(batch) * trainer.world_size
        step = trainer.global_step
        if not self.every_n_steps or not (step == self._first_step + 1 or step % self.every_n_steps == 0):
            return
        now = time.perf_counter()
        rate = self._window_images / max(now - self._window_start, 1e-9)
        self._window_start, self._window_images = now, 0
        total = trainer.estimated_stepping_batches
        done = step - self._first_step
        eta = (now - self._fit_start) / done * (total - step) if done and math.isfinite(total) else math.nan
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        lrs = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        of = f"/{int(total)} ({100 * step / total:.0f}%)" if math.isfinite(total) and total > 0 else ""
        self._log_step(f"{_epoch(trainer)}  step {step}{of}  "
                       f"loss {_value(loss):.4g}  lr {max(lrs) if lrs else math.nan:.2e}  {rate:.1f} img/s  "
                       f"ETA {duration(eta)}")

    @rank_zero_only
    def _log_step(self, line: str) -> None:
        step_log.info(line)

    @rank_zero_only
    def _log_epoch(self, line: str) -> None:
        log.info(line)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on every rank: reading callback_metrics reduces the sync_dist values across DDP ranks, a collective that
        # deadlocks if only rank 0 enters it; only rank 0 prints
        if trainer.sanity_checking:
            return
        metrics: dict[str, float] = {}
        for key, value in trainer.callback_metrics.items():
            # per-step values, per-class entries ("val/IoU/cat") and the LR monitor's lr-* keys (the step lines
            # carry the lr) stay out of the one line
            if (key.endswith("_step") or is_per_class(key) or key.startswith("lr-")
                    or getattr(value, "numel", lambda: 1)() != 1):
                continue
            name = key.removesuffix("_epoch")  # an epoch aggregate wins over the last step's value
            if key.endswith("_epoch") or name not in metrics:
                metrics[name] = _value(value)
        text = "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        ckpt = trainer.checkpoint_callback
        monitor, mode = getattr(ckpt, "monitor", None), getattr(ckpt, "mode", "min")
        if monitor in metrics:  # the best so far, this epoch included (the checkpoint saves after this hook)
            value = metrics[monitor]
            better = self.best is None or (value > self.best[0] if mode == "max" else value < self.best[0])
            if better:
                self.best = (value, trainer.current_epoch + 1)
            text += f"  (best {monitor} {self.best[0]:.4g}, epoch {self.best[1]})"
        self._log_epoch(f"{_epoch(trainer)} done in {duration(time.perf_counter() - self._epoch_start)}: {text}")
