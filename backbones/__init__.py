"""Cerberus backbones: one registry of ResNet-family feature extractors and necks.

    >>> from backbones import build_backbone
    >>> net = build_backbone("resnet50", out_levels=["c3", "c4", "c5"])
    >>> net.output_shape()["c5"]
    ShapeSpec(channels=2048, stride=32)

The registry and the config groups import no torch; the names below that need it load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .catalog import LEVELS
from .registry import BACKBONES, NECKS, register_backbone, register_neck

_LAZY = {
    "Backbone": "base",
    "ShapeSpec": "base",
    "FPN": "fpn",
    "StagedBackbone": "staged",
    "build_backbone": "build",
    "build_body": "build",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
