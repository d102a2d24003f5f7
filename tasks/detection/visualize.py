"""Drawing detections: ground truth in thin green, predictions in a per-class colour labelled "name 0.87" (and
Mask R-CNN's masks filled in the same colour)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import torch
import torch.nn.functional as F
from PIL import ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from ..drawing import to_uint8
from .evaluation import binary_masks

GT_COLOR = (0, 255, 0)
# bright, mutually distinct and not green (that is the ground truth), so black label text reads on them all
PALETTE = [(255, 60, 60), (60, 150, 255), (255, 165, 0), (255, 80, 255), (0, 225, 225), (255, 235, 0),
           (175, 120, 255), (255, 150, 180), (200, 140, 80), (150, 200, 255)]


def class_color(label: int) -> tuple[int, int, int]:
    """The box colour of contiguous label `label` (1..K)."""
    return PALETTE[(label - 1) % len(PALETTE)]


@cache
def _font_file() -> str | None:
    """DejaVu Sans if Pillow finds it among the system fonts: `font_size` needs a TrueType file. Without it
    draw_bounding_boxes uses Pillow's built-in font (10 px), still readable on the upscaled images."""
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
    except OSError:
        return None
    return "DejaVuSans.ttf"


def draw_detections(image: Tensor, pred: Mapping[str, Tensor], target: Mapping[str, Tensor] | None,
                    class_names: Sequence[str], score_threshold: float = 0.3) -> Tensor:
    """(3, H, W) float [0, 1] image -> (3, H, W) uint8 with the GT boxes (N, 4) and the predictions (M, 4)
    scoring at least `score_threshold`; boxes xyxy pixels, label l is `class_names[l - 1]`. Predicted "masks"
    ((M, 1, H, W) probabilities, binarised at 0.5) are filled in their box's colour, half transparent."""
    out = to_uint8(image)
    keep = pred["scores"].detach().cpu() >= score_threshold
    if "masks" in pred and keep.any():  # under the boxes, so the outlines and labels stay on top
        masks = binary_masks(pred["masks"].cpu()[keep])
        colors = [class_color(lbl) for lbl in pred["labels"].detach().cpu()[keep].tolist()]
        out = draw_segmentation_masks(out, masks, alpha=0.45, colors=colors)
    if target is not None and len(target["boxes"]):
        out = draw_bounding_boxes(out, target["boxes"].detach().cpu(), colors=GT_COLOR, width=1)
    if keep.any():
        boxes, labels, scores = (pred[k].detach().cpu()[keep] for k in ("boxes", "labels", "scores"))
        labels, scores = labels.tolist(), scores.tolist()
        names = [class_names[lbl - 1] if 1 <= lbl <= len(class_names) else str(lbl) for lbl in labels]
        font = _font_file()
        out = draw_bounding_boxes(
            out, boxes, labels=[f"{n} {s:.2f}" for n, s in zip(names, scores)],
            colors=[class_color(lbl) for lbl in labels], width=2, font=font,
            # fill_labels: black text on the box colour reads on any image
            font_size=max(11, out.shape[-2] // 22) if font else None, fill_labels=True)
    return out


def _scaled(item: Mapping[str, Tensor], factor: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
    """Boxes times `factor`, masks (M, 1, H, W) resized (nearest) to `size`."""
    out = {**item, "boxes": item["boxes"].detach().cpu() * factor}
    if "masks" in item and item["masks"].dim() == 4 and len(item["masks"]):
        out["masks"] = F.interpolate(item["masks"].detach().cpu().float(), size=size, mode="nearest")
    return out


def draw_upscaled(image: Tensor, pred: Mapping[str, Tensor], target: Mapping[str, Tensor] | None,
                  class_names: Sequence[str], score_threshold: float = 0.3, upscale_to: int | None = 256) -> Tensor:
    """`draw_detections` on the image enlarged (nearest, boxes scaled alike) to `upscale_to` on its longer side
    when it is smaller, so that labels on small images stay readable: (3, H', W') uint8."""
    h, w = image.shape[-2:]
    if upscale_to and max(h, w) < upscale_to:
        size = (round(h * upscale_to / max(h, w)), round(w * upscale_to / max(h, w)))
        factor = torch.tensor([size[1] / w, size[0] / h] * 2)
        image = F.interpolate(image[None].detach().cpu(), size=size, mode="nearest")[0]
        pred, target = _scaled(pred, factor, size), None if target is None else _scaled(target, factor, size)
    return draw_detections(image, pred, target, class_names, score_threshold)


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

