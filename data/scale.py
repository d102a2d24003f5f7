"""Image sizes against the data: the configured sizes are validated, and a size far from the data's own (from
image headers or the COCO json) is said at setup, once, with the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import RAISE, DataError, Problems

MIN_SIZE = 32  # the deepest backbone stride: a smaller input has no c5 pixel
FAR = 2.0  # a configured size more than FAR times above or below the data's own is said at setup


def validate_size(field: str, value: Any, optional: bool = False) -> int | None:
    """`value` as a whole number of pixels >= MIN_SIZE (or None when `optional`); else DataError naming `field`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise DataError(f"{field}={value!r} is not a whole number of pixels; pass e.g. {field}=224"
                        + (f" (or {field}=null)" if optional else ""))
    if value < MIN_SIZE:
        raise DataError(f"{field}={int(value)} is too small: the backbones' deepest feature map has stride "
                        f"{MIN_SIZE}, so images need at least {MIN_SIZE} px; pass e.g. {field}=224, or the data's "
                        "own size")
    return int(value)


def median_short_side(sizes: Sequence[tuple[int, int]]) -> int | None:
    """Median of min(width, height), or None without sizes."""
    return int(np.median([min(s) for s in sizes])) if sizes else None


def to_multiple(size: float, divisor: int) -> int:
    """`size` rounded down to a multiple of `divisor` (a crop that fits), at least MIN_SIZE."""
    d = max(divisor, 1)
    return max(MIN_SIZE, int(size // d) * d)


def _far(size: float, reference: float) -> float | None:
    """size / reference when it is outside [1/FAR, FAR], else None."""
    ratio = size / reference
    return ratio if not 1 / FAR <= ratio <= FAR else None


def _scaled(ratio: float) -> str:
    """"upscaled about 7x" / "downscaled about 4x"."""
    return f"{'up' if ratio > 1 else 'down'}scaled about {max(ratio, 1 / ratio):.2g}x"


def _data(median: int, count: int) -> str:
    return f"the median short side of the train images ({median} px, from {count} image{'s' * (count != 1)})"


def check_classification_size(image_size: int, sizes: Sequence[tuple[int, int]], problems: Problems = RAISE) -> None:
    """data.image_size (train crops and eval size) far from the train images' own size."""
    median = median_short_side(sizes)
    if median and (ratio := _far(image_size, median)):
        problems.warning("image size", f"data.image_size={image_size} is {ratio:.2g}x {_data(median, len(sizes))}: "
                                       f"every image is {_scaled(ratio)} for training and "
                                       f"evaluation; data.image_size={to_multiple(median, 32)} trains "
                                       f"at the data's own size (keep {image_size} if e.g. pretrained weights want it)")


def check_detection_size(min_size: int | Sequence[int] | None, sizes: Sequence[tuple[int, int]],
                         problems: Problems = RAISE) -> None:
    """task.model.min_size (the detector's resize of the short side; evaluation uses the last) far from the
    train images' own size."""
    median = median_short_side(sizes)
    if min_size is None or not median:
        return
    sizes_list = [int(s) for s in (min_size if isinstance(min_size, Sequence) else [min_size])]
    if sizes_list and (ratio := _far(sizes_list[-1], median)):
        problems.warning("image size", f"task.model.min_size={sizes_list} resizes the short side of every image to "
                                       f"{sizes_list[-1]} px for evaluation, {ratio:.2g}x {_data(median, len(sizes))}; "
                                       f"task.model.min_size=[{median}] (and task.model.max_size near the long side) "
                                       "detects at the data's own size")


def check_segmentation_sizes(image_size: int | None, eval_size: int | None, sizes: Sequence[tuple[int, int]],
                             problems: Problems = RAISE) -> None:
    """data.eval_size (the base size of training and evaluation) far from the data's own size, and the training
    crop data.image_size far from the base size (a crop chosen for image_size=null is the base size)."""
    median = median_short_side(sizes)
    if not median:
        return
    if eval_size is not None and (ratio := _far(eval_size, median)):
        problems.warning("image size", f"data.eval_size={eval_size} is {ratio:.2g}x {_data(median, len(sizes))}: "
                                       f"images are {_scaled(ratio)} for training and "
                                       "evaluation; data.eval_size=null trains and evaluates at the "
                                       "data's own size")
    base = eval_size or median
    if image_size is not None and (ratio := _far(image_size, base)):
        effect = "most of each crop is padding (ignored pixels), which costs time and teaches nothing" if ratio > 1 \
            else "each crop sees a small part of an image while evaluation sees whole images"
        what = f"data.eval_size={eval_size}" if eval_size else _data(median, len(sizes))
        problems.warning("image size", f"data.image_size={image_size} (the training crop) is {ratio:.2g}x {what}, "
                                       f"the scale training is jittered around: {effect}; data.image_size=null crops "
                                       f"{to_multiple(base, 32)} px, the data's own size")


def detector_box_sides(images: Sequence[Any], min_size: int, max_size: int) -> np.ndarray:
    """sqrt(width x height) of every non-crowd box as the detector sees it: each image resized as torchvision's
    `GeneralizedRCNNTransform` does in evaluation (short side to `min_size`, long side at most `max_size`).
    `images`: `data.coco.CocoImage`s (boxes (N, 4) xyxy px)."""
    sides = []
    for image in images:
        if len(image.boxes) == 0:
            continue
        scale = min(min_size / min(image.width, image.height), max_size / max(image.width, image.height))
        boxes = image.boxes[image.iscrowd == 0]
        wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None) * scale
        sides.append(np.sqrt(wh[:, 0] * wh[:, 1]))
    return np.concatenate(sides) if sides else np.zeros(0)


def check_anchor_sizes(anchor_sizes: Sequence[Sequence[int]], box_sides: np.ndarray,
                       problems: Problems = RAISE) -> None:
    """The detector's anchors (px at its input scale, one tuple per feature level) far from the training boxes'
    median side `box_sides` (at the same scale, `detector_box_sides`): below the smallest anchor / FAR the RPN's
    anchors barely overlap the objects (IoU under 1/4), above the largest x FAR none fits them either. The fix
    scales every anchor by one power of two so that the smallest is the largest power of two at or below the
    median side (the largest at or above it, for big boxes)."""
    if len(box_sides) == 0:
        return
    median = float(np.median(box_sides))
    smallest, largest = min(min(s) for s in anchor_sizes), max(max(s) for s in anchor_sizes)
    if median >= smallest / FAR and median <= largest * FAR:
        return
    if median < smallest:  # the smallest anchor moves down to the boxes' size
        factor = 2.0 ** np.floor(np.log2(median)) / smallest
        where = f"{smallest / median:.2g}x below the smallest anchor ({smallest} px)"
    else:  # the largest anchor moves up to it
        factor = 2.0 ** np.ceil(np.log2(median)) / largest
        where = f"{median / largest:.2g}x above the largest anchor ({largest} px)"
    fixed = [[max(1, round(s * factor)) for s in level] for level in anchor_sizes]
    problems.warning("anchor size", f"the training boxes' median side ({median:.1f} px at the detector's input "
                                    f"scale, sqrt of the box area, from {len(box_sides)} boxes) is {where}: the RPN "
                                    "finds few anchors that overlap the objects; task.model.anchor_sizes="
                                    f"{str(fixed).replace(' ', '')} starts the anchors at the data's own size")
