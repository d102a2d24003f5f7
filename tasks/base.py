"""What every task's LightningModule shares: optimizer param groups, schedules, the config in checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from rich.table import Table
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import Metric, MetricCollection

from backbones.base import registry_backbone
from data.preprocessing import Preprocessing

OptimizerFactory = Callable[..., Optimizer]
# state-dict entries of torch's LR schedulers that follow from the run's length, not from its progress
SCHEDULE_SHAPE_KEYS = ("total_steps", "_schedule_phases", "milestones")
SchedulerFactory = Callable[..., LRScheduler]


class TaskModule(L.LightningModule):
    """Base of the task modules. `model.body` is the backbone (+ neck); the rest of `model` is the head.

    Args:
        model: the task's nn.Module, with a `body` attribute.
        optimizer: `partial(torch.optim.X, lr=..., ...)` taking param groups.
        scheduler: `partial(schedule, total_steps=...)` taking the optimizer and `total_steps`, or None.
        backbone_lr_mult: the registry backbone's lr is `lr * backbone_lr_mult` (the neck and head keep `lr`).
        class_names: label order of the dataset, stored with the model.
        category_ids: the dataset's own id of each class (COCO category ids), when it has them.
        run_config: the resolved run config, stored in every checkpoint so the model can be rebuilt from it.
        preprocessing: the preprocessing record (`Preprocessing.to_dict()`), stored in every checkpoint.
        channels_last: store the model's 4-D weights (and so its activations) as NHWC, which oneDNN on CPUs and
            cuDNN on tensor-core GPUs run faster (timm's `--channels-last`); numerics stay float32.
        compile: `torch.compile` the model in place (`nn.Module.compile`: state-dict keys unchanged, so checkpoints
            stay interchangeable with eager runs); the first steps pay the compilation (README, Benchmark).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        backbone_lr_mult: float = 1.0,
        class_names: list[str] | None = None,
        category_ids: list[int] | None = None,
        run_config: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,  # noqa: A002 - the config key users type: task.module.compile=true
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone_lr_mult = backbone_lr_mult
        self.channels_last = channels_last
        self.compile_model = compile
        self._compiled = False
        self.class_names = list(class_names or [])
        # ids of parameters a fine-tuning callback holds back for now (GradualUnfreeze): they do not require grad yet
        # but belong in the optimizer's backbone group from the start
        self.deferred_params: set[int] = set()
        self.category_ids = list(category_ids) if category_ids is not None else None
        # the preprocessing record (data/preprocessing.py): what the data pipeline, predict.py and export read
        self.save_hyperparameters({"class_names": self.class_names, "category_ids": self.category_ids,
                                   "config": dict(run_config or {}), "preprocessing": dict(preprocessing or {})})

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing record built with the model (`data.preprocessing.Preprocessing`)."""
        return Preprocessing.from_dict(self.hparams["preprocessing"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming keeps the LR schedule's position (its step count) but not its stored length: the schedule is
        rebuilt from this run's `total_steps`, so `trainer.max_epochs` can be raised on resume (torch's
        OneCycleLR would otherwise stop at the old length, MultiStepLR keep the old milestones)."""
        for state in checkpoint.get("lr_schedulers", []):
            for key in SCHEDULE_SHAPE_KEYS:
                state.pop(key, None)

    def setup(self, stage: str) -> None:
        if self.channels_last:  # before the optimizer is built: params are converted in place, keeping identity
            self.model.to(memory_format=torch.channels_last)
        if self.compile_model and not self._compiled:  # once, whichever stage comes first
            self.model.compile()
            self._compiled = True

    def log_metrics(self, metrics: Metric | MetricCollection, prefix: str = "", prog_bar: tuple[str, ...] = (),
                    ) -> dict[str, Tensor]:
        """Log `metrics.compute()` as `prefix + name` once per epoch, then reset. compute() syncs the states
        across DDP processes (so every rank logs the same value; `sync_dist` averages equal values, and tells
        Lightning they are global); logging per epoch rather than per step keeps Lightning's per-call cost out of
        the training loop. Logged names in `prog_bar` also go to the progress bar. Returns {logged name: value}."""
        values = {prefix + name: value for name, value in metrics.compute().items()}
        for name, value in values.items():
            self.log(name, value, prog_bar=name in prog_bar, sync_dist=True)
        metrics.reset()
        return values

    def report_tables(self) -> list[Table]:
        """Extra tables printed under the test results (e.g. per-class scores); none by default."""
        return []

    def param_groups(self) -> list[dict[str, Any]]:
        """Backbone parameters with `lr_mult`, everything else at the base lr; frozen ones (`backbone.freeze_at`)
        left out, those a GradualUnfreeze callback holds back (`deferred_params`) kept in."""
        backbone_ids = {id(p) for p in registry_backbone(self.model.body).parameters()}
        # parameters a fine-tuning callback froze for now still get their place in the optimizer
        deferred = self.deferred_params
        trainable = [p for p in self.model.parameters() if p.requires_grad or id(p) in deferred]
        groups = [
            {"params": [p for p in trainable if id(p) not in backbone_ids], "lr_mult": 1.0},
            {"params": [p for p in trainable if id(p) in backbone_ids], "lr_mult": self.backbone_lr_mult},
        ]
        return [g for g in groups if g["params"] and g["lr_mult"] > 0]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.param_groups())
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_mult"]  # before the scheduler records each group's initial lr
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
