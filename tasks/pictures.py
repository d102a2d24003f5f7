"""Pictures of predictions with numpy and Pillow alone: class masks over an image, boxes with class names and scores,
instance masks. The one drawer of every path: validation grids and predict.py (tensors are converted at the
torch side, `tasks/detection/visualize.py`, `tasks/segmentation/visualize.py`) and predict.py on an exported file
(`tasks/runtime/`), which imports no torch, so the two give the same pictures.

Images are (H, W, 3) uint8 arrays; boxes (M, 4) xyxy pixels; labels 1..K for detections, 0..K-1 for class masks.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GT_COLOR = (0, 255, 0)
# bright, mutually distinct and not green (that is the ground truth), so black label text reads on them all
PALETTE = [(255, 60, 60), (60, 150, 255), (255, 165, 0), (255, 80, 255), (0, 225, 225), (255, 235, 0),
           (175, 120, 255), (255, 150, 180), (200, 140, 80), (150, 200, 255)]
MASK_ALPHA, CLASS_ALPHA = 0.45, 0.55
BOX_WIDTH = 2


def class_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct bright colours for class-mask labels 0..K-1 (golden-ratio hues, as in many label tools)."""
    colors = []
    for k in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 1.0)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def class_color(label: int) -> tuple[int, int, int]:
    """The box colour of detection label `label` (1..K)."""
    return PALETTE[(label - 1) % len(PALETTE)]


@cache
def font_file() -> str | None:
    """DejaVu Sans if Pillow finds it among the system fonts (a TrueType file scales with the picture); None:
    Pillow's built-in font (10 px), still readable on the upscaled images."""
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
    except OSError:
        return None
    return "DejaVuSans.ttf"


def label_font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font of class names on a picture `height` px high."""
    name = font_file()
    return ImageFont.truetype(name, max(11, height // 22)) if name else ImageFont.load_default()


def paint(image: np.ndarray, masks: np.ndarray, colors: Sequence[tuple[int, int, int]], alpha: float) -> np.ndarray:
    """Blend each (H, W) bool mask of (M, H, W) `masks` in its colour over `image` ((H, W, 3) uint8): alpha x colour
    + (1 - alpha) x image where a mask is set (a later mask wins where they overlap), as torchvision's
    draw_segmentation_masks (float32 arithmetic, truncated to uint8)."""
    if not len(masks):
        return image
    drawn = image.copy()
    for mask, color in zip(masks, colors):
        drawn[mask] = color
    out = image.astype(np.float32) * np.float32(1 - alpha) + drawn.astype(np.float32) * np.float32(alpha)
    return out.astype(np.uint8)


def overlay_classes(image: np.ndarray, mask: np.ndarray, num_classes: int, skip: Sequence[int] = (),
                    alpha: float = CLASS_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 image and (H, W) class labels -> the image with each class in `range(num_classes)` but
    `skip` painted in its `class_colors` colour; other values (the ignore label) stay unpainted."""
    labels = [k for k in range(num_classes) if k not in skip]
    masks = mask[None] == np.asarray(labels, dtype=mask.dtype).reshape(-1, 1, 1)
    keep = masks.reshape(len(labels), -1).any(1)
    colors = class_colors(num_classes)
    return paint(image, masks[keep], [colors[k] for k, k_in in zip(labels, keep) if k_in], alpha)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, colors: Sequence[tuple[int, int, int]],
               texts: Sequence[str] | None = None, width: int = BOX_WIDTH) -> np.ndarray:
    """Box outlines `width` px wide (xyxy truncated to whole pixels) and, with `texts`, black text on a label in the
    box colour at each box's top left, as torchvision's draw_bounding_boxes(fill_labels=True)."""
    if not len(boxes):
        return image
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    font = label_font(image.shape[0]) if texts is not None else None
    for i, box in enumerate(np.asarray(boxes).astype(np.int64).tolist()):
        draw.rectangle(box, width=width, outline=tuple(colors[i]))
        if texts is not None:
            margin = width + 1
            left, top, right, bottom = draw.textbbox((box[0] + margin, box[1] + margin), texts[i], font=font)
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=tuple(colors[i]))
            draw.text((box[0] + margin, box[1] + margin), texts[i], fill=(0, 0, 0), font=font)
    return np.array(picture)  # a writable copy


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                    class_names: Sequence[str], masks: np.ndarray | None = None, score_threshold: float = 0.3,
                    gt_boxes: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 with the predictions scoring at least `score_threshold`: instance `masks` ((M, H, W) bool)
    filled half transparent under the boxes, then the ground-truth boxes (green, 1 px), then the boxes in their
    label's colour with "name score"; label l is `class_names[l - 1]`."""
    keep = np.asarray(scores) >= score_threshold
    labels = np.asarray(labels)[keep].tolist()
    colors = [class_color(lbl) for lbl in labels]
    out = image
    if masks is not None and keep.any():  # under the boxes, so the outlines and labels stay on top
        out = paint(out, np.asarray(masks)[keep], colors, MASK_ALPHA)
    if gt_boxes is not None and len(gt_boxes):
        out = draw_boxes(out, gt_boxes, [GT_COLOR] * len(gt_boxes), width=1)
    names = [class_names[lbl - 1] if 1 <= lbl <= len(class_names) else str(lbl) for lbl in labels]
    texts = [f"{n} {s:.2f}" for n, s in zip(names, np.asarray(scores)[keep].tolist())]
    return draw_boxes(out, np.asarray(boxes)[keep], colors, texts)


def nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each output pixel of a nearest-neighbour resize, as torch's F.interpolate(mode="nearest")
    computes it (float32 scale, floor)."""
    scale = np.float32(size_in) / np.float32(size_out)
    return np.minimum(np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64), size_in - 1)


def upscale_size(height: int, width: int, upscale_to: int | None) -> tuple[int, int] | None:
    """The enlarged (H', W') of a picture whose longer side is under `upscale_to`, else None."""
    if not upscale_to or max(height, width) >= upscale_to:
        return None
    return round(height * upscale_to / max(height, width)), round(width * upscale_to / max(height, width))


def draw_upscaled(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                  class_names: Sequence[str], masks: np.ndarray | None = None, score_threshold: float = 0.3,
                  gt_boxes: np.ndarray | None = None, upscale_to: int | None = 256) -> np.ndarray:
    """`draw_detections` on the image enlarged (nearest; boxes scaled, masks resized alike) to `upscale_to` on its
    longer side when it is smaller, so that labels on small images stay readable."""
    size = upscale_size(*image.shape[:2], upscale_to)
    if size is not None:
        h, w = image.shape[:2]
        rows, cols = nearest_indices(h, size[0]), nearest_indices(w, size[1])
        image = image[rows][:, cols]
        factor = np.asarray([size[1] / w, size[0] / h] * 2, dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32) * factor
        gt_boxes = None if gt_boxes is None else np.asarray(gt_boxes, dtype=np.float32) * factor
        masks = None if masks is None else np.asarray(masks)[:, rows][:, :, cols]
    return draw_detections(image, boxes, labels, scores, class_names, masks, score_threshold, gt_boxes)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """(H, W, 3) uint8 -> a copy with `text` in white on a dark band at its top left (wrapped to the width), at
    the size class names are written."""
    picture = Image.fromarray(image)
    font = label_font(picture.height)
    size = max(11, picture.height // 22)
    draw = ImageDraw.Draw(picture, "RGBA")
    pad = 2
    lines = _wrap(text.split(" "), lambda s: draw.textlength(s, font=font), picture.width - 2 * pad)
    line_height = size + 2
    width = max(draw.textlength(line, font=font) for line in lines)
    draw.rectangle((0, 0, min(picture.width, width + 2 * pad), 2 * pad + line_height * len(lines)),
                   fill=(0, 0, 0, 170))
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_height), line, fill=(255, 255, 255), font=font)
    return np.array(picture)


def _wrap(words: Sequence[str], length: Callable[[str], float], width: float) -> list[str]:
    """Words -> lines no longer than `width` by `length(line)` (a word longer than that alone on its line)."""
    lines: list[str] = []
    for word in words:
        if lines and length(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def jet(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8, blue (0) through green and yellow to red (1)."""
    v = np.clip(values, 0, 1)[..., None] * 4
    rgb = np.clip(1.5 - np.abs(v - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).round().astype(np.uint8)


def heatmap(image: np.ndarray, values: np.ndarray, alpha: float = 0.5, upscale_to: int | None = 256) -> np.ndarray:
    """(H, W, 3) uint8 image with (H, W) `values` in [0, 1] blended over it in `jet` colours (weight `alpha`),
    enlarged (nearest) to `upscale_to` on the longer side when smaller."""
    size = upscale_size(*image.shape[:2], upscale_to)
    if size is not None:
        rows, cols = nearest_indices(image.shape[0], size[0]), nearest_indices(image.shape[1], size[1])
        image, values = image[rows][:, cols], values[rows][:, cols]
    out = image.astype(np.float32) * np.float32(1 - alpha) + jet(values).astype(np.float32) * np.float32(alpha)
    return out.round().astype(np.uint8)
