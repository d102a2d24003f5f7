"""Grad-CAM (Selvaraju et al. 2017): where a classifier or a segmenter looked for a class. The gradient of the class
score with respect to one feature level of the body, averaged over the level's positions, weights its channels;
the weighted sum, rectified, upsampled to the input and scaled to [0, 1] is the map.

Class scores: classification, the class logit; segmentation, the class logit summed over the pixels predicted as
that class (all pixels when there are none), as in the segmentation variant of Vinogradova et al. 2020.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .multihead import MultiHeadModel


def default_level(model: MultiHeadModel, head: str) -> str:
    """The coarsest level the head reads (a classifier's `in_features`), else the body's coarsest level."""
    shapes = model.body.output_shape()
    levels = list(getattr(model.heads[head], "in_features", None) or shapes)
    return max(levels, key=lambda name: shapes[name].stride)


def grad_cam(model: MultiHeadModel, images: Tensor, targets: Sequence[int], head: str | None = None,
             level: str | None = None) -> Tensor:
    """(B, 3, H, W) images in [0, 1] and one class index per image -> (B, H, W) maps in [0, 1] (all zeros where
    the class has no positive evidence). The model is used as it is (eval mode); gradients are computed even for
    frozen parameters' inputs, under `torch.inference_mode(False)`."""
    head = head or next(iter(model.heads))
    kind = model.heads[head].kind
    if kind not in ("classification", "segmentation"):
        raise ValueError(f"Grad-CAM is built for classification and segmentation heads, not {kind}")
    level = level or default_level(model, head)
    captured: dict[str, Tensor] = {}

    def keep(_module: object, _inputs: object, feats: dict[str, Tensor]) -> None:
        if level not in feats:
            raise ValueError(f"explain level {level!r} is not among the body's levels {list(feats)}")
        feats[level].retain_grad()
        captured["feats"] = feats[level]

    with torch.inference_mode(False), torch.enable_grad():
        x = images.clone().requires_grad_(True)  # a graph through the body even when its parameters are frozen
        hook = model.body.register_forward_hook(keep)
        try:
            logits = model(x)[head]
        finally:
            hook.remove()
        index = torch.as_tensor(list(targets), device=logits.device)
        rows = torch.arange(len(index), device=logits.device)
        if kind == "classification":
            score = logits[rows, index].sum()
        else:
            chosen = logits[rows, index]  # (B, H, W)
            where = logits.argmax(1) == index.view(-1, 1, 1)
            where = torch.where(where.flatten(1).any(1).view(-1, 1, 1), where, torch.ones_like(where))
            score = (chosen * where).sum()
        model.zero_grad(set_to_none=True)
        score.backward()
        feats, grads = captured["feats"].detach(), captured["feats"].grad.detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * feats).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).clamp(0, 1)
