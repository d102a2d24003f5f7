"""A Cerberus checkpoint -> the task module, rebuilt from the config, class names and category ids stored in it."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ..base import TaskModule
from ..build import build_task

log = logging.getLogger(__name__)



@dataclass
class LoadedCheckpoint:
    module: TaskModule  # in eval mode, on the CPU
    config: DictConfig  # the run's resolved config
    class_names: list[str]
    category_ids: list[int] | None
    path: Path

    @property
    def task(self) -> str:
        return str(self.config.task.name)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load on the CPU, tensors and plain containers only (`weights_only=True`); a checkpoint holding other
    pickled objects is loaded in full with a warning (do that only for files you trust)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the .ckpt of a Cerberus run, "
                                "e.g. ckpt=outputs/<task>/<backbone>/<time>/checkpoints/last.ckpt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        log.warning("%s holds more than tensors and plain values (%s); loading it in full", path,
                    str(err).splitlines()[0])
        return torch.load(path, map_location="cpu", weights_only=False)


def stored_run(state: dict[str, Any], path: str | Path) -> tuple[DictConfig, list[str], list[int] | None]:
    """The config, class names and category ids that `TaskModule` saved with the weights."""
    hp = state.get("hyper_parameters") or {}
    if not hp.get("config") or not hp.get("class_names"):
        raise ValueError(f"{path} has no stored run config or class names: it was not written by Cerberus' "
                         "train.py (hyper_parameters['config'] / ['class_names'] are missing)")
    return OmegaConf.create(hp["config"]), list(hp["class_names"]), hp.get("category_ids")


def without_weight_sources(cfg: DictConfig) -> DictConfig:
    """Building must not download or read pretrained weights that the checkpoint's state dict overwrites."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.backbone.weights = None  # the checkpoint's own weights replace both
        cfg.init_from = None
    return cfg


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Rebuild the task module with `build_task` from what the checkpoint stores and load its weights."""
    state = read_checkpoint(path)
    cfg, class_names, category_ids = stored_run(state, path)
    module = build_task(without_weight_sources(cfg), class_names, category_ids)
    module.load_state_dict(state["state_dict"])
    module.eval()
    return LoadedCheckpoint(module, cfg, class_names, category_ids, Path(path))
