"""Checks for `train.py train=false ckpt_path=...` (evaluate a checkpoint without fitting), before any work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def check_evaluation_checkpoint(cfg: DictConfig) -> Path:
    """The checkpoint to evaluate: `ckpt_path`, which must be set and exist."""
    if not cfg.get("ckpt_path"):
        raise ValueError("train=false evaluates a trained checkpoint but ckpt_path is not set; pass it, e.g. "
                         "`python train.py train=false ckpt_path=outputs/<task>/<backbone>/<time>/checkpoints/"
                         "last.ckpt` (with the data options of that run)")
    ckpt = Path(cfg.ckpt_path).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such file; pass a .ckpt written by train.py")
    return ckpt


def check_same_classes(state: Mapping[str, Any], ckpt: Path, class_names: Sequence[str]) -> None:
    """The configured data must have the classes the checkpoint (`state`, read from `ckpt`) was trained on, in
    the same order."""
    stored = (state.get("hyper_parameters") or {}).get("class_names")
    if stored is not None and list(stored) != list(class_names):
        raise ValueError(f"{ckpt} was trained on classes {list(stored)} but the configured data has "
                         f"{list(class_names)}; pass the data options of the run that wrote it")
