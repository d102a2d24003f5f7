"""A Cerberus checkpoint -> the task module, rebuilt from the config, class names and category ids stored in it.

Files are read by `backbones.checkpoint_file.read_checkpoint` (re-exported here), the one reader of every entry
point: `torch.load(weights_only=True)`; a file holding pickled Python objects is refused, never run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from backbones.checkpoint_file import CheckpointError, read_checkpoint
from data.preprocessing import Preprocessing, run_input_stats

from .base import TaskModule
from .build import build_task

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "LoadedCheckpoint", "load_checkpoint", "read_checkpoint", "stored_preprocessing",
           "stored_run", "without_weight_sources"]


@dataclass
class LoadedCheckpoint:
    module: TaskModule  # in eval mode, on the CPU
    config: DictConfig  # the run's resolved config
    class_names: list[str]
    category_ids: list[int] | None
    path: Path
    preprocessing: Preprocessing  # stored with the weights (runs before it had one: made from the stored config)

    @property
    def task(self) -> str:
        return str(self.config.task.name)


def stored_run(state: Any, path: str | Path) -> tuple[DictConfig, list[str], list[int] | None]:
    """The config, class names and category ids that `TaskModule` saved with the weights."""
    hp = (state.get("hyper_parameters") if isinstance(state, Mapping) else None) or {}
    if not isinstance(state, Mapping) or "state_dict" not in state:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' in it); pass the .ckpt that "
                              "Cerberus' train.py wrote, e.g. outputs/<task>/<backbone>/<time>/checkpoints/last.ckpt")
    if not hp.get("config") or not hp.get("class_names"):
        raise ValueError(f"{path} has no stored run config or class names: it was not written by Cerberus' "
                         "train.py (hyper_parameters['config'] / ['class_names'] are missing)")
    return OmegaConf.create(hp["config"]), list(hp["class_names"]), hp.get("category_ids")


def stored_preprocessing(state: Mapping[str, Any]) -> Preprocessing | None:
    """The preprocessing record stored with the weights (None in checkpoints written before it existed)."""
    stored = (state.get("hyper_parameters") or {}).get("preprocessing")
    return Preprocessing.from_dict(stored) if stored else None


def without_weight_sources(cfg: DictConfig, stats: tuple[Sequence[float], Sequence[float]] | None = None) -> DictConfig:
    """Building must not download or read pretrained weights that the checkpoint's state dict overwrites; the input
    statistics those weights brought stay (`stats`, else the config's own, see `run_input_stats`)."""
    mean, std = stats or run_input_stats(cfg)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.backbone.weights = None  # the checkpoint's own weights replace both
        cfg.init_from = None
        cfg.backbone.mean, cfg.backbone.std = list(mean), list(std)
    return cfg


def load_checkpoint(path: str | Path, what: str = "ckpt=") -> LoadedCheckpoint:
    """Rebuild the task module with `build_task` from what the checkpoint stores (its config, classes and
    preprocessing record) and load its weights."""
    state = read_checkpoint(path, what)
    cfg, class_names, category_ids = stored_run(state, path)
    record = stored_preprocessing(state)  # None for runs before it had one: made from the config
    module = build_task(without_weight_sources(cfg, (record.mean, record.std) if record else None), class_names,
                        category_ids)
    module.load_state_dict(state["state_dict"])
    module.eval()
    if record is not None:
        module.hparams["preprocessing"] = record.to_dict()
    return LoadedCheckpoint(module, cfg, class_names, category_ids, Path(path), module.preprocessing)
