"""fit -> test -> report (with `train=false`: evaluate a checkpoint), the body of train.py, kept out of the entry
point so tests and sweeps reuse it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from backbones.checkpoint_file import read_checkpoint
from data.splits import SplitDataModule

from .base import TaskModule
from .bn_calibration import resolve_norm_policy
from .build import build_task
from .evaluation import check_evaluation_checkpoint, check_same_classes
from .hardware import fit_to_hardware
from .progress import is_per_class, stdout_is_terminal
from .quiet import quiet_libraries
from .restore import stored_preprocessing, without_weight_sources
from .tuning import find_lr

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `{_target_: ...}` value of a dict-shaped group (callbacks); skip empty ones."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


@rank_zero_only
def _save_resolved_config(cfg: DictConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


@rank_zero_only
def _report(metrics: dict[str, float], best: str, run_dir: Path, extra: list[Table], *,
            title: str = "Test results", checkpoint_label: str = "best checkpoint") -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        if not is_per_class(name):  # per-class entries ("test/IoU/cat") are in the task's own tables
            table.add_row(name, f"{value:.4f}")
    console = Console()
    console.print(table)
    for t in extra:
        console.print(t)
    # soft_wrap: paths stay on one line (copy-pasteable) however narrow the terminal or log
    width = len(checkpoint_label)
    console.print(f"{checkpoint_label}: {best or '(none saved)'}", soft_wrap=True, highlight=False)
    console.print(f"{'run directory:':<{width + 2}}{run_dir}", soft_wrap=True, highlight=False)


def _single_log_stream() -> None:
    """`import lightning` attaches its own console handler; under Hydra's root handler that prints every line
    twice, so let Lightning's records go through the root (console + the run's train.log) only."""
    if logging.getLogger().hasHandlers():
        logging.getLogger("lightning").handlers.clear()


def _example_input(cfg: DictConfig, datamodule: L.LightningDataModule) -> torch.Tensor | None:
    """A batch shaped like the data, so the model summary shows in/out sizes and FLOPs."""
    # data=masks: data.image_size=null means the data's own size, which the data module knows
    size = cfg.data.get("image_size") or getattr(datamodule, "crop_size", None)
    return torch.zeros(2, cfg.backbone.in_chans, size, size) if size else None


def check_complete(cfg: DictConfig) -> None:
    """Fail before any work when a mandatory value (`???`) was not given."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"missing mandatory config value(s): {', '.join(missing)}; set them on the command line, "
            f"e.g. `python train.py ... {missing[0]}=<value>`"
        )


def _setup(cfg: DictConfig) -> tuple[Path, L.LightningDataModule, TaskModule, Any, L.Trainer]:
    """What fitting and evaluating share: checks, seed, the stored config, data, model, logger and Trainer."""
    check_complete(cfg)
    _single_log_stream()
    quiet_libraries(bool(cfg.get("verbose", False)))
    fit_to_hardware(cfg.trainer)  # precision=auto, SyncBatchNorm on CPU: before the config is stored
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    extra_callbacks = resolve_norm_policy(cfg) if cfg.get("train", True) else []  # writes its choice into cfg
    _save_resolved_config(cfg, run_dir)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # idempotent; the class list must exist before the head is built
    module = build_task(cfg, datamodule.class_names, getattr(datamodule, "category_ids", None))
    if isinstance(datamodule, SplitDataModule):  # the model's record: eval transforms and padding
        datamodule.use_preprocessing(module.preprocessing)
    module.example_input_array = _example_input(cfg, datamodule)

    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = _instantiate_all(cfg.get("callbacks")) + extra_callbacks
    bar = {}
    if not stdout_is_terminal():  # a redirected bar prints nothing useful: LogProgress's lines are the progress
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        bar = {"enable_progress_bar": False}
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, **bar)
    return run_dir, datamodule, module, logger, trainer


def _finish_logger(logger: Any) -> None:
    if isinstance(logger, WandbLogger):
        logger.experiment.finish()  # close the run so a multirun's next job starts a new one


def _first(results: list[dict[str, Any]]) -> dict[str, float]:
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit on train/val, test the best checkpoint, print and return the test metrics (`train=false`: `evaluate`)."""
    if not cfg.get("train", True):
        return evaluate(cfg)
    resume = cfg.get("ckpt_path")
    if resume:  # refused with a clear message unless it holds tensors and plain values only
        read_checkpoint(resume, "ckpt_path=")
    run_dir, datamodule, module, logger, trainer = _setup(cfg)
    if find_lr(cfg, trainer, module, datamodule, run_dir):  # tune.lr_find=true: the lr it found is the run's
        _save_resolved_config(cfg, run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)

    metrics: dict[str, float] = {}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.test_after_fit:
        metrics = _first(trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False,
                                     weights_only=True))
    _report(metrics, best, run_dir, module.report_tables())
    _finish_logger(logger)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """`train=false`: validate and test the checkpoint `ckpt_path` on the configured data without fitting; print
    the val and test metrics (and the task's tables) and return them."""
    ckpt = check_evaluation_checkpoint(cfg)
    state = read_checkpoint(ckpt, "ckpt_path=")  # read once, for the class check and the weights of both passes
    # the checkpoint's weights replace any pretrained backbone / init_from ones: don't fetch those; its record keeps
    # the input statistics it was trained with
    record = stored_preprocessing(state)
    run_dir, datamodule, module, logger, trainer = _setup(
        without_weight_sources(cfg, (record.mean, record.std) if record else None))
    check_same_classes(state, ckpt, module.class_names)
    module.load_state_dict(state["state_dict"])
    metrics = _first(trainer.validate(module, datamodule=datamodule, verbose=False))
    metrics |= _first(trainer.test(module, datamodule=datamodule, verbose=False))
    _report(metrics, str(ckpt), run_dir, module.report_tables(), title="Evaluation results",
            checkpoint_label="evaluated checkpoint")
    _finish_logger(logger)
    return metrics
