"""Frozen BatchNorm without pretrained statistics: measure them on a few training batches before the first step.

A FrozenBatchNorm built at random initialisation holds mean 0 / variance 1 and so normalises nothing; through a
deep ResNet the activations then grow layer after layer (c5 std about 21 for a ResNet-50 at unit input) and a
detector diverges on its first step. detectron2's frozen-BN recipe assumes pretrained statistics; without them
Cerberus measures the statistics on the training data first (what pretraining would have provided), once per run.

Measured statistics alone leave a deep body far from unit scale: each residual branch is normalised to unit
variance and added to the stream, block after block, and an image unlike the ones measured is amplified on the way
(a ResNet-101's c5 std 65 on the calibration images, 133 on new ones; a ResNeXt-101 32x8d detector's first training
batch reached c4 std 157 and loss 46). So at random init each block's last frozen norm first gets the gain
1 / sqrt(blocks in its stage), as Fixup / SkipInit shrink residual branches, so a stage adds about unit variance
whatever its depth (ResNet-101: c5 std 5.3 and 9.7; the ResNeXt's first loss 5.2). A norm that timm initialised to
0 (`zero_init_last`) is left at 0: revived at that gain, ResNeSt's and ResNet-D's bodies blew up within 3 steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from itertools import islice
from typing import Any

import lightning as L
import timm.layers
import torch
import torchvision.ops
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from backbones.base import registry_backbone

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


def residual_branch_norms(model: nn.Module) -> dict[nn.Module, float]:
    """The last frozen norm of each residual block's branch (torchvision's `BasicBlock` / `Bottleneck`, timm's
    blocks: those with `zero_init_last`) unless its gain is 0, with the gain 1 / sqrt(number of such blocks in the
    block's stage)."""
    stages: dict[str, list[nn.Module]] = {}
    for name, block in model.named_modules():
        if isinstance(block, (BasicBlock, Bottleneck)) or hasattr(block, "zero_init_last"):
            norms = [m for m in block.children() if isinstance(m, FROZEN_NORMS)]
            # a live (trainable) norm learns its own gain; timm's zero-initialised one is left at 0 (module docstring)
            if norms and bool(norms[-1].weight.any()):
                stages.setdefault(name.rpartition(".")[0], []).append(norms[-1])
    return {norm: len(norms) ** -0.5 for norms in stages.values() for norm in norms}


def scale_residual_branches(model: nn.Module) -> int:
    """Give each residual branch's last frozen norm its gain (`residual_branch_norms`); only for random init, whose
    affine weights are 1 and carry nothing learned. Returns how many norms were set."""
    gains = residual_branch_norms(model)
    for norm, gain in gains.items():
        norm.weight.fill_(gain)
        norm.bias.zero_()
    return len(gains)


class _BodyDone(Exception):
    """Raised after the part of the model holding every frozen norm has run: the heads' work is not needed."""


def _norms_holder(module: nn.Module, norms: list[nn.Module]) -> nn.Module | None:
    """The registry backbone of `module.model.body` when it holds every frozen norm (every task's model), else None."""
    body = getattr(getattr(module, "model", None), "body", None)
    if not isinstance(body, nn.Module):
        return None
    holder = registry_backbone(body)
    inside = {id(m) for m in holder.modules()}
    return holder if all(id(n) in inside for n in norms) else None


def calibrate(module: L.LightningModule, batches: list[Any]) -> int:
    """Run `module(batch[0])` (the images of each batch, every task's forward input) with the frozen norms
    measuring; returns how many norms were calibrated. The forward stops once the backbone that holds the norms
    has run (a detector's heads would otherwise run their whole inference on every batch, for nothing)."""
    norms = frozen_norms(module)
    if not norms or not batches:
        return 0
    holder = _norms_holder(module, norms)

    def stop(*_: Any) -> None:
        raise _BodyDone

    handle = holder.register_forward_hook(stop) if holder is not None else None
    was_training = module.training
    module.eval()  # dropout off; trainable BatchNorms keep their own statistics
    try:
        with torch.no_grad(), measuring(norms):
            for batch in batches:
                with suppress(_BodyDone):
                    module(move_data_to_device(batch, module.device)[0])
    finally:
        if handle is not None:
            handle.remove()
        module.train(was_training)
    return len(norms)


class BatchNormCalibration(L.Callback):
    """Calibrate every frozen BatchNorm of the model on `num_batches` training batches at the start of fitting;
    under DDP the statistics are averaged over the ranks. Runs once per run: its state in the checkpoint keeps a
    resumed run from measuring again."""

    def __init__(self, num_batches: int = 8, scale_residuals: bool = True) -> None:
        self.num_batches = num_batches
        self.scale_residuals = scale_residuals  # random init only: pretrained gains are kept
        self.done = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done or trainer.datamodule is None:
            return
        batches = list(islice(iter(trainer.datamodule.train_dataloader()), self.num_batches))
        scaled = scale_residual_branches(pl_module) if self.scale_residuals else 0  # before: the stream it measures
        count = calibrate(pl_module, batches)
        for m in frozen_norms(pl_module):  # every rank the same statistics
            m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
            m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
        self.done = True
        log.info("frozen BatchNorm: statistics of %d layers measured on %d training batches%s", count, len(batches),
                 f", {scaled} residual branches scaled by 1/sqrt(blocks per stage)" if scaled else "")

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
        scale = bool(bb.get("scale_residuals", True)) and not pretrained  # pretrained gains are the weights' own
        return [BatchNormCalibration(batches, scale_residuals=scale)]
    norm = "frozen BatchNorm" if frozen else f"norm={bb.get('norm')}"
    log.info("backbone: %s, %s, %s, freeze_at=%s (backbone.calibrate_bn=false)", bb.name, source, norm,
             bb.get("freeze_at"))
    return []
