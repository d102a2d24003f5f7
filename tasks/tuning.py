"""`tune.lr_find=true`: Lightning's learning-rate finder picks `optim.lr` before fitting.

Lightning's `Tuner.lr_find` trains `tune.num_training` steps with the lr growing from `tune.min_lr` to `tune.max_lr`
(every param group at the same lr), stops early once the loss diverges, puts back the initial weights and optimizer
state, and suggests the lr of the steepest loss descent. The suggestion becomes the run's base `optim.lr`: the
per-part multipliers (`task.module.backbone_lr_mult`, a joint run's `task.module.head_lr_mult`) and the schedule's
warm-up apply to it as to a configured one, and it is the `optim.lr` of the stored config (`config_resolved.yaml`,
`hyper_parameters["config"]` of every checkpoint, the logger's hyperparameters).

During the search Lightning runs its own callback alone (no divergence guard, EMA, checkpoints or logger); the
callbacks' `setup` does run, so what it froze (GradualUnfreeze) is made trainable again before the real fit, and
the metrics the search's steps fed are reset. Under DDP every process runs the search in step and takes rank 0's
curve, so all use the same lr. The suggestion is Lightning's steepest descent, with the slope taken against
log10(lr) in exponential mode (`suggestion`).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torchmetrics import Metric

log = logging.getLogger(__name__)
CURVE, PICTURE = "lr_find.csv", "lr_find.png"
SEARCH_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector",
                  "lightning.pytorch.tuner.lr_finder")


def find_lr(cfg: DictConfig, trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule,
            run_dir: Path) -> bool:
    """With `tune.lr_find=true`, run the finder and make its suggestion the run's `optim.lr`: in `module`'s
    optimizer partial, in `cfg` and in the config `module` stores. Returns whether `optim.lr` changed."""
    tune = cfg.get("tune") or {}
    if not tune.get("lr_find", False):
        return False
    was = float(cfg.optim.lr)
    if cfg.get("ckpt_path"):  # the checkpoint's optimizer state would replace the lr anyway
        log.info("lr_find: skipped: a resumed run (ckpt_path) keeps the learning rate stored in its checkpoint")
        return False
    if trainer.fast_dev_run:
        log.info("lr_find: skipped under trainer.fast_dev_run; keeping optim.lr=%.1e", was)
        return False
    steps = int(tune.num_training)
    finder = _search(trainer, module, datamodule, tune, bool(cfg.get("verbose", False)))
    lrs = finder.results.get("lr", []) if finder is not None else []
    suggested = suggestion(finder) if lrs else None
    if lrs:
        _save_curve(finder, run_dir, bool(tune.get("plot", True)), suggested)
        stopped = "" if len(lrs) >= steps else " (stopped early: the loss diverged)"
        log.info("lr_find: %d of %d steps, lr %.1e to %.1e%s; the curve is in %s", len(lrs), steps, lrs[0], lrs[-1],
                 stopped, run_dir / CURVE)
    if suggested is None:
        log.info("lr_find: no suggestion (%d steps recorded, too few finite losses after the first 10); keeping "
                 "optim.lr=%.1e; try a lower tune.min_lr or more tune.num_training", len(lrs), was)
        return False
    log.info("lr_find: suggested lr %.1e (was %.1e); using it", suggested, was)
    use_lr(cfg, module, suggested)
    return True


def suggestion(finder: Any, skip_begin: int = 10, skip_end: int = 1) -> float | None:
    """The lr where the loss falls fastest, as Lightning's `_LRFinder.suggestion()` (the first `skip_begin` and last
    `skip_end` steps and non-finite losses left out; None with fewer than 2 points left), but in exponential mode
    the slope is taken against log10(lr), the axis along which the search steps evenly. Lightning 2.6 takes it
    against the lr itself, which magnifies the noise at the smallest lrs: on the synthetic set it suggested 6.3e-06
    where this gives 6.3e-04 (Lightning-AI/pytorch-lightning#21141)."""
    if finder.mode != "exponential":
        lr = finder.suggestion(skip_begin, skip_end)
        return None if lr is None else float(lr)
    lrs = torch.tensor(finder.results["lr"][skip_begin:-skip_end], dtype=torch.float64)
    losses = torch.tensor(finder.results["loss"][skip_begin:-skip_end], dtype=torch.float64)
    finite = torch.isfinite(losses)
    lrs, losses = lrs[finite], losses[finite]
    if len(losses) < 2:
        return None
    slope = torch.gradient(losses, spacing=[lrs.log10()])[0]
    return float(lrs[slope.argmin()])


def use_lr(cfg: DictConfig, module: L.LightningModule, lr: float) -> None:
    """`lr` as the run's base `optim.lr`: the optimizer partial the module calls in `configure_optimizers` (which
    still multiplies each param group by its `lr_mult`), `cfg`, and the stored / logged config."""
    module.optimizer_factory = functools.partial(module.optimizer_factory, lr=lr)
    cfg.optim.lr = lr
    hparams = dict(module.hparams)
    if "config" in hparams:
        config = dict(hparams["config"])
        config["optim"] = {**config.get("optim", {}), "lr": lr}
        # save_hyperparameters again: checkpoints store `hparams`, loggers log the `hparams_initial` it also sets
        module.save_hyperparameters({**hparams, "config": config})


def _search(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule,
            tune: Any, verbose: bool = False) -> Any:
    """Lightning's range test (`_LRFinder` or None), leaving the module as the real fit expects to find it."""
    steps = int(tune.num_training)
    trainable = [(p, p.requires_grad) for p in module.parameters()]
    epochs = trainer.fit_loop.max_epochs
    if epochs is not None and 0 <= epochs < steps:  # Lightning's search also ends at max_epochs: a short epoch
        trainer.fit_loop.max_epochs = steps         # would cut it; every epoch has a step, so this is enough
    try:
        with _quiet(not verbose):
            return Tuner(trainer).lr_find(
                module, datamodule=datamodule, min_lr=float(tune.min_lr), max_lr=float(tune.max_lr),
                num_training=steps, mode=str(tune.mode), early_stop_threshold=tune.get("early_stop_threshold"),
                update_attr=False)  # the suggestion goes through `use_lr`: the module has no `lr` attribute
    finally:
        trainer.fit_loop.max_epochs = epochs
        for p, flag in trainable:  # the callbacks' setup (GradualUnfreeze) runs again at fit and freezes afresh
            p.requires_grad_(flag)
        for m in module.modules():  # the search's partial last epoch is not the first epoch's
            if isinstance(m, Metric):
                m.reset()
        if isinstance(getattr(module, "_epoch_losses", None), dict):  # a joint run's per-head sums (DWA)
            module._epoch_losses = {}


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO


@contextlib.contextmanager
def _quiet(on: bool) -> Iterator[None]:
    """Drop Lightning's info lines of the search (its temporary checkpoint saved and restored, its own `Trainer.fit`
    stopping, its "stopped early"): `find_lr` says what happened in its own lines. Warnings pass."""
    loggers = [logging.getLogger(name) for name in SEARCH_LOGGERS] if on else []
    drop = _DropInfo()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@rank_zero_only
def _save_curve(finder: Any, run_dir: Path, plot: bool, lr: float | None) -> None:
    """`lr_find.csv` (step, lr, Lightning's smoothed loss) and, with `plot` and matplotlib, `lr_find.png` marking
    the suggestion `lr`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / CURVE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "smoothed_loss"])
        lrs, losses = finder.results["lr"], finder.results["loss"]
        writer.writerows((i, lr, loss) for i, (lr, loss) in enumerate(zip(lrs, losses)))
    if not plot:
        return
    if importlib.util.find_spec("matplotlib") is None:
        log.info("lr_find: no %s: matplotlib is not installed (pip install matplotlib, or tune.plot=false)", PICTURE)
        return
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    fig = finder.plot(suggest=False)  # Lightning's marker would be its own suggestion
    if lr is not None:
        fig.axes[0].axvline(lr, color="red", linestyle="--", label=f"suggested {lr:.1e}")
        fig.axes[0].legend()
    fig.savefig(run_dir / PICTURE, dpi=120)
    plt.close(fig)
