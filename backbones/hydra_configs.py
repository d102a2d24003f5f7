"""Hydra: the config groups `backbone` and `neck`, generated from the registry, and composing the run config from
conf/ outside `@hydra.main` (the entry points' pre-flight, `python -m data.check`, benchmarks, tests). It sits at the
bottom layer, with the registry it reads, so data/ and tasks/ both compose through it; it imports no torch.

Every registered name becomes `backbone=<name>` with the builder's own defaults, so the registry is the
only list of backbones: registering a builder is all it takes to make it selectable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

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


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_hydra(config_name: str = "config", overrides: Sequence[str] = ()) -> DictConfig:
    """The config Hydra composes for `overrides`, its `hydra` node included, nothing resolved."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def compose_config(overrides: Sequence[str] = (), output_dir: str | Path = ".") -> DictConfig:
    """The job config `train.py` would receive for `overrides`, resolved, with `${hydra:runtime.output_dir}` =
    output_dir."""
    cfg = compose_hydra("config", overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg
