"""The preprocessing record: how an image on disk becomes the model's input, built with the model and stored in
every checkpoint (`hyper_parameters["preprocessing"]`). It is the one source of the eval transform and the batch
padding for training, evaluation and prediction (and next, export), like timm's `pretrained_cfg` / `data_config`.

Images leave the data pipeline as RGB in [0, 1]; every task's model normalises them itself with the record's
`mean` / `std` (classification and segmentation: their first layer; detection: torchvision's transform), and those
statistics are the weights' (`backbones.weights.backbone_input_stats`), not a data option.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD

CROP_PCT = 0.875  # classification's eval resize / crop ratio when the data config has none (timm's default)
DETECTOR_TASKS = ("detection", "instance_segmentation")  # torchvision's R-CNNs: the model resizes and normalises


def pad_to_batch(tensors: Sequence[Tensor], size_divisibility: int, value: float | Sequence[float]) -> Tensor:
    """(..., H_i, W_i) tensors -> (B, ..., H, W), H and W the largest rounded up to a multiple of
    `size_divisibility`, each padded at the bottom / right with `value` (one per channel of (C, H, W) tensors, or
    one for all). Training and prediction pad alike."""
    d = max(size_divisibility, 1)
    height = math.ceil(max(t.shape[-2] for t in tensors) / d) * d
    width = math.ceil(max(t.shape[-1] for t in tensors) / d) * d
    out = tensors[0].new_zeros((len(tensors), *tensors[0].shape[:-2], height, width))
    if isinstance(value, Sequence):
        for c, v in enumerate(value):
            out[:, c] = v
    else:
        out.fill_(value)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def run_input_stats(cfg: DictConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) of the run `cfg`'s input normalisation: `backbone.mean` / `.std`, else its weights'
    statistics (`backbones.weights.backbone_input_stats`); a run config stored before they moved there: its
    `data.mean` / `.std`."""
    from backbones.weights import backbone_input_stats

    data = cfg.get("data") or {}
    if "mean" not in cfg.backbone and data.get("mean"):
        return tuple(float(v) for v in data.mean), tuple(float(v) for v in data.std)
    return backbone_input_stats(cfg.backbone)


@dataclass(frozen=True)
class Preprocessing:
    """RGB in [0, 1] (the model normalises by `mean` / `std`), then per task:

    - classification: short side resized to `size / crop_pct`, centre crop `size` x `size` (training: random
      resized crops of `size`);
    - detection, instance_segmentation: the model resizes (short side `min_size`, long side at most `max_size`) and
      pads itself;
    - segmentation: short side resized to `size` (None: the image's own size); batches padded at the bottom / right
      to a multiple of `size_divisibility` (the backbone's largest stride) with the mean colour (`pad_value`, 0
      after normalisation) and masks with `mask_pad_value`, the output cropped back.
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
    mask_pad_value: int | None = None

    @property
    def pad_value(self) -> tuple[float, ...]:
        """Images are padded with the mean colour, which the model's normalisation maps to 0."""
        return self.mean

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any], size_divisibility: int = 32) -> Preprocessing:
        """The record of the run `cfg` (a resolved run config, as stored in checkpoints); `size_divisibility`: the
        built backbone's."""
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
        data = cfg.get("data") or {}
        mean, std = run_input_stats(cfg)
        task = str(cfg.task.name)
        model = cfg.task.model if task in DETECTOR_TASKS else None
        if task == "multitask" and set(cfg.task.heads) & set(DETECTOR_TASKS):  # the R-CNN head's transform
            model = cfg.task.detection.model
        if model is not None:
            sizes = model.min_size if OmegaConf.is_list(model.min_size) else [model.min_size]
            return cls(task, mean, std, min_size=int(sizes[-1]), max_size=int(model.max_size),
                       size_divisibility=size_divisibility)
        return cls.from_data(task, data, size_divisibility, mean=mean, std=std)

    @classmethod
    def from_data(cls, task: str, data: Mapping[str, Any], size_divisibility: int = 32,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Preprocessing:
        """The classification / segmentation record of the `data` options (image_size, augment.crop_pct;
        eval_size, ignore_index)."""
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if task == "classification":
            crop = (data.get("augment") or {}).get("crop_pct")
            return cls(task, mean, std, size=int(data["image_size"]), crop_pct=float(crop if crop is not None
                                                                                     else CROP_PCT),
                       size_divisibility=size_divisibility)
        eval_size = data.get("eval_size")
        return cls(task, mean, std, size=int(eval_size) if eval_size else None, size_divisibility=size_divisibility,
                   mask_pad_value=int(data.get("ignore_index", 255)))

    def eval_transform(self) -> Callable:
        """The transform of evaluation and prediction: classification `PIL -> (3, size, size)`; segmentation the
        joint `(PIL, mask) -> ((3, H, W), (H, W))` (an image alone works too); detection `(PIL, target)` -> the
        image in [0, 1]. All in [0, 1], not normalised."""
        from .transforms import classification_transforms, detection_transforms, segmentation_transforms

        if self.task == "classification":
            return classification_transforms(False, int(self.size), crop_pct=float(self.crop_pct or CROP_PCT))
        if self.task == "segmentation":
            ignore = 255 if self.mask_pad_value is None else self.mask_pad_value
            return segmentation_transforms(False, None, eval_size=self.size, ignore_index=ignore)
        return detection_transforms(False)

    def pad_images(self, images: Sequence[Tensor]) -> Tensor:
        """(3, H_i, W_i) images in [0, 1] -> (B, 3, H, W), padded with the mean colour to a multiple of
        `size_divisibility`."""
        return pad_to_batch(images, self.size_divisibility, self.pad_value)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})
