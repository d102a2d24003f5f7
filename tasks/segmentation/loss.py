"""Segmentation loss: cross-entropy with an ignore label and optional class weights (fixed, or from the training
masks' pixel frequencies), optionally focal or with hard-pixel mining (OHEM), plus optional Dice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn

from backbones.errors import ConfigError

from .class_weights import parse_class_weights
from .hard_pixels import Ohem, pixel_cross_entropy


class SegmentationLoss(nn.Module):
    """`ce_weight * CE + dice_weight * (1 - soft Dice)`, pixels labelled `ignore_index` left out of both.

    Args:
        num_classes: logit maps; a list of `class_weights` must have this many entries.
        ignore_index: label of pixels that count nowhere (255: unlabelled, padding).
        class_weights: per-class CE weights, or a method of `class_weights.CHOICES` (auto, inverse_sqrt,
            median_freq): ones until `set_class_weights` puts the training masks' weights in (at the start of
            fitting), kept in checkpoints as a fixed list is; or None.
        ce_weight / dice_weight: the terms' factors; Dice is smp's multiclass soft Dice over present classes.
        label_smoothing: CE label smoothing.
        focal_gamma: > 0 makes the CE term the softmax focal loss, each pixel's CE times (1 - p_true) ** gamma;
            0 is plain CE.
        ohem: online hard example mining in training (`hard_pixels.Ohem`: null, true or {thresh, min_kept}): the CE
            term averages over the pixels whose true class has probability < thresh, at least min_kept per image;
            evaluation losses keep every pixel, so val/loss stays comparable across epochs.
        key: the options' config key, for error messages.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_weights: Sequence[float] | str | None = None,
                 ce_weight: float = 1.0, dice_weight: float = 0.0, label_smoothing: float = 0.0,
                 focal_gamma: float = 0.0, ohem: bool | Mapping[str, Any] | None = None,
                 key: str = "task.module.loss") -> None:
        super().__init__()
        weights = parse_class_weights(class_weights, num_classes, f"{key}.class_weights")
        #: the choice of `class_weights.CHOICES` still to count from the training masks, or None
        self.weights_method = weights if isinstance(weights, str) else None
        self.register_buffer("class_weights", None if weights is None else torch.ones(num_classes)
                             if isinstance(weights, str) else torch.tensor(weights, dtype=torch.float32))
        if isinstance(focal_gamma, bool) or not isinstance(focal_gamma, (int, float)) or focal_gamma < 0:
            raise ConfigError(f"{key}.focal_gamma={focal_gamma!r} must be a number >= 0 (0: plain cross-entropy; "
                              "2 is the focal loss paper's)")
        self.focal_gamma = float(focal_gamma)
        self.ohem = Ohem.parse(ohem, f"{key}.ohem")
        self.ignore_index = ignore_index
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.label_smoothing = label_smoothing
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index) if dice_weight else None

    def set_class_weights(self, weights: Tensor) -> None:
        """Put the weights counted from the training masks into the buffer (checkpoints then carry them)."""
        self.class_weights.copy_(weights)
        self.weights_method = None

    def forward(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """logits (B, K, H, W), target (B, H, W) int64 -> {"loss", "ce"[, "dice"]} scalars."""
        ohem = self.ohem if self.training else None
        if self.focal_gamma or ohem is not None:
            ce = pixel_cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index,
                                     label_smoothing=self.label_smoothing, focal_gamma=self.focal_gamma, ohem=ohem)
        else:  # the plain loss stays PyTorch's own kernel
            ce = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index,
                                 label_smoothing=self.label_smoothing)
        terms = {"ce": ce}
        if self.dice is not None:
            terms["dice"] = self.dice(logits, target)
        terms["loss"] = self.ce_weight * terms["ce"] + self.dice_weight * terms.get("dice", 0.0)
        return terms
