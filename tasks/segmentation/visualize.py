"""Drawing segmentations: per image, the picture, the true mask and the predicted mask overlaid side by side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from data.class_names import BACKGROUND_NAMES, background_classes

from ..drawing import to_uint8
from ..pictures import class_colors, overlay_classes

__all__ = ["BACKGROUND_NAMES", "class_colors", "overlay_mask", "segmentation_grid"]



def overlay_mask(image: Tensor, mask: Tensor, num_classes: int, skip: Sequence[int] = (),
                 alpha: float = 0.55) -> Tensor:
    """(3, H, W) uint8 image and (H, W) labels -> (3, H, W) uint8 with each class in `range(num_classes)` but
    `skip` painted in its colour; other values (the ignore label) stay unpainted (`pictures.overlay_classes`)."""
    out = overlay_classes(image.cpu().permute(1, 2, 0).numpy(), mask.cpu().numpy(), num_classes, skip, alpha)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)


def segmentation_grid(images: Tensor, preds: Tensor, targets: Tensor | None, class_names: Sequence[str],
                      max_images: int = 4, upscale_to: int | None = 192) -> Tensor:
    """Rows of [image | truth overlay | prediction overlay] for the first `max_images`: (3, H', W') uint8.

    images (B, 3, H, W) RGB in [0, 1] (as the data pipeline gives them); preds, targets (B, H, W) labels. A class
    named like background is not painted; small images are enlarged (nearest) to `upscale_to` on the longer side.
    """
    num_classes = len(class_names)
    skip = background_classes(class_names)
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
