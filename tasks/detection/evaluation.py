"""COCO box metrics (AP, AP50, AP75, APs/m/l, AR100) for detection, synced across DDP; COCO results export."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from pycocotools.cocoeval import Params
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_convert

# faster_coco_eval prints COCO's whole summary table at INFO on every compute(); the metrics are logged anyway
logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)

# our key -> torchmetrics' key; the values are COCOeval's stats[0..5] and stats[8]
COCO_KEYS = {"AP": "map", "AP50": "map_50", "AP75": "map_75", "APs": "map_small", "APm": "map_medium",
             "APl": "map_large", "AR100": "mar_100"}
# MeanAveragePrecision's list states holding one entry per image (the mask states stay empty for boxes)
_PER_IMAGE_STATES = ("detection_box", "detection_scores", "detection_labels", "groundtruth_box",
                     "groundtruth_labels", "groundtruth_crowds", "groundtruth_area", "image_ids")


def _plain(item: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Tensor]:
    """The tensors under `keys` as plain, detached Tensors (tv_tensors.BoundingBoxes would survive the
    DDP gather as a subclass otherwise)."""
    return {k: item[k].detach().as_subclass(Tensor) for k in keys if k in item}


class CocoBoxMetrics(MeanAveragePrecision):
    """COCOeval box metrics over every image seen since `reset()`, gathered across DDP processes.

    `update(preds, targets)` takes torchvision detection dicts, one per image:
        preds:   boxes (M, 4) float xyxy pixels, scores (M,), labels (M,) int64 in 1..K
        targets: boxes (N, 4) float xyxy, labels (N,) int64, iscrowd (N,) int64, area (N,) float (the json's
                 `area`, which COCOeval uses for small/medium/large), image_id int
    `compute()` returns 0-dim float32 tensors under COCO_KEYS; -1 where COCO leaves a value undefined (e.g.
    APl when no GT box is large). An image seen twice (DistributedSampler pads the last batch with repeats)
    counts once, and images are evaluated in image-id order, as COCOeval does on the json.

    Args:
        backend: "faster_coco_eval" (C++, same numbers, about 3x faster) or "pycocotools".
        kwargs: torchmetrics Metric options (process_group, sync_on_compute, ...); COCO's IoU / recall
            thresholds and maxDets (1, 10, 100) are fixed.
    """

    def __init__(self, backend: Literal["pycocotools", "faster_coco_eval"] = "faster_coco_eval",
                 **kwargs: Any) -> None:
        # COCOeval's own float64 thresholds: MeanAveragePrecision's default float32 linspace puts recall
        # thresholds like 0.93 at 0.9300000072, which moves AP by ~1e-3 when a recall lands exactly on one
        coco = Params(iouType="bbox")
        super().__init__(box_format="xyxy", iou_type="bbox", backend=backend,
                         iou_thresholds=coco.iouThrs.tolist(), rec_thresholds=coco.recThrs.tolist(), **kwargs)
        self.add_state("image_ids", default=[], dist_reduce_fx=None)

    def update(self, preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch: `preds[i]` and `targets[i]` describe the same image."""
        super().update([_plain(p, ("boxes", "scores", "labels")) for p in preds],
                       [_plain(t, ("boxes", "labels", "iscrowd", "area")) for t in targets])
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
        saved = {name: getattr(self, name) for name in _PER_IMAGE_STATES}
        try:
            for name, values in saved.items():
                setattr(self, name, [values[i] for i in keep])
            yield
        finally:
            for name, values in saved.items():
                setattr(self, name, values)

    def compute(self) -> dict[str, Tensor]:
        """{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"} -> 0-dim float32 tensors."""
        with self._only(self._unique_images()):
            result = super().compute()
        return {key: result[name].float().reshape(()) for key, name in COCO_KEYS.items()}


def to_coco_results(preds: Sequence[Mapping[str, Tensor]], image_ids: Sequence[int],
                    category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results entries `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` for `COCO.loadRes`.

    `preds[i]` (boxes (M, 4) xyxy, scores (M,), labels (M,) in 1..K) belongs to `image_ids[i]`; label l is
    category `category_ids[l - 1]`. Boxes are converted in float32 as MeanAveragePrecision does, so both
    evaluations see the same numbers.
    """
    if len(preds) != len(image_ids):
        raise ValueError(f"{len(preds)} predictions but {len(image_ids)} image ids; give one id per image")
    results: list[dict[str, Any]] = []
    for pred, image_id in zip(preds, image_ids):
        labels = pred["labels"].tolist()
        bad = [label for label in labels if not 1 <= label <= len(category_ids)]
        if bad:
            raise ValueError(f"image {image_id}: labels {sorted(set(bad))} are outside 1..{len(category_ids)} "
                             f"(0 is background; category_ids has {len(category_ids)} entries)")
        xywh = box_convert(pred["boxes"].detach().float().cpu(), "xyxy", "xywh").tolist()
        results.extend({"image_id": int(image_id), "category_id": int(category_ids[label - 1]), "bbox": box,
                        "score": score} for box, score, label in zip(xywh, pred["scores"].tolist(), labels))
    return results
