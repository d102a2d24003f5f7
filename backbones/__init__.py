"""Cerberus backbones: one registry of ResNet-family feature extractors and necks.

    >>> from backbones import build_backbone
    >>> net = build_backbone("resnet50", out_levels=["c3", "c4", "c5"])
    >>> net.output_shape()["c5"]
    ShapeSpec(channels=2048, stride=32)
"""

# registration side effects; torchvision first so its names lead every listing
from . import torchvision_resnet  # noqa: F401, I001
from . import timm_backbone  # noqa: F401
from . import fpn  # noqa: F401
from .base import Backbone, ShapeSpec
from .build import build_backbone, build_body
from .fpn import FPN
from .registry import BACKBONES, NECKS, register_backbone, register_neck
from .staged import LEVELS, StagedBackbone

__all__ = [
    "BACKBONES",
    "FPN",
    "LEVELS",
    "NECKS",
    "Backbone",
    "ShapeSpec",
    "StagedBackbone",
    "build_backbone",
    "build_body",
    "register_backbone",
    "register_neck",
]
