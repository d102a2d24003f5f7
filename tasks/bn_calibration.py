"""Frozen BatchNorm without pretrained statistics: measure them on a few training batches before the first step.

A FrozenBatchNorm built at random initialisation holds mean 0 / variance 1 and so normalises nothing; through a
deep ResNet the activations then grow layer after layer (c5 std about 21 for a ResNet-50 at unit input) and a
detector diverges on its first step. detectron2's frozen-BN recipe assumes pretrained statistics; without them
Cerberus measures the statistics on the training data first (what pretraining would have provided), once per run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import lightning as L
import timm.layers
import torch
import torchvision.ops
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn

log = logging.getLogger(__name__)

# timm freezes plain BatchNorms into torchvision's class, its BatchNormAct2d into its own
FROZEN_NORMS = (torchvision.ops.FrozenBatchNorm2d, timm.layers.norm_act.FrozenBatchNormAct2d)


def frozen_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, FROZEN_NORMS)]


@contextmanager
def measuring(norms: list[nn.Module]) -> Iterator[None]:
    """While active, each frozen norm sets its statistics from its own input before normalising it (a forward
    pre-hook), so one forward pass calibrates layer after layer on already-calibrated inputs. Over several passes
    the statistics are the running average of the per-batch ones, as BatchNorm's `momentum=None`."""
    seen: dict[int, int] = {}

    def pre_hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0].detach().float()
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=True) if x.numel() > x.shape[1] else torch.ones_like(mean)
        n = seen.get(id(module), 0)
        if n == 0:
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
        else:
            module.running_mean.mul_(n / (n + 1)).add_(mean / (n + 1))
            module.running_var.mul_(n / (n + 1)).add_(var / (n + 1))
        seen[id(module)] = n + 1

    handles = [m.register_forward_pre_hook(pre_hook) for m in norms]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def calibrate(module: L.LightningModule, batches: list[Any]) -> int:
    """Run `module(batch[0])` (the images of each batch, every task's forward input) with the frozen norms
    measuring; returns how many norms were calibrated."""
    norms = frozen_norms(module)
    if not norms or not batches:
        return 0
    was_training = module.training
    module.eval()  # dropout off; trainable BatchNorms keep their own statistics
    with torch.no_grad(), measuring(norms):
        for batch in batches:
            module(move_data_to_device(batch, module.device)[0])
    module.train(was_training)
    return len(norms)


class BatchNormCalibration(L.Callback):
    """Calibrate every frozen BatchNorm of the model on `num_batches` training batches at the start of fitting;
    under DDP the statistics are averaged over the ranks. Runs once per run: its state in the checkpoint keeps a
    resumed run from measuring again."""

    def __init__(self, num_batches: int = 8) -> None:
        self.num_batches = num_batches
        self.done = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done or trainer.datamodule is None:
            return
        batches = list(islice(iter(trainer.datamodule.train_dataloader()), self.num_batches))
        count = calibrate(pl_module, batches)
        for m in frozen_norms(pl_module):  # every rank the same statistics
            m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
            m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
        self.done = True
        log.info("frozen BatchNorm: statistics of %d layers measured on %d training batches", count, len(batches))

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict.get("done", False))


def resolve_norm_policy(cfg: DictConfig) -> list[L.Callback]:
    """Decide `backbone.calibrate_bn=auto` and say the choice in one line; the resolved value (true/false) is
    written back into `cfg`, so the stored config records what ran. Returns the callback to add, if any.

    auto: calibrate when the model has frozen BatchNorm (`backbone.norm=frozen_bn`, or stages frozen by
    `backbone.freeze_at`) and nothing brings statistics (no `backbone.weights`, no `init_from`)."""
    bb = cfg.backbone
    choice = bb.get("calibrate_bn", "auto")
    frozen = bb.get("norm") == "frozen_bn" or int(bb.get("freeze_at") or 0) > 0
    pretrained = bool(bb.get("weights")) or bool(cfg.get("init_from"))
    if choice == "auto":
        choice = frozen and not pretrained
    choice = bool(choice)
    with open_dict(cfg):
        bb.calibrate_bn = choice
    source = "pretrained weights" if pretrained else "random init"
    if choice:
        batches = int(bb.get("calibrate_bn_batches", 8))
        log.info("backbone: %s, %s with frozen BatchNorm: its statistics are measured on %d training batches "
                 "before the first step (backbone.calibrate_bn=true)", bb.name, source, batches)
        return [BatchNormCalibration(batches)]
    norm = "frozen BatchNorm" if frozen else f"norm={bb.get('norm')}"
    log.info("backbone: %s, %s, %s, freeze_at=%s (backbone.calibrate_bn=false)", bb.name, source, norm,
             bb.get("freeze_at"))
    return []
