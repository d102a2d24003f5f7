"""Drawing segmentations: per image, the picture, the true mask and the predicted mask overlaid side by side."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_segmentation_masks, make_grid

from ..drawing import to_uint8

BACKGROUND_NAMES = ("background", "_background_", "bg", "__background__")


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct bright colours for labels 0..K-1 (golden-ratio hues, as in many label tools)."""
    colors = []
    for k in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 1.0)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def overlay_mask(image: Tensor, mask: Tensor, num_classes: int, skip: Sequence[int] = (),
                 alpha: float = 0.55) -> Tensor:
    """(3, H, W) uint8 image and (H, W) labels -> (3, H, W) uint8 with each class in `range(num_classes)` but
    `skip` painted in its colour; other values (the ignore label) stay unpainted."""
    labels = [k for k in range(num_classes) if k not in skip]
    masks = mask.cpu()[None] == torch.tensor(labels).view(-1, 1, 1)  # (L, H, W) bool
    keep = masks.flatten(1).any(1)
    if not keep.any():
        return image
    colors = class_colors(num_classes)
    return draw_segmentation_masks(image, masks[keep], alpha=alpha,
                                   colors=[colors[k] for k, k_in in zip(labels, keep.tolist()) if k_in])


def segmentation_grid(images: Tensor, preds: Tensor, targets: Tensor | None, class_names: Sequence[str],
                      max_images: int = 4, upscale_to: int | None = 192) -> Tensor:
    """Rows of [image | truth overlay | prediction overlay] for the first `max_images`: (3, H', W') uint8.

    images (B, 3, H, W) RGB in [0, 1] (as the data pipeline gives them); preds, targets (B, H, W) labels. A class
    named like background is not painted; small images are enlarged (nearest) to `upscale_to` on the longer side.
    """
    num_classes = len(class_names)
    skip = [k for k, name in enumerate(class_names) if name.lower() in BACKGROUND_NAMES]
    tiles = []
    for i in range(min(max_images, len(images))):
        image, pred = to_uint8(images[i]), preds[i].cpu()
        target = targets[i].cpu() if targets is not None else None
        h, w = image.shape[-2:]
        if upscale_to and max(h, w) < upscale_to:
            size = (round(h * upscale_to / max(h, w)), round(w * upscale_to / max(h, w)))
            image = F.interpolate(image[None], size=size, mode="nearest")[0]
            pred = F.interpolate(pred[None, None].float(), size=size, mode="nearest")[0, 0].long()
            if target is not None:
                target = F.interpolate(target[None, None].float(), size=size, mode="nearest")[0, 0].long()
        tiles.append(image)
        if target is not None:
            tiles.append(overlay_mask(image, target, num_classes, skip))
        tiles.append(overlay_mask(image, pred, num_classes, skip))
    return make_grid(tiles, nrow=3 if targets is not None else 2, padding=2)
