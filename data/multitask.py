"""One COCO instances json for several heads at once (joint multi-task training): boxes (+ instance masks) for
detection / instance segmentation, the instance masks painted into a class mask for semantic segmentation, and
the categories present as multi-label targets for classification. Items are images at their own size, as for
detection (`data/detection.py`): the model resizes them itself, like torchvision's detectors."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset

from .coco import CocoIndex
from .coco_source import CocoSource
from .detection import CocoDetectionDataModule, CocoDetectionDataset, collate
from .errors import RAISE, Problems
from .masks import check_classes
from .multitask_sources import ExtraSource
from .splits import SplitDataModule

log = logging.getLogger(__name__)
HEADS = ("detection", "instance_segmentation", "segmentation", "classification")


def semantic_from_instances(masks: Tensor, labels: Tensor, iscrowd: Tensor, ignore_index: int = 255) -> Tensor:
    """(H, W) int64 class mask painted from instance masks (N, H, W) uint8 / bool with labels (N,) int64 in 1..K
    and iscrowd (N,): 0 is background, label k paints k, crowd regions paint `ignore_index`.

    The rule of `data.masks.coco_mask`: larger regions (pixel count of the given masks) are painted first, so
    smaller objects on top of them stay visible; equal sizes keep the given order (the later one on top).
    """
    semantic = torch.zeros(masks.shape[-2:], dtype=torch.int64, device=masks.device)
    if not len(masks):
        return semantic
    filled = masks.bool()
    values = torch.where(iscrowd.to(filled.device) != 0, ignore_index, labels.to(filled.device).long())
    # stable, so ties keep the given order, as coco_mask's sorted() keeps the json's
    order = torch.argsort(-filled.flatten(1).sum(1), stable=True)
    for i in order.tolist():
        semantic[filled[i]] = values[i]
    return semantic


def multilabel_target(labels: Tensor, iscrowd: Tensor, num_classes: int) -> Tensor:
    """(K,) float32 multi-hot of the categories in an image: 1.0 at index l - 1 for each label l (1..K) with at
    least one non-crowd object (labels (N,), iscrowd (N,)). A crowd region alone does not count: it is an
    unlabelled group, which detection ignores as well."""
    target = torch.zeros(num_classes, dtype=torch.float32)
    target[labels[iscrowd == 0].long() - 1] = 1.0
    return target


class MultiTaskCocoDataset(CocoDetectionDataset):
    """`CocoDetectionDataset`'s items (same loading and joint transforms) with the targets of every head.

    Items are `(image (3, H, W) float32 in [0, 1], target)`; target holds the detection target (boxes (N, 4)
    float32 xyxy, labels (N,) int64 in 1..K, iscrowd (N,) int64, area (N,) float32, image_id, and with
    `has_masks` masks (N, H, W) uint8) plus
      - "semantic": (H, W) int64 class mask (`semantic_from_instances`), only with `has_masks`;
      - "classes": (K,) float32 multi-hot of the categories present (`multilabel_target`);
      - "has": head name (`HEADS`) -> bool, whether this image has that head's label.

    `has_masks` needs an index loaded with `load_coco(..., segmentation=True)`. `hidden` (head -> item indices) and
    `labels` (the heads this json labels; default every one it can) make labels partial.
    """

    def __init__(self, index: CocoIndex, transform: Callable | None = None, has_masks: bool = True,
                 ignore_index: int = 255, hidden: Mapping[str, frozenset[int]] | None = None,
                 labels: Sequence[str] | None = None) -> None:
        super().__init__(index, transform, masks=has_masks)
        self.ignore_index = ignore_index
        # a COCO json labels every image for boxes and classes (no objects: a labelled negative); pixels only when
        # its annotations carry segmentations; `labels` (a source's `heads`) narrows that
        self.has = {"detection": True, "instance_segmentation": has_masks, "segmentation": has_masks,
                    "classification": True}
        if labels is not None:
            self.has = {head: flag and head in labels for head, flag in self.has.items()}
        self.hidden = {head: frozenset(items) for head, items in (hidden or {}).items()}  # head -> item indices

    def labelled(self, head: str) -> int:
        """How many items have `head`'s label."""
        return len(self) - len(self.hidden.get(head, ())) if self.has.get(head) else 0

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        image, target = super().__getitem__(i)
        if self.masks:
            # painted after the transforms, from the transformed instance masks: the class mask matches the flipped /
            # cropped image and boxes, and objects the transforms dropped are left out of it too
            target["semantic"] = semantic_from_instances(target["masks"], target["labels"], target["iscrowd"],
                                                         self.ignore_index)
        target["classes"] = multilabel_target(target["labels"], target["iscrowd"], len(self.index.category_ids))
        target["has"] = {head: flag and i not in self.hidden.get(head, ()) for head, flag in self.has.items()}
        return image, target


class MultiTaskCocoDataModule(SplitDataModule):
    """Joint detection / instance segmentation / semantic segmentation / multi-label classification on one COCO
    dataset (`CocoSource`), see `MultiTaskCocoDataset`. Batches are `(images: tuple of (3, H, W) float in [0, 1],
    targets: tuple of dicts)`, as for detection (`data.detection.collate`).

    The paths, the split indexes, the transforms and the size check are those of a `CocoDetectionDataModule`
    built with the same arguments (`self.detection`), so both read a dataset the same way.

    Args:
        root, source: the `CocoSource`'s arguments (`train_images`, `train_annotations`, ..., `drop_bad_boxes`,
            `synthetic`).
        augment: options of `detection_transforms` for training (hflip, photometric, zoom_out, max_zoom, iou_crop)
            and `flip_check`, as for detection (the json's instance masks decide the flips of every source).
        model_min_size: the detector's `task.model.min_size`, only to say at setup when it is far from the
            images' own size.
        masks: every annotation has a `segmentation` (polygons or RLE): targets carry instance masks and the
            class mask, and the segmentation heads are labelled. False for a boxes-only json (not required then).
        ignore_index: class-mask value of crowd regions; must be above the number of categories.
        hide_labels: head -> fraction of the training images whose label for that head is hidden (`has` false), to
            train with partial labels from one fully labelled json (e.g. {segmentation: 0.75}: masks for a quarter
            of the images). The same images every epoch and on every DDP process (seeded by `hide_seed` and the
            head's name); evaluation sees every label.
        extra_train: more training sources, each labelling some heads (`data.multitask_sources.ExtraSource`: a mask
            folder, an ImageFolder, a second COCO json), e.g. [{kind: imagefolder, root: /data/photos}]; their
            images join the training set, evaluation stays on the json's val / test splits.
    """

    collate_fn = collate

    def __init__(self, root: str | None = None, *, batch_size: int = 4, num_workers: int | None = None,
                 augment: Mapping[str, Any] | None = None, pin_memory: bool | None = None,
                 model_min_size: int | Sequence[int] | None = None, masks: bool = True, ignore_index: int = 255,
                 hide_labels: Mapping[str, float] | None = None, hide_seed: int = 0,
                 extra_train: Sequence[Mapping[str, Any]] | None = None, **source: Any) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        # masks=False builds a CocoSource that neither keeps nor requires segmentations
        self.detection = CocoDetectionDataModule(root, batch_size=batch_size, num_workers=num_workers,
                                                 augment=augment, pin_memory=pin_memory,
                                                 model_min_size=model_min_size, masks=masks, **source)
        self.masks = masks
        self.ignore_index = ignore_index
        self.hide_labels = {k: float(v) for k, v in (hide_labels or {}).items() if v}
        unknown = sorted(set(self.hide_labels) - set(HEADS))
        bad = {k: v for k, v in self.hide_labels.items() if not 0.0 <= v <= 1.0}
        if unknown or bad:
            raise ValueError(f"data.hide_labels takes heads {', '.join(HEADS)} with fractions in [0, 1], got "
                             f"{dict(self.hide_labels)}")
        self.hide_seed = hide_seed
        self.augment = self.detection.augment  # the transform options, flip_check popped (checked there)
        self.extra = [ExtraSource(options, i) for i, options in enumerate(extra_train or ())]
        self._extra_loaded = False

    @property
    def source(self) -> CocoSource:
        """The dataset on disk (shared with `self.detection`)."""
        return self.detection.source

    def prepare_data(self) -> None:
        """Generate the synthetic set on first use (idempotent; runs on one process per node)."""
        self.detection.prepare_data()

    def annotation_file(self, split: str) -> Path:
        """The json of `split` (train / val / test; test falls back to val), for COCO evaluation."""
        return self.detection.annotation_file(split)

    def check_sizes(self, sizes: Sequence[tuple[int, int]], problems: Problems = RAISE) -> None:
        """Say when the detector's resize is far from the train images' (width, height) `sizes`."""
        self.detection.check_sizes(sizes, problems)

    @property
    def class_names(self) -> list[str]:
        """K names: label i+1 is `class_names[i]` (the train json's categories sorted by id); class-mask value
        i+1 and multi-hot index i are the same class."""
        return self.detection.class_names

    @property
    def category_ids(self) -> list[int]:
        """K COCO category ids: label i+1 is category `category_ids[i]`."""
        return self.detection.category_ids

    def setup(self, stage: str | None = None) -> None:
        self.detection.setup(stage)
        if self.masks:  # a label equal to ignore_index would be ignored by the segmentation loss
            check_classes(["background", *self.class_names], self.ignore_index, str(self.annotation_file("train")))
        if self.extra and not self._extra_loaded and (stage or "fit") == "fit":
            self._extra_loaded = True
            for source in self.extra:
                source.load(self.class_names, self.category_ids, self.ignore_index, max(1, self.num_workers))

    def dataset(self, split: str, train: bool) -> MultiTaskCocoDataset | ConcatDataset:
        # detection's own dataset gives the split's index and transform, so the two never drift apart
        base = self.detection.dataset(split, train)
        hidden = hidden_items(len(base), self.hide_labels, self.hide_seed) if split == "train" else None
        for head, items in (hidden or {}).items():
            log.info("partial labels: %s labels hidden on %d of %d training images (data.hide_labels.%s=%g)",
                     head, len(items), len(base), head, self.hide_labels[head])
        dataset = MultiTaskCocoDataset(base.index, base.transform, base.masks, self.ignore_index, hidden)
        if split != "train" or not self.extra:
            return dataset
        if not self._extra_loaded:
            self.setup("fit")
        num_classes = len(self.class_names)
        # the extra sources flip as the json's images do: the json's instances decide (their own masks are not read)
        options = self.detection.transform_options(train)
        parts = [dataset, *(source.dataset(options, train, num_classes, self.ignore_index, base.masks)
                            for source in self.extra)]
        combined = ConcatDataset(parts)
        leaves = [leaf for part in parts for leaf in getattr(part, "datasets", [part])]  # repeats are ConcatDatasets
        log.info("training images per head, of %d (the json's %d and data.extra_train's): %s", len(combined),
                 len(dataset), ", ".join(f"{head} {sum(leaf.labelled(head) for leaf in leaves)}" for head in HEADS))
        return combined


def hidden_items(n: int, fractions: Mapping[str, float], seed: int = 0) -> dict[str, frozenset[int]]:
    """head -> the round(fraction * n) item indices whose label is hidden: a seeded permutation per head (its name
    in the seed), so heads hide different images and every process and epoch hides the same ones."""
    out = {}
    for head, fraction in fractions.items():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(head.encode()))
        out[head] = frozenset(torch.randperm(n, generator=generator)[: round(fraction * n)].tolist())
    return out
