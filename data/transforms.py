"""torchvision.transforms.v2 pipelines: classification (PIL image -> float image), detection (joint image + boxes
-> float image; the detector resizes itself) and segmentation (joint image + mask -> float image, int64 mask).
Images come out as RGB in [0, 1]: every model normalises its own input (data/preprocessing.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.ops import box_area
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .errors import DataError

# `data.augment.enabled=false`: every training augmentation of a task off at once (classification then trains on the
# evaluation transform: resize, centre crop)
AUGMENT_OFF: dict[str, dict[str, Any]] = {
    "classification": {"scale": (1.0, 1.0), "hflip": 0.0, "color_jitter": 0.0},
    "segmentation": {"scale": (1.0, 1.0), "hflip": 0.0, "photometric": 0.0},
    "detection": {"hflip": 0.0, "photometric": 0.0, "zoom_out": 0.0, "iou_crop": False},
}


def augment_options(augment: Mapping[str, Any] | None, task: str) -> tuple[bool, dict[str, Any]]:
    """A `data.augment` block -> (enabled, the transform options): with `enabled: false` the options of
    `AUGMENT_OFF[task]` replace the block's (its other keys then do not matter); `crop_pct` (evaluation) is kept."""
    options = dict(augment or {})
    enabled = options.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise DataError(f"data.augment.enabled must be true or false (got {enabled!r})")
    return enabled, options if enabled else {**options, **AUGMENT_OFF[task]}


def classification_transforms(
    train: bool,
    image_size: int,
    *,
    crop_pct: float = 0.875,
    scale: Sequence[float] = (0.35, 1.0),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
) -> v2.Compose:
    """Train: random resized crop, flip, optional colour jitter. Eval: resize to size/crop_pct, centre crop (with
    Pillow when given a PIL image).

    Output: (3, image_size, image_size) float32 in [0, 1].
    """
    if train:
        ops: list[v2.Transform] = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True),
        ]
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        if color_jitter > 0:
            ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    else:  # on the PIL image (Pillow's resize): predict.py on an exported model repeats it with Pillow exactly
        ops = [
            v2.Resize(round(image_size / crop_pct), antialias=True),
            v2.CenterCrop(image_size),
            v2.ToImage(),
        ]
    ops.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(ops)


def photometric_jitter(p: float) -> v2.RandomApply:
    """Colour jitter with probability `p`; it changes images only (boxes and masks pass through)."""
    # SSD's photometric ranges without hue: hue costs ~50x more CPU than the rest at COCO sizes
    return v2.RandomApply([v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5)], p=p)


PER_BOX = ("labels", "iscrowd", "area", "box_area")  # target entries filtered together with their boxes


def _per_box(inputs: tuple[Any, dict[str, Any]]) -> tuple[torch.Tensor, ...]:
    """SanitizeBoundingBoxes' labels_getter: every per-box tensor of the target follows its box."""
    return tuple(inputs[1][k] for k in PER_BOX if k in inputs[1])


def _remember_box_area(image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    return image, {**target, "box_area": box_area(target["boxes"])}


def _rescale_area(image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """COCO's `area` (mask area) scaled by how much each box's own area changed (crops, zooms)."""
    target = dict(target)
    before = target.pop("box_area")
    target["area"] = target["area"] * (box_area(target["boxes"]) / before)
    return image, target


def detection_transforms(
    train: bool,
    *,
    hflip: float = 0.5,
    photometric: float = 0.5,
    zoom_out: float = 0.0,
    max_zoom: float = 2.0,
    iou_crop: bool = False,
    boxes: bool = True,
) -> v2.Compose:
    """Joint transform `(PIL image, target) -> (image, target)` with target["boxes"] a tv_tensors.BoundingBoxes.

    Output image: (3, H, W) float32 in [0, 1], not normalized and not resized (Faster R-CNN does both).
    Train: colour jitter (probability `photometric`), zoom-out onto a canvas up to `max_zoom` times
    the side (probability `zoom_out`), SSD-style IoU crop (`iou_crop`), horizontal flip (probability
    `hflip`); then boxes are clamped, boxes under 1 px dropped with their labels / iscrowd / area, and
    area rescaled with its box. Eval: no change but the dtype.

    `boxes=False`: the same flips, jitter and zoom-out for inputs without boxes (`(PIL image, tv_tensors.Mask)`, or an
    image alone), e.g. images labelled only with a class mask or a class; `iou_crop` (which picks crops by the boxes)
    is left out then.
    """
    ops: list[Any] = [v2.ToImage()]
    if train:
        if boxes:
            ops.append(_remember_box_area)
        if photometric > 0:
            ops.append(photometric_jitter(photometric))
        if zoom_out > 0:
            # fill with the mean ImageNet colour, as torchvision's detection references do
            ops.append(v2.RandomZoomOut(fill={tv_tensors.Image: (124, 116, 104), "others": 0},
                                        side_range=(1.0, max_zoom), p=zoom_out))
        if iou_crop and boxes:
            ops.append(v2.RandomIoUCrop())
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        if boxes:
            ops += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=_per_box), _rescale_area]
    ops.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(ops)


class RandomRescale(v2.Transform):
    """Resize the short side to a random length in `scale` x the input's own short side (image bilinear,
    masks nearest): scale jitter around each image's native size. The length is drawn as `RandomResize`
    draws it (an integer in [low, high)), so a 64 px image with scale (0.75, 1.5) is resized exactly as
    `RandomResize(48, 96)` would."""

    def __init__(self, scale: Sequence[float]) -> None:
        super().__init__()
        self.scale = tuple(scale)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        short = min(v2.query_size(flat_inputs))
        low, high = (round(s * short) for s in self.scale)
        return {"size": [max(1, int(torch.randint(low, max(high, low + 1), ())))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def segmentation_transforms(
    train: bool,
    image_size: int | None,
    *,
    eval_size: int | None = None,
    scale: Sequence[float] = (0.5, 2.0),
    hflip: float = 0.5,
    photometric: float = 0.5,
    ignore_index: int = 255,
) -> v2.Compose:
    """Joint transform `(PIL image, tv_tensors.Mask (H, W)) -> (image (3, H', W') float32 in [0, 1],
    mask (H', W') int64)`; masks are resized with nearest neighbour.

    One base scale for training and evaluation (as MMSegmentation's resize-then-crop): `eval_size` (the short
    side) when given, else each image's own size. Train: resize the short side to a random `scale` x the base,
    random `image_size` square crop (padded where the image is smaller: image with 0, mask with
    `ignore_index`), horizontal flip (probability `hflip`), colour jitter (probability `photometric`). Eval:
    resize the short side to `eval_size` (None: keep the native size), nothing else; `image_size` is unused.
    """
    ops: list[v2.Transform] = [v2.ToImage()]
    if train:
        if image_size is None:
            raise ValueError("segmentation_transforms(train=True) needs image_size, the side of the crops")
        if eval_size is None:
            ops.append(RandomRescale(scale))
        else:
            low, high = (round(s * eval_size) for s in scale)
            ops.append(v2.RandomResize(low, max(high, low + 1), antialias=True))
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
        ops.append(v2.RandomCrop(image_size, pad_if_needed=True, fill=fill))
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(hflip))
        if photometric > 0:
            ops.append(photometric_jitter(photometric))
    elif eval_size is not None:  # on the PIL image, as classification's eval resize
        ops.insert(0, v2.Resize(eval_size, antialias=True))
    ops.append(v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None},
                          scale=True))
    return v2.Compose(ops)
