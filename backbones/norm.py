"""Normalization choices for backbones: `bn`, `frozen_bn`, `sync_bn`, `gn`.

The conversion is applied after the model is built (and after weights are loaded), so it works the
same for torchvision and timm models and keeps pretrained BatchNorm statistics in `frozen_bn`.
"""

from __future__ import annotations

import math

import timm.layers
from torch import nn

NORMS = ("bn", "frozen_bn", "sync_bn", "gn")


def _group_norm(bn: nn.Module, num_groups: int) -> nn.Module:
    channels = bn.num_features
    groups = math.gcd(num_groups, channels)
    if isinstance(bn, timm.layers.BatchNormAct2d):
        # keep timm's fused activation (and drop) so the block's forward is unchanged
        gn = timm.layers.GroupNormAct(channels, groups, eps=bn.eps, apply_act=False)
        gn.act, gn.drop = bn.act, bn.drop
        return gn
    return nn.GroupNorm(groups, channels, eps=bn.eps)


def _to_group_norm(module: nn.Module, num_groups: int) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _group_norm(module, num_groups)
    for name, child in module.named_children():
        new = _to_group_norm(child, num_groups)
        if new is not child:
            setattr(module, name, new)
    return module


def convert_norm(module: nn.Module, norm: str, gn_groups: int = 32) -> nn.Module:
    """Return `module` with every BatchNorm replaced according to `norm` (may return a new root)."""
    if norm == "bn":
        return module
    if norm == "frozen_bn":
        # fixed affine transform from the running statistics; no buffer ever updates
        return timm.layers.freeze_batch_norm_2d(module)
    if norm == "sync_bn":
        # only synchronises under DDP; Lightning's `sync_batchnorm=True` does the same for the whole model
        return timm.layers.convert_sync_batchnorm(module)
    if norm == "gn":
        return _to_group_norm(module, gn_groups)
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
