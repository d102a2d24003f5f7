"""Gradual unfreezing of the backbone on Lightning's BaseFinetuning: the head trains first, then the backbone's
stages join from the deepest down (ULMFiT / "discriminative fine-tuning" style)."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from backbones.base import registry_backbone
from backbones.staged import LEVELS

log = logging.getLogger(__name__)


class GradualUnfreeze(BaseFinetuning):
    """Freeze the registry backbone at the start of fitting; unfreeze its deepest trainable stage (c5) at epoch
    `unfreeze_at_epoch`, the next (c4) `epochs_per_stage` epochs later, and so on. Stages that
    `backbone.freeze_at` froze stay frozen; the neck and head always train.

    The frozen parameters are in the optimizer from the start (the backbone's param group, at
    `lr * task.module.backbone_lr_mult`, following the run's LR schedule); with no gradient they are not updated, weight
    decay included, until their stage is unfrozen. BatchNorms of frozen stages run in eval mode, so their
    running statistics do not move either.

    Args:
        unfreeze_at_epoch: epoch at which c5 is unfrozen (0: immediately, i.e. no head-only phase).
        epochs_per_stage: epochs between two stages; 0 unfreezes every stage at `unfreeze_at_epoch`.
    """

    def __init__(self, unfreeze_at_epoch: int = 1, epochs_per_stage: int = 1) -> None:
        super().__init__()
        if unfreeze_at_epoch < 0 or epochs_per_stage < 0:
            raise ValueError("GradualUnfreeze: unfreeze_at_epoch and epochs_per_stage must be >= 0")
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.epochs_per_stage = epochs_per_stage
        self.schedule: dict[str, int] = {}  # level -> epoch at which it becomes trainable
        self._frozen: dict[str, list[nn.Module]] = {}  # levels still frozen by this callback

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        backbone = registry_backbone(pl_module.model.body)  # its stages: Backbone.level_modules
        trainable = [lvl for lvl in LEVELS if any(p.requires_grad for m in backbone.level_modules(lvl)
                                                  for p in m.parameters())]
        deepest_first = list(reversed(trainable))
        self.schedule = {lvl: self.unfreeze_at_epoch + i * self.epochs_per_stage for i, lvl in enumerate(deepest_first)}
        self._frozen = {lvl: backbone.level_modules(lvl) for lvl in deepest_first}
        params = [p for modules in self._frozen.values() for m in modules for p in m.parameters()]
        # TaskModule.param_groups keeps these in the backbone's group although they do not require grad yet
        pl_module.deferred_params = {id(p) for p in params}
        for p in params:
            p.requires_grad_(False)
        log.info("gradual unfreeze: backbone frozen; stages unfreeze at epochs %s", self.schedule)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        for level, start in self.schedule.items():
            if level in self._frozen and epoch >= start:
                for module in self._frozen.pop(level):
                    module.requires_grad_(True)
                    module.train()
                log.info("gradual unfreeze: epoch %d, %s is trainable", epoch, level)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        for modules in self._frozen.values():  # still frozen: BatchNorm uses and keeps its running statistics
            for module in modules:
                for m in module.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed mid-epoch skips `on_train_epoch_start` for that epoch: apply its schedule here too
        if trainer.fit_loop.restarted_mid_epoch:
            self.on_train_epoch_start(trainer, pl_module)
