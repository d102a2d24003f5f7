"""Per-class cross-entropy weights: a fixed list, or computed from the training masks' pixel frequencies
(`task.module.loss.class_weights: auto | inverse_sqrt | median_freq`).

- `inverse_sqrt` (what `auto` means): w_c = sqrt(median_f / f_c), f_c the class's share of all labelled training
  pixels. The square root corrects imbalance half-way on a log scale, as detectron2's LVIS repeat factors sqrt(t / f)
  do: full inverse frequency lets a class of a few pixels dominate the loss and makes training noisy.
- `median_freq`: median-frequency balancing (Eigen & Fergus 2015, SegNet): w_c = median_f / f_c with f_c the class's
  pixels over the labelled pixels of the training masks in which it occurs.

Either way the median class weighs 1, every weight is clipped to [1/MAX_RATIO, MAX_RATIO] (a class seen in a
handful of pixels must not get a weight of thousands), and a class with no pixel at all weighs 1. The CE is the
weighted mean over pixels, so only the weights' ratios matter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from backbones.errors import ConfigError

log = logging.getLogger(__name__)
METHODS = ("inverse_sqrt", "median_freq")
ALIASES = {"auto": "inverse_sqrt"}
CHOICES = ("auto", *METHODS)
MAX_RATIO = 10.0


def parse_class_weights(value: Any, num_classes: int, key: str) -> list[float] | str | None:
    """The config value of `key` (`...loss.class_weights`): None, a name of `CHOICES`, or `num_classes` weights >= 0,
    not all 0. Anything else: ConfigError naming the key and the choices."""
    if value is None:
        return None
    choices = (f"null (no weights), one of {', '.join(CHOICES)} (computed from the training masks; auto = "
               f"inverse_sqrt), or a list of {num_classes} weights, one per class")
    if isinstance(value, str):
        if value not in CHOICES:
            raise ConfigError(f"{key}={value!r} is not a choice: use {choices}")
        return value
    if isinstance(value, Mapping) or not isinstance(value, Sequence) and not hasattr(value, "__len__"):
        raise ConfigError(f"{key}={value!r}: use {choices}")
    weights = list(value)
    if len(weights) != num_classes:
        raise ConfigError(f"{key} has {len(weights)} entries but the dataset has {num_classes} classes; give one "
                          f"weight per class (line of classes.txt), or use one of {', '.join(CHOICES)}")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w) and w >= 0
               for w in weights) or not any(weights):
        raise ConfigError(f"{key}={weights}: every weight must be a number >= 0 and at least one above 0")
    return [float(w) for w in weights]


def balanced_weights(method: str, pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """(K,) float64 weights by `method` (`METHODS`) from the training masks' labelled pixels per class (K,) and, for
    median_freq, the labelled pixels of the masks in which each class occurs (K,); see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown class weighting {method!r}; one of {', '.join(METHODS)}")
    pixels, image_pixels = np.asarray(pixels, np.float64), np.asarray(image_pixels, np.float64)
    seen = pixels > 0
    if not seen.any():
        raise ValueError("the training masks have no labelled pixel: no class frequency to weight by")
    denominator = image_pixels if method == "median_freq" else np.full_like(pixels, pixels.sum())
    freq = np.divide(pixels, denominator, out=np.zeros_like(pixels), where=seen)
    ratio = np.divide(np.median(freq[seen]), freq, out=np.ones_like(freq), where=seen)
    weights = np.sqrt(ratio) if method == "inverse_sqrt" else ratio
    return np.clip(weights, 1 / MAX_RATIO, MAX_RATIO)


def weights_from_data(datamodule: Any, choice: str, class_names: Sequence[str], key: str) -> Tensor:
    """(K,) float32 weights by `choice` (of `CHOICES`) from the pixel counts of `datamodule`'s training masks (its
    `class_pixel_counts()`, a `data.mask_scan.PixelCounts`); logs them per class name once (rank 0). `auto` (the
    default) without any data module gives ones with a warning; a data module that cannot count is refused."""
    counts = getattr(datamodule, "class_pixel_counts", None)
    if counts is None and datamodule is None and choice == "auto":
        # the default meets `trainer.fit(module, train_dataloaders=...)` (a notebook, a benchmark): nothing to count
        log.warning("%s=auto: fitting without a data module, there are no training masks to count: plain "
                    "cross-entropy (give one weight per class to weigh them)", key)
        return torch.ones(len(class_names))
    if counts is None:
        raise ConfigError(f"{key}={choice} counts the training masks' pixels, which "
                          f"{type(datamodule).__name__ if datamodule is not None else 'a run without a data module'} "
                          "does not do (task=segmentation's data=masks, synthetic_segmentation and coco do); give one "
                          f"weight per class instead, e.g. {key}=[{', '.join(['1.0'] * len(class_names))}]")
    found = counts()
    if len(found.pixels) != len(class_names):
        raise RuntimeError(f"the data module counted {len(found.pixels)} classes, the head has {len(class_names)}")
    method = ALIASES.get(choice, choice)
    weights = balanced_weights(method, found.pixels, found.image_pixels)
    _log_weights(key, choice if choice == method else f"{choice} ({method})", class_names, weights, found.pixels,
                 found.masks)
    return torch.tensor(weights, dtype=torch.float32)


@rank_zero_only
def _log_weights(key: str, method: str, class_names: Sequence[str], weights: np.ndarray, pixels: np.ndarray,
                 masks: int) -> None:
    total = max(int(pixels.sum()), 1)
    shown = ", ".join(f"{name} {w:.3g} ({'no pixels' if n == 0 else f'{100 * n / total:.2g}%'})"
                      for name, w, n in zip(class_names, weights, pixels.tolist()))
    log.info("%s=%s from the pixels of %d training masks (weight, share of labelled pixels): %s", key, method, masks,
             shown)
