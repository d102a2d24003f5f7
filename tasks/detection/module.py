"""LightningModule for Faster R-CNN detection and Mask R-CNN instance segmentation: torchvision's losses, COCO
metrics per split (boxes, and masks), drawn predictions."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..base import TaskModule
from ..drawing import publish_validation_grid
from .evaluation import SEGM_PREFIX, CocoMetrics
from .visualize import detection_grid

Batch = tuple[tuple[Tensor, ...], tuple[dict[str, Any], ...]]


PER_OBJECT = ("boxes", "labels", "masks", "iscrowd", "area")  # target entries with one row per object


def without_crowd(target: dict[str, Any]) -> dict[str, Any]:
    """Training ignores `iscrowd` objects (boxes and masks), as COCO-trained detectors do; the evaluator still
    sees them."""
    crowd = target.get("iscrowd")
    if crowd is None or not bool(crowd.any()):
        return target
    keep = crowd == 0
    return {**target, **{k: target[k][keep] for k in PER_OBJECT if k in target}}


def _to_cpu(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if isinstance(v, Tensor) else v for k, v in target.items()}


class DetectionTask(TaskModule):
    """Batches are `(images: tuple of (3, H, W) in [0, 1], targets: tuple of dicts)` (see data/detection.py).

    Logs `train/loss` and each torchvision loss term, `{val,test}/{AP,AP50,AP75,APs,APm,APl,AR100}`, and
    saves the first `vis_images` validation images with predicted (coloured, with class and score) and
    ground-truth (green) boxes to `<run dir>/val_predictions/epochNNN.png` each validation, also sent to W&B.
    A model with a mask branch (`DetectionModel(masks=True)`: Mask R-CNN, task=instance_segmentation) also logs
    the mask metrics as `{val,test}/segm/AP`, ... and draws the predicted masks.
    """

    def __init__(self, model: torch.nn.Module, *args: Any, vis_images: int = 4, vis_score_threshold: float = 0.3,
                 **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        self.masks = bool(getattr(model, "masks", False))
        self.val_metrics = CocoMetrics(masks=self.masks)
        self.test_metrics = CocoMetrics(masks=self.masks)
        self.vis_images = vis_images
        self.vis_score_threshold = vis_score_threshold
        self._vis_batch: tuple | None = None

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.model(list(images))

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        images, targets = batch
        losses = self.model(list(images), [without_crowd(t) for t in targets])
        loss = sum(losses.values())
        n = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{name}": value for name, value in losses.items()}, batch_size=n)
        return {"loss": loss, **losses}  # the terms, for the divergence guard's message

    def _evaluate(self, batch: Batch, metrics: CocoMetrics) -> list[dict[str, Tensor]]:
        images, targets = batch
        preds = self.model(list(images))
        metrics.update(preds, targets)
        return preds

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        preds = self._evaluate(batch, self.val_metrics)
        if batch_idx == 0 and self.vis_images and not self.trainer.sanity_checking:
            images, targets = batch
            n = self.vis_images
            self._vis_batch = ([i.cpu() for i in images[:n]],
                               [{k: v.cpu() for k, v in p.items()} for p in preds[:n]],
                               [_to_cpu(t) for t in targets[:n]])

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def predict_step(self, batch: Batch | tuple[Tensor, ...], batch_idx: int) -> list[dict[str, Tensor]]:
        """Batches of `(images, targets)` or of images alone -> per-image {"boxes", "scores", "labels"} (and
        "masks" (M, 1, H, W) probabilities with a mask branch)."""
        images = batch[0] if isinstance(batch[0], (tuple, list)) else batch
        return self.model(list(images))

    def on_validation_epoch_end(self) -> None:
        self.log_metrics(self.val_metrics, "val/", prog_bar=("val/AP", f"val/{SEGM_PREFIX}AP"))
        self._save_predictions()

    def on_test_epoch_end(self) -> None:
        self.log_metrics(self.test_metrics, "test/")

    def _save_predictions(self) -> None:
        if self._vis_batch is None:
            return
        grid = detection_grid(*self._vis_batch, self.class_names, score_threshold=self.vis_score_threshold)
        self._vis_batch = None
        publish_validation_grid(self, grid, "predictions (colour) and ground truth (green)")
