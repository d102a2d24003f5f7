"""LightningDataModule for object detection (boxes) and instance segmentation (boxes + masks) on COCO instances
json (given, or the generated synthetic set)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .coco import CocoIndex, check_image_size
from .coco_source import CocoSource
from .errors import RAISE, Problems
from .flip_check import checked_hflip_instances, coco_instance_crops
from .images import load_rgb
from .masks import instance_masks
from .scale import check_detection_size
from .splits import SPLITS, STAGE_SPLITS, SplitDataModule
from .transforms import augment_options, detection_transforms


def collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[tuple[Tensor, ...], tuple[dict[str, Any], ...]]:
    """Images of different sizes stay separate: (tuple of (3, H_i, W_i) images, tuple of targets)."""
    return tuple(zip(*batch))  # type: ignore[return-value]


class CocoDetectionDataset(Dataset):
    """Items are `(image (3, H, W) float32 in [0, 1], target)` after `transform`; target holds
    boxes (N, 4) float32 xyxy pixels, labels (N,) int64 in 1..K, iscrowd (N,) int64, area (N,) float32 and
    image_id (int, the COCO id); with `masks` (an index loaded with `segmentation=True`) also masks (N, H, W)
    uint8 0/1, one per box (crowd regions too). Images without objects give N = 0."""

    def __init__(self, index: CocoIndex, transform: Callable | None = None, masks: bool = False) -> None:
        self.index = index
        self.transform = transform or detection_transforms(train=False)
        self.masks = masks

    def __len__(self) -> int:
        return len(self.index.images)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        rec = self.index.images[i]
        img = load_rgb(rec.path)
        check_image_size(rec, img.size, self.index.json_path)  # raises DataError on a mismatch
        target = {  # copies: transforms may work in place, the index is shared by every epoch
            "boxes": tv_tensors.BoundingBoxes(torch.tensor(rec.boxes), format="XYXY",
                                              canvas_size=(rec.height, rec.width)),
            "labels": torch.tensor(rec.labels),
            "iscrowd": torch.tensor(rec.iscrowd),
            "area": torch.tensor(rec.area),
            "image_id": rec.image_id,
        }
        if self.masks:  # tv_tensors.Mask: flipped, cropped and filtered with their boxes by the transforms
            target["masks"] = tv_tensors.Mask(torch.from_numpy(instance_masks(rec)))
        image, target = self.transform(img, target)
        # plain tensors out: the model and the evaluator need no tv_tensors semantics
        target["boxes"] = target["boxes"].as_subclass(Tensor)
        if self.masks:
            target["masks"] = target["masks"].as_subclass(Tensor)
        return image.as_subclass(Tensor), target


class CocoDetectionDataModule(SplitDataModule):
    """Object detection (or, with `masks`, instance segmentation) on a COCO dataset (`CocoSource`: COCO's layout
    under `root`, or explicit paths per split; without a test split, tests on val). Batches are `(images: tuple of
    (3, H, W) float in [0, 1], targets: tuple of dicts)`, see `collate`.

    Args:
        root, source: the `CocoSource`'s arguments (`train_images`, `train_annotations`, ..., `drop_bad_boxes`,
            `synthetic`: the generated set's `kind` and options, see `data.kinds.synthetic_detection_kind`).
        augment: options of `detection_transforms` for training (hflip, photometric, zoom_out, max_zoom, iou_crop),
            and `flip_check` (default true): hflip goes to 0 when the training instance masks show classes with a
            handedness (`data/flip_check.py`; boxes-only annotations keep it).
        model_min_size: the detector's `task.model.min_size`, only to say at setup when it is far from the
            images' own size (conf/task_data/coco_detection.yaml fills it in).
        masks: instance segmentation: every annotation needs a `segmentation` (polygons or RLE) and targets carry
            its mask (`CocoDetectionDataset`).
    """

    collate_fn = collate

    def __init__(
        self,
        root: str | None = None,
        *,
        batch_size: int = 4,
        num_workers: int | None = None,
        augment: Mapping[str, Any] | None = None,
        pin_memory: bool | None = None,
        model_min_size: int | Sequence[int] | None = None,
        masks: bool = False,
        **source: Any,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        # the paths per split, drop_bad_boxes, synthetic; masks need each annotation's polygons / RLE
        self.source = CocoSource(root, segmentation=masks, **source)
        self.masks = masks
        _, self.augment = augment_options(augment, "detection")
        self.flip_check = bool(self.augment.pop("flip_check", True))
        self._hflip: float | None = None  # the training flip probability after the flip check
        self.model_min_size = model_min_size
        self._sizes_checked = False

    def prepare_data(self) -> None:
        """Generate the synthetic set on first use (idempotent; runs on one process per node)."""
        self.source.prepare()

    def annotation_file(self, split: str) -> Path:
        """The json of `split` (train / val / test; test falls back to val), for COCO evaluation."""
        return self.source.annotation_file(split)

    def check_sizes(self, sizes: Sequence[tuple[int, int]], problems: Problems = RAISE) -> None:
        """Say when the detector's resize is far from the train images' (width, height) `sizes`."""
        check_detection_size(self.model_min_size, sizes, problems)

    def _check_sizes_once(self) -> None:
        if not self._sizes_checked:
            self._sizes_checked = True
            self.check_sizes(self.source.train_sizes())

    @property
    def class_names(self) -> list[str]:
        """K names: label i+1 is `class_names[i]` (the train json's categories sorted by id)."""
        return self.source.index("train").class_names

    @property
    def category_ids(self) -> list[int]:
        """K COCO category ids: label i+1 is category `category_ids[i]`."""
        return self.source.index("train").category_ids

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", SPLITS):
            self.source.index(split)
        self._check_sizes_once()

    @property
    def hflip(self) -> float:
        """`augment.hflip`, or 0 when `augment.flip_check` finds classes with a handedness in the training instance
        masks (`data/flip_check.py`); checked once, when a training transform is first built."""
        if self._hflip is None:
            hflip = float(self.augment.get("hflip", 0.5))
            if self.flip_check and hflip > 0:
                crops = coco_instance_crops(self.source.index("train"))
                hflip = checked_hflip_instances(hflip, crops, self.class_names)
            self._hflip = hflip
        return self._hflip

    def transform_options(self, train: bool) -> dict[str, Any]:
        """The options of `detection_transforms`: `augment`, for training with the checked `hflip`."""
        return {**self.augment, "hflip": self.hflip} if train else dict(self.augment)

    def dataset(self, split: str, train: bool) -> CocoDetectionDataset:
        transform = detection_transforms(train, **self.transform_options(train))
        return CocoDetectionDataset(self.source.index(split), transform, self.masks)
