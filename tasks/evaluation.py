"""Checks for `train.py train=false ckpt_path=...` (evaluate a checkpoint without fitting), before any work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from backbones.errors import ConfigError


def check_evaluation_checkpoint(cfg: DictConfig) -> Path:
    """The checkpoint to evaluate: `ckpt_path`, which must be set and exist."""
    if not cfg.get("ckpt_path"):  # checked at composition (tasks/config_check.py); an API caller may skip that
        raise ConfigError("evaluation needs ckpt_path=<a .ckpt written by train.py>")
    ckpt = Path(cfg.ckpt_path).expanduser()
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such file; pass a .ckpt written by train.py")
    return ckpt


def check_same_classes(state: Mapping[str, Any], ckpt: Path, class_names: Sequence[str]) -> None:
    """The configured data must have the classes the checkpoint (`state`, read from `ckpt`) was trained on, in
    the same order."""
    stored = (state.get("hyper_parameters") or {}).get("class_names")
    if stored is not None and list(stored) != list(class_names):
        raise ConfigError(f"{ckpt} was trained on classes {list(stored)} but the configured data has "
                         f"{list(class_names)}; pass the data options of the run that wrote it")
