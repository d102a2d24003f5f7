"""The joint model: one body (+ neck) and the heads named by `task.heads`, each with its own config options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from backbones import Backbone
from backbones.base import Neck
from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

from ..classification.model import ClassificationHead
from ..detection.model import RCNNHead
from ..multihead import MultiHeadModel
from ..segmentation.model import segmentation_head

# the heads a joint run can combine; instance_segmentation is the R-CNN head with its mask branch
HEAD_NAMES = ("detection", "instance_segmentation", "segmentation", "classification")


def build_head(name: str, body: Backbone, num_classes: int, options: Mapping[str, Any], *,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> nn.Module:
    """One head by name, sized from `body.output_shape()` and the dataset's K classes: detection K (+ background,
    inside torchvision), segmentation K + 1 (0 is background), classification K (multi-label; without
    `in_features` it pools an FPN's levels of stride 8-32, else the coarsest level)."""
    options = dict(options)
    if name in ("detection", "instance_segmentation"):
        return RCNNHead(body, num_classes, mean=mean, std=std, **{**options, "masks": name == "instance_segmentation"})
    if name == "segmentation":
        return segmentation_head(body, num_classes + 1, **options)
    if name == "classification":
        shapes = body.output_shape()
        if options.get("in_features") is None and isinstance(body, Neck):
            # an FPN's coarsest level (p6) is only a max-pool of p5: pool p3..p5 instead
            options["in_features"] = [lvl for lvl, spec in shapes.items() if 8 <= spec.stride <= 32]
        return ClassificationHead(shapes, num_classes, **options)
    raise ValueError(f"unknown head {name!r}: task.heads takes {', '.join(HEAD_NAMES)}")


def MultiTaskModel(body: Backbone, num_classes: int, heads: Sequence[str], *,  # noqa: N802 - the config's target
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   **head_options: Mapping[str, Any]) -> MultiHeadModel:
    """`body` and one head per name in `heads` (`HEAD_NAMES`), each built from `head_options[name]` (the options of
    `conf/head/<kind>.yaml`; instance_segmentation takes detection's). At most one R-CNN head."""
    heads = list(heads)
    unknown = [h for h in heads if h not in HEAD_NAMES]
    if unknown or not heads:
        raise ValueError(f"task.heads={heads}: choose among {', '.join(HEAD_NAMES)}")
    if len(set(heads)) != len(heads):
        raise ValueError(f"task.heads={heads} names a head twice")
    if {"detection", "instance_segmentation"} <= set(heads):
        raise ValueError("task.heads: detection and instance_segmentation are the same R-CNN head (without / with "
                         "masks); keep one")
    built = {}
    for name in heads:
        options = head_options.get("detection" if name == "instance_segmentation" else name) or {}
        built[name] = build_head(name, body, num_classes, options, mean=mean, std=std)
    return MultiHeadModel(body, built, mean=mean, std=std)
