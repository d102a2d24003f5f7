"""Hydra config groups `backbone` and `neck`, generated from the registry.

Every registered name becomes `backbone=<name>` with the builder's own defaults, so the registry is the
only list of backbones: registering a builder is all it takes to make it selectable.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore

from .build import TASK_KEYS, build_backbone
from .registry import BACKBONES, NECKS, keyword_defaults


def backbone_node(name: str) -> dict[str, Any]:
    """The config of `backbone=<name>`: builder defaults plus the task-side keys."""
    node = {"name": name, **keyword_defaults(build_backbone, skip=("name",))}
    node["kwargs"] = {}
    # builder-specific required arguments, e.g. `model_name` for the generic `timm` entry
    node.update(BACKBONES.get(name).options(skip=("in_chans", "out_levels", "model_kwargs")))
    node.update(TASK_KEYS)
    return node


def register_configs() -> None:
    """Store one `backbone/<name>` and `neck/<name>` node per registered builder in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    if "backbone" in cs.repo:  # already registered (idempotent: entry points and tests may all call it)
        return
    for name in BACKBONES.names():
        cs.store(group="backbone", name=name, node=backbone_node(name))
    for name in NECKS.names():
        cs.store(group="neck", name=name, node={"name": name, **NECKS.get(name).options(skip=("body",))})
