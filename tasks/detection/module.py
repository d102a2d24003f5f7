"""Faster R-CNN detection's and Mask R-CNN instance segmentation's part of the task module: torchvision's losses,
COCO metrics per split (boxes, and masks), drawn predictions."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from data.scale import check_anchor_sizes, detector_box_sides

from ..module import HeadsTask
from ..parts import HeadPart
from .evaluation import SEGM_PREFIX, CocoMetrics
from .visualize import detection_grid

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


class DetectionPart(HeadPart):
    """Targets are a tuple of per-image dicts {"boxes": (N, 4) xyxy, "labels": (N,) 1..K, "iscrowd", ["masks"]};
    outputs torchvision's losses in training, per-image detections in eval.

    Logs each torchvision loss term in training, `{val,test}/<prefix>{AP,AP50,AP75,APs,APm,APl,AR100}`, and with a
    mask branch (Mask R-CNN) the mask metrics as `{val,test}/<prefix>segm/AP`, ...; draws predicted (coloured, with
    class and score, and masks) and ground-truth (green) boxes.
    """

    eval_loss = False  # torchvision's R-CNNs give losses in training only
    epoch_train_loss = False

    def __init__(self, name: str, num_classes: int, class_names: list[str] | None = None, prefix: str = "", *,
                 masks: bool = False, vis_score_threshold: float = 0.3) -> None:
        super().__init__(name, num_classes, class_names, prefix)
        self.masks = masks
        self.set_metrics({s: CocoMetrics(masks=masks) for s in ("val", "test")})
        self.vis_score_threshold = vis_score_threshold

    def setup(self, module: L.LightningModule, stage: str) -> None:
        """Fitting starts: say when the anchors are far from the training boxes' sizes (`check_anchor_sizes`)."""
        source = getattr(getattr(module.trainer, "datamodule", None), "source", None)
        if stage != "fit" or source is None:
            return
        anchors = next(m for m in module.model.modules() if isinstance(m, AnchorGenerator))
        resize = next(m for m in module.model.modules() if isinstance(m, GeneralizedRCNNTransform))
        sides = detector_box_sides(source.index("train").images, int(resize.min_size[-1]), int(resize.max_size))
        check_anchor_sizes(anchors.sizes, sides)

    def joint_targets(self, targets: Any) -> tuple[tuple[dict[str, Any], ...], list[bool]]:
        """(the per-image dicts, per image whether it is labelled for this head: boxes, and masks with a mask
        branch)."""
        has = [bool(t["has"].get(self.name, True)) and (not self.masks or "masks" in t) for t in targets]
        return tuple(targets), has

    def labelled(self, targets: Any) -> int:
        return sum(targets[1]) if self.joint else len(targets)

    def model_targets(self, targets: Any, training: bool) -> Any:
        """Training targets without crowd objects; in a joint run None for an image without this head's label
        (the model leaves it out of the R-CNN losses)."""
        if not training:
            return None
        if not self.joint:
            return [without_crowd(t) for t in targets]
        return [without_crowd(t) if h else None for t, h in zip(*targets)]

    def loss(self, outputs: dict[str, Tensor], targets: Any) -> dict[str, Tensor]:
        return {"loss": sum(outputs.values()), **outputs}

    def update(self, split: str, outputs: Any, targets: Any) -> None:
        metrics = self.split_metrics(split)
        if metrics is None:  # none in training: the outputs are losses then
            return
        if self.joint:
            kept = [(p, t) for p, t, h in zip(outputs, *targets) if h]
            if kept:
                metrics.update([p for p, _ in kept], [t for _, t in kept])
            return
        metrics.update(outputs, targets)

    def log_split(self, module: L.LightningModule, split: str) -> dict[str, Tensor]:
        if self.split_metrics(split) is None:
            return {}
        prefix = f"{split}/{self.prefix}"
        bar = (f"{prefix}AP", f"{prefix}{SEGM_PREFIX}AP")
        return module.log_metrics(self.split_metrics(split), prefix, prog_bar=bar)

    def keep(self, images: Any, outputs: Any, targets: Any, n: int) -> None:
        targets = targets[0] if self.joint else targets
        self._vis = ([i.cpu() for i in images[:n]], [{k: v.cpu() for k, v in p.items()} for p in outputs[:n]],
                     [_to_cpu(t) for t in targets[:n]])

    def draw(self) -> tuple[Tensor, str] | None:
        if self._vis is None:
            return None
        grid = detection_grid(*self._vis, self.class_names, score_threshold=self.vis_score_threshold)
        self._vis = None
        return grid, "predictions (colour) and ground truth (green)"


def DetectionTask(model: torch.nn.Module, *args: Any, vis_images: int = 4,  # noqa: N802 - the config's target
                  vis_score_threshold: float = 0.3, class_names: list[str] | None = None, **kwargs: Any) -> HeadsTask:
    """The detection / instance segmentation task module: batches `(images: tuple of (3, H, W) in [0, 1], targets:
    tuple of dicts)` (see data/detection.py); logs `train/loss` and each torchvision loss term, the COCO metrics
    `{val,test}/AP`, ... (and `{val,test}/segm/AP`, ... with a mask branch); draws the first `vis_images` validation
    images to `<run dir>/val_predictions/epochNNN.png` each validation (also sent to W&B)."""
    head = model.head
    part = DetectionPart("detection", head.num_classes, class_names, masks=head.masks,
                         vis_score_threshold=vis_score_threshold)
    return HeadsTask(model, *args, parts={"detection": part}, vis_images=vis_images, class_names=class_names,
                     **kwargs)
