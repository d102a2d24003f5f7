"""LightningModule for semantic segmentation: CE (+ Dice) with an ignore label, mIoU / accuracy / Dice per split,
a per-class IoU table after testing, and drawn predictions each validation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from rich.table import Table
from torch import Tensor

from ..base import TaskModule
from ..drawing import publish_validation_grid
from ..progress import PER_CLASS_MARK
from .loss import SegmentationLoss
from .metrics import SegmentationMetrics, class_map
from .visualize import segmentation_grid

Batch = tuple[Tensor, Tensor]


class SegmentationTask(TaskModule):
    """Batches are `(images (B, 3, H, W), masks (B, H, W) int64)`, masks holding labels 0..K-1 or `ignore_index`.

    Logs `{train,val,test}/loss`, `/mIoU`, `/acc` (pixel accuracy), `/mDice`, and per class `{val,test}/IoU/<name>`;
    saves the first `vis_images` validation images with true and predicted masks to
    `<run dir>/val_predictions/epochNNN.png` each validation, also sent to W&B.

    Args:
        loss: options of `SegmentationLoss` (class_weights, dice_weight, ce_weight, label_smoothing).
        ignore_index: the label of pixels that count in neither loss nor metrics.
        vis_images: validation images drawn each epoch (0: none).
    """

    def __init__(self, model: torch.nn.Module, *args: Any, loss: Mapping[str, Any] | None = None,
                 ignore_index: int = 255, vis_images: int = 4, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        num_classes = model.num_classes
        self.criterion = SegmentationLoss(num_classes, ignore_index=ignore_index, **dict(loss or {}))
        self.ignore_index = ignore_index
        # one confusion matrix per split, so val never mixes into train's running state
        self.train_metrics = SegmentationMetrics(num_classes, ignore_index)
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index)
        self.test_metrics = SegmentationMetrics(num_classes, ignore_index)
        self.vis_images = vis_images
        self._vis_batch: tuple[Tensor, Tensor, Tensor] | None = None
        self.per_class: dict[str, list[float]] = {}  # filled by the test epoch, shown by `report_tables`

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> logits (B, K, H, W)."""
        return self.model(images)

    def _step(self, batch: Batch, split: str) -> tuple[dict[str, Tensor], Tensor]:
        images, masks = batch
        logits = self.model(images)
        terms = self.criterion(logits, masks)
        getattr(self, f"{split}_metrics").update(logits.detach(), masks)
        on_step = split == "train"
        self.log(f"{split}/loss", terms["loss"], on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=len(images), sync_dist=True)  # the epoch mean over every rank's batches
        if on_step and len(terms) > 2:  # the separate terms when Dice is on
            self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=len(images))
        return terms, logits

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "train")[0]  # {"loss": total, <term>: ...}: the divergence guard names the terms

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        _, logits = self._step(batch, "val")
        if batch_idx == 0 and self.vis_images and not self.trainer.sanity_checking:
            n = self.vis_images
            self._vis_batch = (batch[0][:n].cpu(), class_map(logits[:n]).cpu(), batch[1][:n].cpu())

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> Tensor:
        """Batches of `(images, masks)` or of images -> class probabilities (B, K, H, W)."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.model(images).softmax(dim=1)

    def _log_split(self, split: str, per_class: bool) -> dict[str, Tensor]:
        metrics: SegmentationMetrics = getattr(self, f"{split}_metrics")
        scores = metrics.compute()  # synced across DDP processes
        metrics.reset()
        for name in ("mIoU", "acc", "mDice"):
            self.log(f"{split}/{name}", scores[name].float(), prog_bar=split == "val" and name == "mIoU",
                     sync_dist=True)  # equal on every rank: compute() synced the states
        if per_class:
            for name, value in zip(self.class_names, scores["iou"].tolist()):
                self.log(f"{split}{PER_CLASS_MARK}{name}", value, sync_dist=True)
        return scores

    def on_train_epoch_end(self) -> None:
        self._log_split("train", per_class=False)

    def on_validation_epoch_end(self) -> None:
        self._log_split("val", per_class=True)
        if self._vis_batch is not None:
            grid = segmentation_grid(*self._vis_batch, self.class_names, max_images=self.vis_images)
            self._vis_batch = None
            publish_validation_grid(self, grid, "image | ground truth | prediction")

    def on_test_epoch_end(self) -> None:
        scores = self._log_split("test", per_class=True)
        self.per_class = {k: scores[k].tolist() for k in ("iou", "dice", "support")}

    def report_tables(self) -> list[Table]:
        if not self.per_class:
            return []
        table = Table(title="Test IoU per class")
        for column in ("class", "IoU", "Dice", "pixels"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, iou, dice, support in zip(self.class_names, *self.per_class.values()):
            fmt = (lambda v: "-" if math.isnan(v) else f"{v:.4f}")  # noqa: E731
            table.add_row(name, fmt(iou), fmt(dice), f"{int(support):,}")
        return [table]
