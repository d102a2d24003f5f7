"""The preprocessing record: how an image on disk becomes the model's input, built with the model and stored in
every checkpoint (`hyper_parameters["preprocessing"]`), so prediction (and next, export) reads one record instead
of re-reading data options and repeating their defaults. Like timm's `pretrained_cfg` / `data_config`.

Training still builds its transforms from the data config (the record is made from the same values); moving the
normalisation of every task into the model is the next step (README, "Preprocessing record").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

CROP_PCT = 0.875  # classification's eval resize / crop ratio when the data config has none (timm's default)


@dataclass(frozen=True)
class Preprocessing:
    """RGB in [0, 1], normalised by `mean` / `std`, then per task:

    - classification: short side resized to `size / crop_pct`, centre crop `size` x `size`;
    - detection: the model resizes (short side `min_size`, long side at most `max_size`) and normalises itself;
    - segmentation: short side resized to `size` (None: the image's own size); batches padded at the bottom / right
      to a multiple of `size_divisibility` with `pad_value` (masks with `mask_pad_value`), the output cropped back.
    """

    task: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "RGB"
    size: int | None = None
    crop_pct: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    size_divisibility: int = 32
    pad_value: float = 0.0  # the mean colour, after normalisation
    mask_pad_value: int | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any], size_divisibility: int = 32) -> Preprocessing:
        """The record of the run `cfg` (a resolved run config, as stored in checkpoints)."""
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
        task = str(cfg.task.name)
        data = cfg.get("data") or {}
        mean = tuple(float(v) for v in (data.get("mean") or IMAGENET_MEAN))
        std = tuple(float(v) for v in (data.get("std") or IMAGENET_STD))
        if task == "classification":
            crop = (data.get("augment") or {}).get("crop_pct")
            crop_pct = float(crop if crop is not None else CROP_PCT)
            return cls(task, mean, std, size=int(data.image_size), crop_pct=crop_pct,
                       size_divisibility=size_divisibility)
        if task == "detection":
            model = cfg.task.model
            sizes = model.min_size if OmegaConf.is_list(model.min_size) else [model.min_size]
            return cls(task, IMAGENET_MEAN, IMAGENET_STD, min_size=int(sizes[-1]), max_size=int(model.max_size),
                       size_divisibility=size_divisibility)
        eval_size = data.get("eval_size")
        return cls(task, mean, std, size=int(eval_size) if eval_size else None,
                   size_divisibility=int(data.get("size_divisibility") or size_divisibility),
                   mask_pad_value=int(data.get("ignore_index", 255)))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})
