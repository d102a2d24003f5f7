"""Cross-entropy that weights hard pixels up: focal loss (Lin et al. 2017, its softmax form) and online hard example
mining (OHEM, as MMSegmentation's OHEMPixelSampler), both with class weights, label smoothing and an ignore label.

`F.cross_entropy` gives one number per pixel but neither the modulating factor nor a pixel subset with PyTorch's
weighted-mean normalisation; smp's and torchvision's focal losses are sigmoid (one-vs-rest) ones without class
weights, so the few lines are written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from backbones.errors import ConfigError


@dataclass(frozen=True)
class Ohem:
    """Keep the labelled pixels whose predicted probability of their true class is below `thresh`, and at least the
    `min_kept` hardest pixels per image (all of them when an image has fewer)."""

    thresh: float = 0.7
    min_kept: int = 100_000

    @classmethod
    def parse(cls, value: Any, key: str) -> Ohem | None:
        """`key`'s config value: null / false (off), true (the defaults) or {thresh, min_kept}."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        example = f"{key}={{thresh:0.7,min_kept:100000}}"
        if not isinstance(value, Mapping) and not hasattr(value, "items"):
            raise ConfigError(f"{key}={value!r}: use null (off), true (thresh 0.7, min_kept 100000) or {example}")
        options = dict(value.items())
        unknown = sorted(set(options) - {"thresh", "min_kept"})
        if unknown:
            raise ConfigError(f"{key} has unknown option{'s' * (len(unknown) > 1)} {unknown}; it takes thresh and "
                              f"min_kept, e.g. {example}")
        ohem = cls(**{k: v for k, v in options.items() if v is not None})
        if isinstance(ohem.thresh, bool) or not isinstance(ohem.thresh, (int, float)) or not 0 < ohem.thresh <= 1:
            raise ConfigError(f"{key}.thresh={ohem.thresh!r} must be a probability in (0, 1], e.g. 0.7")
        if isinstance(ohem.min_kept, bool) or not isinstance(ohem.min_kept, int) or ohem.min_kept < 0:
            raise ConfigError(f"{key}.min_kept={ohem.min_kept!r} must be a whole number >= 0 (pixels per image)")
        return ohem

    def keep(self, prob: Tensor, valid: Tensor) -> Tensor:
        """(B, H, W) bool of the pixels to keep, from the true class's probability `prob` (B, H, W) and the labelled
        pixels `valid` (B, H, W). No device-to-host sync: the k-th smallest probability stays a tensor."""
        hard = prob < self.thresh
        k = min(self.min_kept * prob.shape[0], prob.numel())
        if k > 0:
            ranked = prob.masked_fill(~valid, 2.0)  # unlabelled pixels rank after every labelled one
            hard |= ranked <= ranked.flatten().kthvalue(k).values
        return hard & valid


def pixel_cross_entropy(logits: Tensor, target: Tensor, *, weight: Tensor | None, ignore_index: int,
                        label_smoothing: float = 0.0, focal_gamma: float = 0.0, ohem: Ohem | None = None) -> Tensor:
    """logits (B, K, H, W), target (B, H, W) -> 0-dim loss: per pixel PyTorch's cross-entropy (class `weight` (K,),
    `label_smoothing`), times (1 - p_t) ** focal_gamma (p_t: the true class's probability), averaged over the labelled
    pixels (those `ohem` keeps) weighted by their class's weight, as `F.cross_entropy`'s mean. With focal_gamma 0
    and no ohem it equals `F.cross_entropy`."""
    num_classes = logits.shape[1]
    logp = logits.float().log_softmax(1)
    valid = target != ignore_index
    safe = torch.where(valid, target, 0)  # any class index: these pixels are masked out below
    logp_t = logp.gather(1, safe.unsqueeze(1)).squeeze(1)  # (B, H, W)
    w_t = weight[safe] if weight is not None else torch.ones_like(logp_t)
    loss = -logp_t * w_t
    if label_smoothing:
        per_class = logp if weight is None else logp * weight.view(1, -1, *[1] * (logp.dim() - 2))
        loss = (1 - label_smoothing) * loss - label_smoothing / num_classes * per_class.sum(1)
    if focal_gamma:  # easy pixels (p_t near 1) count less; clamped so a p_t of exactly 1 has a finite gradient
        loss = loss * (-torch.expm1(logp_t)).clamp_min(1e-12).pow(focal_gamma)
    kept = valid if ohem is None else ohem.keep(logp_t.detach().exp(), valid)
    kept = kept.to(loss.dtype)
    return (loss * kept).sum() / (w_t * kept).sum()
