"""COCO boxes: one box's check (inside the image, at least MIN_BOX_SIZE px) and a file's boxes that look like
[x1, y1, x2, y2] instead of COCO's [x, y, width, height]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

BOX_TOLERANCE = 1.0  # pixels a box may exceed the image by (rounding in exporters) before it is an error
MIN_BOX_SIZE = 1.0  # pixels: a narrower or lower box is an annotation slip, not an object a detector can learn
XYXY_SHARE = 0.9  # share of boxes that must fit as xyxy before a file is said to be in xyxy


def is_bbox(bbox: Any) -> bool:
    """Four finite numbers."""
    return isinstance(bbox, list) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)


def _outside(bbox: list[float], width: int, height: int) -> bool:
    x, y, w, h = bbox
    t = BOX_TOLERANCE
    return x < -t or y < -t or x + w > width + t or y + h > height + t


def _fits_xyxy(bbox: list[float], width: int, height: int) -> bool:
    x1, y1, x2, y2 = bbox
    t = BOX_TOLERANCE
    return x2 - x1 >= MIN_BOX_SIZE and y2 - y1 >= MIN_BOX_SIZE and x1 >= -t and y1 >= -t and \
        x2 <= width + t and y2 <= height + t


def check_box(bbox: Any, width: int, height: int) -> tuple[list[float] | None, str]:
    """COCO [x, y, w, h] -> ([x0, y0, x1, y1] clamped to the image, "") or (None, what is wrong)."""
    if not is_bbox(bbox):
        return None, f"bbox {bbox!r} is not [x, y, width, height] (four numbers)"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return None, f"bbox {bbox} has zero or negative width/height"
    if _outside(bbox, width, height):
        hint = " (as [x1, y1, x2, y2] it would fit: are the boxes corner coordinates?)" \
            if _fits_xyxy(bbox, width, height) else ""
        return None, f"bbox {bbox} (x, y, w, h) lies outside the {width}x{height} image{hint}"
    if w < MIN_BOX_SIZE or h < MIN_BOX_SIZE:
        return None, f"bbox {bbox} is {w:g} x {h:g} px; a box under {MIN_BOX_SIZE:g} px in width or height is not " \
                     "an object a detector can learn (an annotation slip)"
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 - x0 < MIN_BOX_SIZE or y1 - y0 < MIN_BOX_SIZE:
        return None, f"bbox {bbox} is under {MIN_BOX_SIZE:g} px in width or height once clamped to the " \
                     f"{width}x{height} image"
    return [x0, y0, x1, y1], ""


def xyxy_pattern(boxes: Sequence[tuple[int, list[float], int, int]]) -> str | None:
    """What is wrong when a file's boxes `(annotation id, bbox, image width, image height)` look like
    [x1, y1, x2, y2]: some lie outside their image as [x, y, w, h], and nearly all of those (and of all boxes)
    are valid corner boxes inside it (which xywh boxes spread over an image rarely are: it needs w > x and
    h > y). None when they do not."""
    outside = [b for b in boxes if _outside(*b[1:])]
    if not outside:
        return None
    fit_outside = [b for b in outside if _fits_xyxy(*b[1:])]
    fit_all = sum(_fits_xyxy(*b[1:]) for b in boxes)
    if len(fit_outside) < XYXY_SHARE * len(outside) or fit_all < XYXY_SHARE * len(boxes):
        return None
    aid, bbox, width, height = fit_outside[0]
    return (f"{len(outside)} of {len(boxes)} boxes lie outside their image as [x, y, width, height] but "
            f"{fit_all} fit it as corners (e.g. annotation {aid}: bbox {bbox} on a {width}x{height} image): these "
            "look like [x1, y1, x2, y2]; COCO bbox is [x, y, width, height]. Convert each with [x1, y1, x2 - x1, "
            "y2 - y1] (torchvision.ops.box_convert(boxes, 'xyxy', 'xywh')) and write the json again; "
            "data.drop_bad_boxes=true would only hide this (it drops the boxes outside and keeps the wrong rest)")
