"""Image classification's part of the task module: label-smoothed cross-entropy and top-1/top-5 accuracy per split;
in joint runs multi-label (the categories present in an image): binary cross-entropy and mean average precision."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

from ..module import HeadsTask
from ..parts import SPLITS, HeadPart, tie_to


def accuracy_metrics(num_classes: int) -> MetricCollection:
    metrics = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:  # top-5 is always 1.0 with five classes or fewer
        metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


class ClassificationPart(HeadPart):
    """Outputs logits (B, K). Single-label targets are labels (B,) int64; logs `{split}/<prefix>acc1`, `/acc5`.
    Multi-label (`multilabel`, joint runs) targets are the per-image dicts' "classes" (K,) multi-hot, with
    "has" saying which images are labelled; logs `{split}/<prefix>mAP` (macro average precision over classes)."""

    def __init__(self, name: str, num_classes: int, class_names: list[str] | None = None, prefix: str = "", *,
                 label_smoothing: float = 0.0, multilabel: bool = False) -> None:
        super().__init__(name, num_classes, class_names, prefix)
        self.multilabel = multilabel
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.label_smoothing = label_smoothing
        if multilabel:
            self.set_metrics({s: MetricCollection({"mAP": MultilabelAveragePrecision(num_classes, average="macro")},
                                                  prefix=f"{s}/{prefix}") for s in SPLITS})
        else:
            self.set_metrics({s: accuracy_metrics(num_classes).clone(prefix=f"{s}/{prefix}") for s in SPLITS})

    def joint_targets(self, targets: Any) -> tuple[Tensor, Tensor]:
        """((B, K) multi-hot, (B,) bool: labelled) from the per-image dicts."""
        has = torch.tensor([bool(t["has"].get(self.name, True)) for t in targets])
        return torch.stack([t["classes"] for t in targets]), has

    def labelled(self, targets: Any) -> int:
        return int(targets[1].sum()) if self.multilabel else len(targets)

    def loss(self, outputs: Tensor, targets: Any) -> dict[str, Tensor]:
        if not self.multilabel:
            return {"loss": self.criterion(outputs, targets)}
        classes, has = targets
        if not has.any():
            return {"loss": tie_to(outputs)}
        classes = classes.to(outputs.device)
        if self.label_smoothing:
            classes = classes * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        keep = has.to(outputs.device)
        return {"loss": F.binary_cross_entropy_with_logits(outputs[keep], classes[keep])}

    def update(self, split: str, outputs: Tensor, targets: Any) -> None:
        if not self.multilabel:
            self.split_metrics(split).update(outputs.detach(), targets)
            return
        classes, has = targets
        if has.any():
            keep = has.to(outputs.device)
            self.split_metrics(split).update(outputs.detach()[keep], classes.to(outputs.device)[keep].long())

    def log_split(self, module: L.LightningModule, split: str) -> dict[str, Tensor]:
        names = ("acc1", "acc5", "mAP")
        return module.log_metrics(self.split_metrics(split), prog_bar=tuple(f"val/{self.prefix}{n}" for n in names))

    def predict(self, outputs: Tensor) -> Tensor:
        return outputs.sigmoid() if self.multilabel else outputs.softmax(dim=1)


def ClassificationTask(model: nn.Module, *args: Any, label_smoothing: float = 0.0,  # noqa: N802 - config target
                       class_names: list[str] | None = None, **kwargs: Any) -> HeadsTask:
    """The classification task module (`task=classification`): batches `(images (B, 3, H, W), labels (B,))`; logs
    `{train,val,test}/loss`, `/acc1`, `/acc5`."""
    part = ClassificationPart("classification", model.head.num_classes, class_names, label_smoothing=label_smoothing)
    return HeadsTask(model, *args, parts={"classification": part}, class_names=class_names, **kwargs)
