"""Segmentation loss: cross-entropy with an ignore label and optional class weights, plus optional Dice."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn


class SegmentationLoss(nn.Module):
    """`ce_weight * CE + dice_weight * (1 - soft Dice)`, pixels labelled `ignore_index` left out of both.

    Args:
        num_classes: logit maps; `class_weights` must have this many entries.
        ignore_index: label of pixels that count nowhere (255: unlabelled, padding).
        class_weights: per-class CE weights (e.g. inverse frequency), or None.
        ce_weight / dice_weight: the terms' factors; Dice is smp's multiclass soft Dice over present classes.
        label_smoothing: CE label smoothing.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_weights: Sequence[float] | None = None,
                 ce_weight: float = 1.0, dice_weight: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"task.module.loss.class_weights has {len(class_weights)} entries but the dataset has "
                             f"{num_classes} classes; give one weight per class (line of classes.txt)")
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.tensor(list(class_weights), dtype=torch.float32))
        self.ignore_index = ignore_index
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.label_smoothing = label_smoothing
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index) if dice_weight else None

    def forward(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """logits (B, K, H, W), target (B, H, W) int64 -> {"loss", "ce"[, "dice"]} scalars."""
        terms = {"ce": F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index,
                                       label_smoothing=self.label_smoothing)}
        if self.dice is not None:
            terms["dice"] = self.dice(logits, target)
        terms["loss"] = self.ce_weight * terms["ce"] + self.dice_weight * terms.get("dice", 0.0)
        return terms
