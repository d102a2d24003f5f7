"""COCO box and mask metrics (AP, AP50, AP75, APs/m/l, AR100) for detection and instance segmentation, synced across
DDP; COCO results export (boxes, and masks as RLE)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from pycocotools.cocoeval import Params
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from ..coco_results import MASK_THRESHOLD, coco_entries

# faster_coco_eval prints COCO's whole summary table at INFO on every compute(); the metrics are logged anyway
logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)

# our key -> torchmetrics' key; the values are COCOeval's stats[0..5] and stats[8]
COCO_KEYS = {"AP": "map", "AP50": "map_50", "AP75": "map_75", "APs": "map_small", "APm": "map_medium",
             "APl": "map_large", "AR100": "mar_100"}
SEGM_PREFIX = "segm/"  # mask metrics are logged as e.g. val/segm/AP beside the box metrics' val/AP
# MeanAveragePrecision's list states holding one entry per image (the mask states stay empty for boxes)
_PER_IMAGE_STATES = ("detection_box", "detection_mask", "detection_scores", "detection_labels", "groundtruth_box",
                     "groundtruth_mask", "groundtruth_labels", "groundtruth_crowds", "groundtruth_area", "image_ids")


def binary_masks(masks: Tensor) -> Tensor:
    """Mask R-CNN's (M, 1, H, W) probabilities (or (M, H, W) 0/1 masks) -> (M, H, W) bool."""
    masks = masks.detach()
    if masks.dim() == 4:
        masks = masks[:, 0]
    return masks > MASK_THRESHOLD if masks.is_floating_point() else masks.bool()


def _plain(item: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Tensor]:
    """The tensors under `keys` as plain, detached Tensors (tv_tensors.BoundingBoxes would survive the
    DDP gather as a subclass otherwise); "masks" as (M, H, W) bool."""
    out = {k: item[k].detach().as_subclass(Tensor) for k in keys if k in item}
    if "masks" in out:
        out["masks"] = binary_masks(out["masks"])
    return out


class CocoMetrics(MeanAveragePrecision):
    """COCOeval box (and, with `masks`, mask) metrics over every image seen since `reset()`, gathered across DDP
    processes.

    `update(preds, targets)` takes torchvision detection dicts, one per image:
        preds:   boxes (M, 4) float xyxy pixels, scores (M,), labels (M,) int64 in 1..K;
                 with `masks`: masks (M, 1, H, W) probabilities (Mask R-CNN's, binarised at 0.5) or (M, H, W) 0/1
        targets: boxes (N, 4) float xyxy, labels (N,) int64, iscrowd (N,) int64, area (N,) float (the json's
                 `area`, which COCOeval uses for small/medium/large), image_id int; with `masks`: masks (N, H, W)
    `compute()` returns 0-dim float32 tensors under COCO_KEYS (box metrics) and, with `masks`, the same keys
    prefixed `segm/` (COCOeval's iouType "segm"); -1 where COCO leaves a value undefined (e.g. APl when no GT
    object is large). An image seen twice (DistributedSampler pads the last batch with repeats) counts once, and
    images are evaluated in image-id order, as COCOeval does on the json.

    Args:
        backend: "faster_coco_eval" (C++, same numbers, about 3x faster) or "pycocotools".
        masks: also evaluate masks (instance segmentation).
        kwargs: torchmetrics Metric options (process_group, sync_on_compute, ...); COCO's IoU / recall
            thresholds and maxDets (1, 10, 100) are fixed.
    """

    def __init__(self, backend: Literal["pycocotools", "faster_coco_eval"] = "faster_coco_eval",
                 masks: bool = False, **kwargs: Any) -> None:
        # COCOeval's own float64 thresholds: MeanAveragePrecision's default float32 linspace puts recall
        # thresholds like 0.93 at 0.9300000072, which moves AP by ~1e-3 when a recall lands exactly on one
        coco = Params(iouType="bbox")
        super().__init__(box_format="xyxy", iou_type=("bbox", "segm") if masks else "bbox", backend=backend,
                         iou_thresholds=coco.iouThrs.tolist(), rec_thresholds=coco.recThrs.tolist(), **kwargs)
        self.add_state("image_ids", default=[], dist_reduce_fx=None)
        self.masks = masks
        self._keys = ("boxes", "masks") if masks else ("boxes",)

    def update(self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch: `preds[i]` and `targets[i]` describe the same image."""
        super().update([_plain(p, (*self._keys, "scores", "labels")) for p in preds],
                       [_plain(t, (*self._keys, "labels", "iscrowd", "area")) for t in targets])
        # -1 marks a target without an image_id: such images are never merged with another
        self.image_ids.extend(torch.tensor([int(t.get("image_id", -1))], device=self.device) for t in targets)

    def _unique_images(self) -> list[int]:
        """Positions of each image id's first occurrence, in id order; images without an id after them."""
        first: dict[tuple[int, int], int] = {}
        for pos, image_id in enumerate(int(i) for i in self.image_ids):
            first.setdefault((0, image_id) if image_id >= 0 else (1, pos), pos)
        return [first[key] for key in sorted(first)]

    @contextmanager
    def _only(self, keep: list[int]) -> Iterator[None]:
        """Temporarily narrow the per-image states to the images at positions `keep`."""
        saved = {name: getattr(self, name) for name in _PER_IMAGE_STATES if getattr(self, name)}
        try:
            for name, values in saved.items():
                setattr(self, name, [values[i] for i in keep])
            yield
        finally:
            for name, values in saved.items():
                setattr(self, name, values)

    def compute(self) -> dict[str, Tensor]:
        """{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"} (and "segm/AP", ... with masks) -> 0-dim float32
        tensors."""
        with self._only(self._unique_images()):
            result = super().compute()
        if not self.masks:
            return {key: result[name].float().reshape(()) for key, name in COCO_KEYS.items()}
        return {**{key: result[f"bbox_{name}"].float().reshape(()) for key, name in COCO_KEYS.items()},
                **{SEGM_PREFIX + key: result[f"segm_{name}"].float().reshape(()) for key, name in COCO_KEYS.items()}}


def to_coco_results(preds: Sequence[Mapping[str, Tensor]], image_ids: Sequence[int],
                    category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results entries `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` (and "segmentation", a
    compressed RLE, when the predictions carry "masks") for `COCO.loadRes`.

    `preds[i]` (boxes (M, 4) xyxy, scores (M,), labels (M,) in 1..K[, masks (M, 1, H, W) probabilities]) belongs to
    `image_ids[i]`; label l is category `category_ids[l - 1]`. Boxes are converted in float32 as
    MeanAveragePrecision does, and masks binarised at 0.5 as `CocoMetrics`, so both evaluations see the same
    numbers.
    """
    if len(preds) != len(image_ids):
        raise ValueError(f"{len(preds)} predictions but {len(image_ids)} image ids; give one id per image")
    results: list[dict[str, Any]] = []
    for pred, image_id in zip(preds, image_ids):
        masks = binary_masks(pred["masks"]).cpu().numpy() if "masks" in pred else None
        results += coco_entries(pred["boxes"].detach().float().cpu().numpy(), pred["labels"].cpu().numpy(),
                                pred["scores"].detach().cpu().numpy(), image_id, category_ids, masks)
    return results
