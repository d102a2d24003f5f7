"""Grad-CAM (Selvaraju et al. 2017): where a classifier or a segmenter looked for a class. The gradient of the class
score with respect to one feature level of the body, averaged over the level's positions, weights its channels;
the weighted sum, rectified, upsampled to the input and scaled to [0, 1] is the map.

Class scores: classification, the class logit; segmentation, the class logit summed over the pixels predicted as
that class (all pixels when there are none), as in the segmentation variant of Vinogradova et al. 2020; detection,
one detection's score (softmax over its RoI's class logits), read on the FPN level its RoI was pooled from (the
detector's own level mapper), so the map shows what that box's class decision looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList

from .multihead import MultiHeadModel

T = TypeVar("T")


def default_level(model: MultiHeadModel, head: str) -> str:
    """The coarsest level the head reads (a classifier's `in_features`), else the body's coarsest level."""
    shapes = model.body.output_shape()
    levels = list(getattr(model.heads[head], "in_features", None) or shapes)
    return max(levels, key=lambda name: shapes[name].stride)


@contextmanager
def captured_levels(model: MultiHeadModel, levels: Sequence[str] | None) -> Iterator[dict[str, Tensor]]:
    """While open, each forward's body output at `levels` (None: every level) is kept, with its gradient retained,
    in the yielded dict; a level the body lacks is a ValueError naming the body's levels."""
    captured: dict[str, Tensor] = {}

    def keep(_module: object, _inputs: object, feats: dict[str, Tensor]) -> None:
        for level in levels or feats:
            if level not in feats:
                raise ValueError(f"explain level {level!r} is not among the body's levels {list(feats)}")
            feats[level].retain_grad()
            captured[level] = feats[level]

    hook = model.body.register_forward_hook(keep)
    try:
        yield captured
    finally:
        hook.remove()


def _backward(model: MultiHeadModel, score: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    score.backward()


def _cam(feats: Tensor, grads: Tensor, elementwise: bool = False) -> Tensor:
    """(B, C, h, w) features and their gradients -> (B, 1, h, w) rectified Grad-CAM, not yet scaled; `elementwise`:
    HiResCAM (Draelos & Carin 2020), each position's own gradient instead of the level's mean."""
    weights = grads if elementwise else grads.mean(dim=(2, 3), keepdim=True)  # (B, C, h, w) or (B, C, 1, 1)
    return F.relu((weights * feats).sum(1, keepdim=True))


def _unit(cam: Tensor) -> Tensor:
    """(B, H, W) -> each map divided by its peak, in [0, 1] (all zeros stay zeros)."""
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).clamp(0, 1)


def _differentiable(run: Callable[[], T]) -> T:
    """`run()` with autograd on, even inside predict.py's inference mode."""
    with torch.inference_mode(False), torch.enable_grad():
        return run()


def grad_cam(model: MultiHeadModel, images: Tensor, targets: Sequence[int], head: str | None = None,
             level: str | None = None) -> Tensor:
    """(B, 3, H, W) images in [0, 1] and one class index per image -> (B, H, W) maps in [0, 1] (all zeros where
    the class has no positive evidence). The model is used as it is (eval mode); gradients are computed even for
    frozen parameters' inputs, under `torch.inference_mode(False)`. Classification and segmentation heads."""
    head = head or next(iter(model.heads))
    kind = model.heads[head].kind
    if kind not in ("classification", "segmentation"):
        raise ValueError(f"grad_cam is built for classification and segmentation heads, not {kind}; "
                         "detection_grad_cam explains one detection")
    level = level or default_level(model, head)

    def run() -> Tensor:
        x = images.clone().requires_grad_(True)  # a graph through the body even when its parameters are frozen
        with captured_levels(model, [level]) as captured:
            logits = model(x)[head]
        index = torch.as_tensor(list(targets), device=logits.device)
        rows = torch.arange(len(index), device=logits.device)
        if kind == "classification":
            score = logits[rows, index].sum()
        else:
            chosen = logits[rows, index]  # (B, H, W)
            where = logits.argmax(1) == index.view(-1, 1, 1)
            where = torch.where(where.flatten(1).any(1).view(-1, 1, 1), where, torch.ones_like(where))
            score = (chosen * where).sum()
        _backward(model, score)
        return _cam(captured[level].detach(), captured[level].grad.detach())

    cam = F.interpolate(_differentiable(run), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _unit(cam)


@dataclass
class ExplainedDetection:
    """One detection and its Grad-CAM: `cam` (H, W) in [0, 1] over the input image; `box` xyxy in its pixels;
    `label` 1..K (0 is background); `level` the body level the map was read on."""

    cam: Tensor
    box: Tensor
    label: int
    score: float
    level: str


def roi_level(model: MultiHeadModel, head: str, box: Tensor) -> str:
    """The body level the detector's RoI pooling reads for `box` (xyxy in the resized image's pixels): the FPN
    level mapper's choice (Lin et al. 2017, eq. 1) when it pools several levels, else its one level."""
    pooler = model.heads[head].roi_heads.box_roi_pool
    names = list(pooler.featmap_names)
    if len(names) == 1:
        return names[0]
    if pooler.map_levels is None:  # set up on the first forward from the levels' strides
        raise RuntimeError("the RoI pooler has not run yet")
    index = int(pooler.map_levels([box[None]])[0])
    return names[index]


def detection_grad_cam(model: MultiHeadModel, image: Tensor, class_index: int | None = None,
                       level: str | None = None, head: str | None = None) -> ExplainedDetection | None:
    """Grad-CAM of the best detection in `image` ((3, H, W) in [0, 1]): the highest-scoring one, or of class
    `class_index` (1..K) when given; None when there is no such detection. The map is read on `level`, or on
    the level the detector pooled that box's RoI from, and brought back through the detector's resize and padding
    to the image's own pixels."""
    head = head or model.rcnn_name
    if head is None or model.heads[head].kind != "detection":
        raise ValueError("detection_grad_cam needs a model with a detection (R-CNN) head")
    resized: list[ImageList] = []
    hook = model.heads[head].transform.register_forward_hook(lambda _m, _i, out: resized.append(out[0]))

    def run() -> ExplainedDetection | None:
        x = image.clone().requires_grad_(True)
        with captured_levels(model, None) as captured:
            detections = model([x])[head][0]
        labels, scores = detections["labels"], detections["scores"].detach()
        candidates = labels == class_index if class_index is not None else torch.ones_like(labels, dtype=torch.bool)
        if not bool(candidates.any()):
            return None
        best = int(torch.where(candidates, scores, scores.new_tensor(-1.0)).argmax())
        box = detections["boxes"][best].detach()
        (h, w), padded = resized[0].image_sizes[0], resized[0].tensors.shape[-2:]
        scale = box.new_tensor([w / image.shape[-1], h / image.shape[-2]] * 2)  # the detector's resize, per axis
        name = level or roi_level(model, head, box * scale)
        if name not in captured:
            raise ValueError(f"explain level {name!r} is not among the body's levels {list(captured)}")
        _backward(model, detections["scores"][best])
        # a detection's score reads its RoI alone: the gradient is zero outside the box, and the level-mean weights
        # of Grad-CAM then paint whatever shares the box's channels (the background, often); HiResCAM keeps each
        # position's own gradient, so the map shows which parts of the box the decision rests on
        cam = _cam(captured[name].detach(), captured[name].grad.detach(), elementwise=True)
        cam = F.interpolate(cam, size=tuple(padded), mode="bilinear", align_corners=False)[..., :h, :w]
        cam = F.interpolate(cam, size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        return ExplainedDetection(_unit(cam)[0], box, int(labels[best]), float(scores[best]), name)

    try:
        return _differentiable(run)
    finally:
        hook.remove()
