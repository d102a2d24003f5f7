"""LightningDataModule for object detection on COCO instances json (given, or the generated synthetic set)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .coco import CocoIndex, check_annotated, check_image_size, load_coco
from .errors import RAISE, DataError, Problems
from .images import load_rgb
from .scale import check_detection_size
from .splits import STAGE_SPLITS, SplitDataModule
from .synthetic import synthetic_detection
from .transforms import detection_transforms

SPLITS = ("train", "val", "test")


def collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[tuple[Tensor, ...], tuple[dict[str, Any], ...]]:
    """Images of different sizes stay separate: (tuple of (3, H_i, W_i) images, tuple of targets)."""
    return tuple(zip(*batch))  # type: ignore[return-value]


class CocoDetectionDataset(Dataset):
    """Items are `(image (3, H, W) float32 in [0, 1], target)` after `transform`; target holds
    boxes (N, 4) float32 xyxy pixels, labels (N,) int64 in 1..K, iscrowd (N,) int64, area (N,) float32 and
    image_id (int, the COCO id). Images without objects give N = 0."""

    def __init__(self, index: CocoIndex, transform: Callable | None = None) -> None:
        self.index = index
        self.transform = transform or detection_transforms(train=False)

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
        image, target = self.transform(img, target)
        # plain tensors out: the model and the evaluator need no tv_tensors semantics
        target["boxes"] = target["boxes"].as_subclass(Tensor)
        return image.as_subclass(Tensor), target


class CocoDetectionDataModule(SplitDataModule):
    """COCO layout `root/annotations/instances_<split>.json` + images in `root/<split>/`, or explicit paths
    per split (which win over the layout); without a test split, tests on val.
    Batches are `(images: tuple of (3, H, W) float in [0, 1], targets: tuple of dicts)`, see `collate`.

    Args:
        root: dataset folder; `None` with no explicit paths and `synthetic` set means "generate the synthetic
            set and use it".
        augment: options of `detection_transforms` for training (hflip, photometric, zoom_out, max_zoom, iou_crop).
        drop_bad_boxes: drop boxes outside the image or under 1 px (counted in a warning) instead of failing.
        synthetic: arguments of `data.synthetic.synthetic_detection`.
        model_min_size: the detector's `task.model.min_size`, only to say at setup when it is far from the
            images' own size (conf/task_data/coco_detection.yaml fills it in).
    """

    collate_fn = collate
    segmentation = False  # load_coco(segmentation=...): keep and require each annotation's polygons / RLE

    def __init__(
        self,
        root: str | None = None,
        *,
        train_images: str | None = None,
        train_annotations: str | None = None,
        val_images: str | None = None,
        val_annotations: str | None = None,
        test_images: str | None = None,
        test_annotations: str | None = None,
        batch_size: int = 4,
        num_workers: int | None = None,
        augment: Mapping[str, Any] | None = None,
        drop_bad_boxes: bool = False,
        synthetic: Mapping[str, Any] | None = None,
        pin_memory: bool | None = None,
        model_min_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        given = {"train": (train_images, train_annotations), "val": (val_images, val_annotations),
                 "test": (test_images, test_annotations)}
        self.explicit = {s: tuple(Path(p).expanduser() if p else None for p in ps) for s, ps in given.items()}
        self.root = Path(root).expanduser() if root is not None else None
        any_explicit = any(p for ps in self.explicit.values() for p in ps)
        self.synthetic = dict(synthetic) if synthetic is not None and root is None and not any_explicit else None
        if self.root is None and self.synthetic is None:
            missing = [f"data.{s}_{kind}" for s in ("train", "val")
                       for kind, p in zip(("images", "annotations"), self.explicit[s]) if p is None]
            if missing:
                raise DataError(f"data.root is not set and {', '.join(missing)} are missing: pass "
                                "data.root=/path/to/coco (annotations/instances_train.json, train/, val/) or "
                                "the images folder and annotation json of each split")
        self.augment = dict(augment or {})
        self.drop_bad_boxes = drop_bad_boxes
        self.model_min_size = model_min_size
        self._splits: dict[str, CocoIndex] = {}
        self._sizes_checked = False

    def prepare_data(self) -> None:
        """Generate the synthetic set on first use (idempotent; runs on one process per node)."""
        if self.root is None and self.synthetic is not None:
            self.root = synthetic_detection(**self.synthetic)

    def _paths(self, split: str) -> tuple[Path, Path]:
        """(images folder, annotation json) of `split`."""
        if self.root is None and self.synthetic is not None:
            self.prepare_data()
        images, annotations = self.explicit[split]
        if self.root is not None:
            images = images or self.root / split
            annotations = annotations or self.root / "annotations" / f"instances_{split}.json"
        if split == "test" and not any(self.explicit["test"]) and not (annotations and annotations.exists()):
            return self._paths("val")  # no test split: test on val, as documented
        if images is None or annotations is None:
            raise DataError(f"the {split} split needs data.{split}_images and data.{split}_annotations (or data.root)")
        return images, annotations

    def annotation_file(self, split: str) -> Path:
        """The json of `split` (train / val / test; test falls back to val), for COCO evaluation."""
        return self._paths(split)[1]

    def _index(self, split: str) -> CocoIndex:
        """The validated split; a split without objects stops here (`check_annotated`)."""
        if split not in self._splits:
            images, annotations = self._paths(split)
            categories = None if split == "train" else self._index("train").category_ids
            index = load_coco(annotations, images, category_ids=categories, drop_bad_boxes=self.drop_bad_boxes,
                              segmentation=self.segmentation)
            check_annotated(index, split, segmentation=self.segmentation)
            self._splits[split] = index
        return self._splits[split]

    def check_sizes(self, sizes: Sequence[tuple[int, int]], problems: Problems = RAISE) -> None:
        """Say when the detector's resize is far from the train images' (width, height) `sizes`."""
        check_detection_size(self.model_min_size, sizes, problems)

    def train_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of every train image, from the json (nothing read from disk)."""
        return [(rec.width, rec.height) for rec in self._index("train").images]

    def _check_sizes_once(self) -> None:
        if not self._sizes_checked:
            self._sizes_checked = True
            self.check_sizes(self.train_sizes())

    @property
    def class_names(self) -> list[str]:
        """K names: label i+1 is `class_names[i]` (the train json's categories sorted by id)."""
        return self._index("train").class_names

    @property
    def category_ids(self) -> list[int]:
        """K COCO category ids: label i+1 is category `category_ids[i]`."""
        return self._index("train").category_ids

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", SPLITS):
            self._index(split)
        self._check_sizes_once()

    def dataset(self, split: str, train: bool) -> CocoDetectionDataset:
        return CocoDetectionDataset(self._index(split), detection_transforms(train, **self.augment))
