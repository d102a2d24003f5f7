"""Semantic segmentation's part of the task module: CE (+ Dice) with an ignore label, mIoU / accuracy / Dice per
split, a per-class IoU table after testing, and drawn predictions each validation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from rich.table import Table
from torch import Tensor

from ..module import HeadsTask
from ..parts import SPLITS, HeadPart, tie_to
from .class_weights import weights_from_data
from .loss import SegmentationLoss
from .metrics import SegmentationMetrics, class_map
from .visualize import segmentation_grid


class SegmentationPart(HeadPart):
    """Targets are masks (B, H, W) int64 holding labels 0..K-1 or `ignore_index`; outputs logits (B, K, H, W).

    Logs `{split}/<prefix>mIoU`, `/acc` (pixel accuracy), `/mDice`, and per class `{val,test}/<prefix>IoU/<name>`.

    Args:
        loss: options of `SegmentationLoss` (class_weights, dice_weight, ce_weight, label_smoothing, focal_gamma,
            ohem); class weights by a method (`class_weights: auto`) are counted from the training masks when fitting
            starts (`setup`).
        ignore_index: the label of pixels that count in neither loss nor metrics.
    """

    def __init__(self, name: str, num_classes: int, class_names: list[str] | None = None, prefix: str = "", *,
                 loss: Mapping[str, Any] | None = None, ignore_index: int = 255) -> None:
        super().__init__(name, num_classes, class_names, prefix)
        # the options' config key, named by errors: a joint run's segmentation options sit under the head's kind
        self.loss_key = "task.module.segmentation.loss" if prefix else "task.module.loss"
        self.criterion = SegmentationLoss(num_classes, ignore_index=ignore_index, key=self.loss_key,
                                          **dict(loss or {}))
        self.ignore_index = ignore_index
        self.set_metrics({s: SegmentationMetrics(num_classes, ignore_index) for s in SPLITS})
        self.per_class: dict[str, list[float]] = {}  # filled by the test epoch, shown by `report_tables`

    def setup(self, module: L.LightningModule, stage: str) -> None:
        """Fitting starts: count `class_weights: auto` (or another method) from the data module's training masks.
        Every DDP process counts the same masks, so all get the same weights; resuming then restores the stored
        ones, and evaluation loads them with the checkpoint."""
        method = self.criterion.weights_method
        if stage == "fit" and method is not None:
            self.criterion.set_class_weights(weights_from_data(module.trainer.datamodule, method, self.class_names,
                                                               f"{self.loss_key}.class_weights"))

    def joint_targets(self, targets: Any) -> tuple[list[Tensor | None], list[bool]]:
        """(per image its (H, W) class mask or None, per image whether it is labelled) from the per-image dicts."""
        has = [bool(t["has"].get(self.name, True)) and "semantic" in t for t in targets]
        return [t["semantic"] if h else None for t, h in zip(targets, has)], has

    def labelled(self, targets: Any) -> int:
        return sum(targets[1]) if self.joint else len(targets)

    def _labelled_pairs(self, outputs: list[Tensor], targets: Any) -> list[tuple[Tensor, Tensor]]:
        """(1, K, H, W) logits and (1, H, W) mask of each labelled image of a joint batch."""
        masks, has = targets
        return [(o[None], m[None].to(o.device)) for o, m, h in zip(outputs, masks, has) if h]

    def loss(self, outputs: Tensor | list[Tensor], targets: Any) -> dict[str, Tensor]:
        if not self.joint:
            return self.criterion(outputs, targets)
        pairs = self._labelled_pairs(outputs, targets)
        if not pairs:
            return {"loss": tie_to(outputs)}
        if len({p[1].shape for p in pairs}) == 1:  # one size: one batch, as a single-task run
            return self.criterion(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))
        terms = [self.criterion(*p) for p in pairs]  # images of several sizes: the mean of their losses
        return {k: torch.stack([t[k] for t in terms]).mean() for k in terms[0]}

    def update(self, split: str, outputs: Tensor | list[Tensor], targets: Any) -> None:
        if not self.joint:
            self.split_metrics(split).update(outputs.detach(), targets)
            return
        for logits, mask in self._labelled_pairs(outputs, targets):
            self.split_metrics(split).update(logits.detach(), mask)

    def predict(self, outputs: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        """(B, K, H, W) probabilities; a joint run's list of per-image (K, H_i, W_i) logits -> a list of those."""
        return [o.softmax(dim=0) for o in outputs] if isinstance(outputs, list) else outputs.softmax(dim=1)

    def log_split(self, module: L.LightningModule, split: str) -> dict[str, Tensor]:
        scores = self.split_metrics(split).compute()  # synced across DDP processes
        self.split_metrics(split).reset()
        logged = {f"{split}/{self.prefix}{name}": scores[name].float() for name in ("mIoU", "acc", "mDice")}
        for name, value in logged.items():
            module.log(name, value, prog_bar=split == "val" and name.endswith("mIoU"), sync_dist=True)  # equal on ranks
        if split != "train":
            for name, value in zip(self.class_names, scores["iou"].tolist()):
                module.log(f"{split}/{self.prefix}IoU/{name}", value, sync_dist=True)
        if split == "test":
            self.per_class = {k: scores[k].tolist() for k in ("iou", "dice", "support")}
        return logged

    def keep(self, images: Tensor | tuple[Tensor, ...], outputs: Tensor | list[Tensor], targets: Any, n: int) -> None:
        if self.joint:  # per-image tensors: drawn when the first n share one size
            masks, has = targets
            if not all(has[:n]) or len({tuple(i.shape) for i in images[:n]}) != 1:
                return
            images, outputs = torch.stack(list(images[:n])), torch.stack(list(outputs[:n]))
            targets = torch.stack(masks[:n])
        self._vis = (images[:n].cpu(), class_map(outputs[:n]).cpu(), targets[:n].cpu(), n)

    def draw(self) -> tuple[Tensor, str] | None:
        if self._vis is None:
            return None
        images, preds, targets, n = self._vis
        self._vis = None
        return segmentation_grid(images, preds, targets, self.class_names, max_images=n), \
            "image | ground truth | prediction"

    def report_tables(self) -> list[Table]:
        if not self.per_class:
            return []
        table = Table(title="Test IoU per class" + (f" ({self.name})" if self.prefix else ""))
        for column in ("class", "IoU", "Dice", "pixels"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for name, iou, dice, support in zip(self.class_names, *self.per_class.values()):
            fmt = (lambda v: "-" if math.isnan(v) else f"{v:.4f}")  # noqa: E731
            table.add_row(name, fmt(iou), fmt(dice), f"{int(support):,}")
        return [table]


def SegmentationTask(model: torch.nn.Module, *args: Any, loss: Mapping[str, Any] | None = None,  # noqa: N802
                     ignore_index: int = 255, vis_images: int = 4, class_names: list[str] | None = None,
                     **kwargs: Any) -> HeadsTask:
    """The segmentation task module (`task=segmentation`): batches `(images (B, 3, H, W), masks (B, H, W) int64)`;
    logs `{train,val,test}/loss`, `/mIoU`, `/acc`, `/mDice`, per class `{val,test}/IoU/<name>`; draws the first
    `vis_images` validation images with true and predicted masks to `<run dir>/val_predictions/epochNNN.png` each
    validation (also sent to W&B)."""
    part = SegmentationPart("segmentation", model.head.num_classes, class_names, loss=loss, ignore_index=ignore_index)
    return HeadsTask(model, *args, parts={"segmentation": part}, vis_images=vis_images, class_names=class_names,
                     **kwargs)
