"""Segmentation metrics from one confusion matrix (torchmetrics, synced across DDP processes)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix


def confusion_scores(confmat: Tensor) -> dict[str, Tensor]:
    """(K, K) confusion matrix, rows = truth, columns = prediction -> per-class IoU and Dice (K,), NaN for a
    class absent from both truth and prediction; their means over the other classes; pixel accuracy."""
    confmat = confmat.double()
    tp = confmat.diagonal()
    fp, fn = confmat.sum(0) - tp, confmat.sum(1) - tp
    iou = tp / (tp + fp + fn)  # 0/0 -> NaN: the class is not in this split, so it has no score
    dice = 2 * tp / (2 * tp + fp + fn)
    return {"iou": iou, "dice": dice, "mIoU": iou.nanmean(), "mDice": dice.nanmean(),
            "acc": tp.sum() / confmat.sum().clamp(min=1), "support": confmat.sum(1)}


def class_map(logits: Tensor) -> Tensor:
    """(B, K, H, W) scores -> (B, H, W) int64 argmax over K. `max(1).indices` is the same numbers as
    `argmax(1)` but ~6x faster on CPUs (15 -> 2.4 ms at 8 x 10 x 128 x 128), 2% of a U-Net training step."""
    return logits.max(dim=1).indices


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Accumulates the confusion matrix of argmax predictions over the pixels not labelled `ignore_index`.

    `update(logits (B, K, H, W) or labels (B, H, W), target (B, H, W))`; `compute()` -> `confusion_scores`.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        # validate_args off: its per-batch scan of the target for unexpected values costs as much as the update
        super().__init__(num_classes, ignore_index=ignore_index, validate_args=False)

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = class_map(preds)
        super().update(preds, target)

    def compute(self) -> dict[str, Tensor]:
        return confusion_scores(super().compute())

