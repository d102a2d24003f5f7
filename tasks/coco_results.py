"""COCO results entries (`COCO.loadRes`'s format) from numpy arrays: evaluation (`tasks/detection/evaluation.py`),
predict.py on checkpoints and on exported models (`tasks/runtime/`) write them with this one function. No torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

MASK_THRESHOLD = 0.5  # Mask R-CNN's mask probabilities -> binary masks, as torchvision's and detectron2's evaluation


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool mask -> COCO's compressed RLE `{"size": [H, W], "counts": str}` (json-ready)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_entries(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, image_id: int,
                 category_ids: Sequence[int], masks: np.ndarray | None = None) -> list[dict[str, Any]]:
    """`{"image_id", "category_id", "bbox": [x, y, w, h], "score"[, "segmentation"]}` per detection: boxes (M, 4)
    xyxy converted in float32 (as torchvision's box_convert on float32), label l (1..K) is category
    `category_ids[l - 1]`, masks (M, H, W) bool as compressed RLE. ValueError for a label outside 1..K."""
    labels = np.asarray(labels).tolist()
    bad = [label for label in labels if not 1 <= label <= len(category_ids)]
    if bad:
        raise ValueError(f"image {image_id}: labels {sorted(set(bad))} are outside 1..{len(category_ids)} "
                         f"(0 is background; category_ids has {len(category_ids)} entries)")
    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).tolist()
    entries = [{"image_id": int(image_id), "category_id": int(category_ids[label - 1]), "bbox": box, "score": score}
               for box, score, label in zip(xywh, np.asarray(scores).tolist(), labels)]
    if masks is not None:
        for entry, mask in zip(entries, masks):
            entry["segmentation"] = mask_rle(mask)
    return entries
