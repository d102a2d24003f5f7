"""Drawing detections: ground truth in thin green, predictions in a per-class colour labelled "name 0.87" (and
Mask R-CNN's masks filled in the same colour). The drawing itself is `tasks/pictures.py` (numpy and Pillow), shared
with predict.py on exported files; these take tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from .. import pictures
from ..drawing import to_uint8
from ..pictures import GT_COLOR, PALETTE, class_color
from .evaluation import binary_masks

__all__ = ["GT_COLOR", "PALETTE", "class_color", "detection_grid", "draw_detections", "draw_upscaled"]


def _arrays(image: Tensor, pred: Mapping[str, Tensor], target: Mapping[str, Tensor] | None) -> dict:
    """The tensors as `pictures.draw_upscaled`'s numpy arguments."""
    out = {"image": to_uint8(image).permute(1, 2, 0).numpy(),
           **{k: pred[k].detach().cpu().numpy() for k in ("boxes", "labels", "scores")},
           "masks": binary_masks(pred["masks"].cpu()).numpy() if "masks" in pred else None,
           "gt_boxes": target["boxes"].detach().cpu().numpy() if target is not None else None}
    return out


def draw_detections(image: Tensor, pred: Mapping[str, Tensor], target: Mapping[str, Tensor] | None,
                    class_names: Sequence[str], score_threshold: float = 0.3) -> Tensor:
    """(3, H, W) float [0, 1] image -> (3, H, W) uint8 with the GT boxes (N, 4) and the predictions (M, 4)
    scoring at least `score_threshold`; boxes xyxy pixels, label l is `class_names[l - 1]`. Predicted "masks"
    ((M, 1, H, W) probabilities, binarised at 0.5) are filled in their box's colour, half transparent."""
    return draw_upscaled(image, pred, target, class_names, score_threshold, upscale_to=None)


def draw_upscaled(image: Tensor, pred: Mapping[str, Tensor], target: Mapping[str, Tensor] | None,
                  class_names: Sequence[str], score_threshold: float = 0.3, upscale_to: int | None = 256) -> Tensor:
    """`draw_detections` on the image enlarged (nearest, boxes scaled alike) to `upscale_to` on its longer side
    when it is smaller, so that labels on small images stay readable: (3, H', W') uint8."""
    drawn = pictures.draw_upscaled(**_arrays(image, pred, target), class_names=class_names,
                                   score_threshold=score_threshold, upscale_to=upscale_to)
    return torch.from_numpy(np.ascontiguousarray(drawn)).permute(2, 0, 1)


def detection_grid(images: Sequence[Tensor], preds: Sequence[Mapping[str, Tensor]],
                   targets: Sequence[Mapping[str, Tensor]] | None, class_names: Sequence[str],
                   score_threshold: float = 0.3, max_images: int = 4, upscale_to: int | None = 256) -> Tensor:
    """The first `max_images` images, drawn by `draw_detections`, side by side: (3, H', W') uint8.

    Each is drawn by `draw_upscaled` (small images enlarged to `upscale_to`); sizes are padded to the largest.
    """
    if not len(images):
        raise ValueError("detection_grid needs at least one image")
    drawn = [draw_upscaled(image, preds[i], targets[i] if targets is not None else None, class_names,
                           score_threshold, upscale_to) for i, image in enumerate(images[:max_images])]
    height, width = max(d.shape[-2] for d in drawn), max(d.shape[-1] for d in drawn)
    drawn = [F.pad(d, (0, width - d.shape[-1], 0, height - d.shape[-2])) for d in drawn]
    return make_grid(drawn, nrow=len(drawn), padding=2)

