"""LightningModule for image classification: label-smoothed cross-entropy, top-1/top-5 accuracy per split."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from ..base import TaskModule


def accuracy_metrics(num_classes: int) -> MetricCollection:
    metrics = {"acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:  # top-5 is always 1.0 with five classes or fewer
        metrics["acc5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


class ClassificationTask(TaskModule):
    """Batches are `(images (B, 3, H, W), labels (B,))`; logs `{train,val,test}/loss`, `/acc1`, `/acc5`."""

    def __init__(self, model: nn.Module, *args: Any, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        num_classes = model.fc.out_features
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # one metric object per split, so val never mixes into train's running state
        self.train_metrics = accuracy_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = accuracy_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = accuracy_metrics(num_classes).clone(prefix="test/")

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _step(self, batch: tuple[Tensor, Tensor], split: str, metrics: MetricCollection) -> Tensor:
        images, labels = batch
        logits = self.model(images)
        loss = self.criterion(logits, labels)
        metrics.update(logits.detach(), labels)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=labels.numel(), sync_dist=True)  # the epoch mean over every rank's batches
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_metrics(self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_metrics(self.val_metrics, prog_bar=("val/acc1", "val/acc5"))

    def on_test_epoch_end(self) -> None:
        self.log_metrics(self.test_metrics)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.model(images).softmax(dim=1)
