"""More training images for joint training, each source labelling only some heads (partial labels from several
sources): a mask folder (segmentation, and the classes its masks show), an ImageFolder (classification) or a
second COCO json (detection and classification; instance masks and the class mask when it has segmentations).

Their items have the targets of `data.multitask.MultiTaskCocoDataset` (empty boxes, a zero multi-hot, ... where a
source has no label) with `has` saying which heads are labelled; each head's loss leaves the other images out.
Classes are matched to the main json's by name (an ImageFolder's folder names, a mask folder's classes.txt) or, for
a COCO json, by category id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset
from torchvision import tv_tensors

from .coco import CocoIndex, check_annotated, load_coco
from .errors import DataError
from .imagefolder import FolderIndex, scan_split
from .images import load_rgb
from .mask_scan import scan_masks
from .masks import MaskIndex, read_classes, read_mask, scan_mask_split
from .splits import split_folder
from .transforms import detection_transforms

log = logging.getLogger(__name__)
KINDS = ("masks", "imagefolder", "coco")
# heads each kind can label; `heads` in a source's options narrows it
LABELS = {"masks": ("segmentation", "classification"), "imagefolder": ("classification",),
          "coco": ("detection", "instance_segmentation", "segmentation", "classification")}
ALL_HEADS = ("detection", "instance_segmentation", "segmentation", "classification")


def empty_target(height: int, width: int, num_classes: int, masks: bool) -> dict[str, Any]:
    """A target with no objects and no image-level classes, for images that label neither boxes nor classes:
    boxes (0, 4) float32, labels / iscrowd (0,) int64, area (0,) float32, classes (K,) float32 zeros, image_id -1
    and, with `masks`, masks (0, H, W) uint8 (so every item of a dataset with instance masks has the key)."""
    target: dict[str, Any] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                              "iscrowd": torch.zeros(0, dtype=torch.int64), "area": torch.zeros(0),
                              "image_id": -1, "classes": torch.zeros(num_classes)}
    if masks:
        target["masks"] = torch.zeros(0, height, width, dtype=torch.uint8)
    return target


def _has(labelled: Sequence[str]) -> dict[str, bool]:
    return {head: head in labelled for head in ALL_HEADS}


class _FolderItems(Dataset):
    """Items of a folder index (`samples`) that label the heads in `self.has`."""

    index: MaskIndex | FolderIndex
    has: dict[str, bool]

    def __len__(self) -> int:
        return len(self.index.samples)

    def labelled(self, head: str) -> int:
        """How many items have `head`'s label."""
        return len(self) if self.has[head] else 0


class MaskFolderItems(_FolderItems):
    """A mask folder's images (root/<split>/images + masks, its own classes.txt) as multi-task items: "semantic"
    (H, W) int64 in the main json's labels (0 background, 1..K, `ignore_index`), "classes" (K,) the multi-hot of the
    labels its mask shows, no boxes. `lut` maps the folder's pixel values to the main labels."""

    def __init__(self, index: MaskIndex, lut: np.ndarray, own_classes: int, num_classes: int,
                 transform: Callable, ignore_index: int, labels: Sequence[str], masks: bool) -> None:
        self.index, self.lut, self.own_classes, self.num_classes = index, lut, own_classes, num_classes
        self.transform, self.ignore_index, self.has, self.masks = transform, ignore_index, _has(labels), masks


    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        image_path, mask_path = self.index.samples[i]
        img = load_rgb(image_path)
        mask = self.lut[read_mask(mask_path, image_path, img.size, self.own_classes, self.ignore_index)]
        image, semantic = self.transform(img, tv_tensors.Mask(torch.from_numpy(mask)))
        semantic = semantic.as_subclass(Tensor).long()
        target = empty_target(*semantic.shape, self.num_classes, self.masks)
        present = semantic.unique()
        present = present[(present > 0) & (present <= self.num_classes)]
        target["classes"][present - 1] = 1.0
        target.update(semantic=semantic, has=dict(self.has))
        return image.as_subclass(Tensor), target


class ImageFolderItems(_FolderItems):
    """An ImageFolder's images (root/<split>/<class>/...) as multi-task items: "classes" (K,) one-hot of the folder's
    class in the main json's order (`label_of[folder class index]` in 1..K), no boxes, no class mask."""

    def __init__(self, index: FolderIndex, label_of: Sequence[int], num_classes: int, transform: Callable,
                 labels: Sequence[str], masks: bool) -> None:
        self.index, self.label_of, self.num_classes = index, list(label_of), num_classes
        self.transform, self.has, self.masks = transform, _has(labels), masks


    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        path, folder_class = self.index.samples[i]
        image = self.transform(load_rgb(path)).as_subclass(Tensor)
        target = empty_target(*image.shape[-2:], self.num_classes, self.masks)
        target["classes"][self.label_of[folder_class] - 1] = 1.0
        target["has"] = dict(self.has)
        return image, target


def _match_names(names: Sequence[str], class_names: Sequence[str], where: str) -> list[int]:
    """Label (1..K) of each name in the main json's `class_names`; DataError naming the first unknown one."""
    known = {name: i + 1 for i, name in enumerate(class_names)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"{where} names class{'es' * (len(unknown) > 1)} {unknown} that the training json's "
                        f"categories do not ({', '.join(class_names)}); rename {'them' if len(unknown) > 1 else 'it'} "
                        "to the json's category names (classes are matched by name)")
    return [known[n] for n in names]


def _labels(kind: str, heads: Sequence[str] | None, where: str) -> tuple[str, ...]:
    can = LABELS[kind]
    if heads is None:
        return can
    bad = sorted(set(heads) - set(can))
    if bad:
        raise ValueError(f"{where}: a {kind} source can label {', '.join(can)}, not {', '.join(bad)}; "
                         "fix its heads list")
    return tuple(heads)


class ExtraSource:
    """One entry of `data.extra_train`, checked and indexed once (`load`), then turned into a dataset per transform.

    Options: kind (masks | imagefolder | coco); masks and imagefolder: root (the folder holding `split`, default
    train) and, for masks, classes (instead of root/classes.txt: line 0 background, then names of the json's
    categories); coco: images, annotations (a json with the training json's category ids) and masks (whether
    its annotations have segmentations); every kind: heads (which of the heads it can label to use its labels
    for) and repeat (how many times its images are in an epoch, to balance sources of very different sizes).
    """

    def __init__(self, options: Mapping[str, Any], position: int) -> None:
        self.options = dict(options)
        self.where = f"data.extra_train[{position}]"
        kind = self.options.pop("kind", None)
        if kind not in KINDS:
            raise ValueError(f"{self.where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind: str = kind
        self.labels = _labels(kind, self.options.pop("heads", None), self.where)
        self.repeat = int(self.options.pop("repeat", 1))
        if self.repeat < 1:
            raise ValueError(f"{self.where}.repeat must be a whole number >= 1, got {self.repeat}")
        self.split = self.options.pop("split", "train")
        self.coco_masks = bool(self.options.pop("masks", False))
        allowed = {"masks": {"root", "classes"}, "imagefolder": {"root"}, "coco": {"images", "annotations"}}[kind]
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ValueError(f"{self.where}: unknown option{'s' * (len(unknown) > 1)} {unknown} for kind={kind} "
                             f"(it takes {', '.join(sorted(allowed | {'kind', 'heads', 'repeat', 'split'}))}"
                             f"{', masks' if kind == 'coco' else ''})")
        needed = sorted({"masks": {"root"}, "imagefolder": {"root"}, "coco": {"images", "annotations"}}[kind]
                        - {k for k, v in self.options.items() if v})
        if needed:
            raise ValueError(f"{self.where} (kind={kind}) needs {', '.join(needed)}")
        if kind == "coco" and not self.coco_masks:
            self.labels = tuple(h for h in self.labels if h not in ("instance_segmentation", "segmentation"))
        self.index: MaskIndex | FolderIndex | CocoIndex | None = None
        self.label_of: list[int] = []
        self.own_classes = 0

    def load(self, class_names: Sequence[str], category_ids: Sequence[int], ignore_index: int,
             workers: int = 1) -> None:
        """Read, check and index the source against the main json's classes (errors name the file and the fix)."""
        if self.kind == "masks":
            root = Path(self.options["root"]).expanduser()
            names, source = read_classes(root, self.options.get("classes"))
            if not names:
                raise DataError(f"{source} lists no classes")
            self.own_classes = len(names)
            self.label_of = [0, *_match_names(names[1:], class_names, source)]  # line 0: background
            self.index = scan_mask_split(split_folder(root, self.split))
            scan_masks(self.index, self.own_classes, ignore_index, workers)
        elif self.kind == "imagefolder":
            self.index = scan_split(split_folder(Path(self.options["root"]).expanduser(), self.split))
            self.label_of = _match_names(self.index.classes, class_names, str(self.index.split_dir))
        else:
            self.index = load_coco(self.options["annotations"], self.options["images"],
                                   category_ids=list(category_ids), segmentation=self.coco_masks)
            check_annotated(self.index, "extra train", segmentation=self.coco_masks)
        n = len(self.index.images if isinstance(self.index, CocoIndex) else self.index.samples)
        log.info("%s: %s %s, %d images labelling %s%s", self.where, self.kind,
                 self.options.get("root") or self.options.get("annotations"), n, ", ".join(self.labels),
                 f" (x{self.repeat} per epoch)" if self.repeat > 1 else "")

    def dataset(self, augment: Mapping[str, Any], train: bool, num_classes: int, ignore_index: int,
                masks: bool) -> Dataset:
        """The source's items (`load` first); `masks`: whether the main dataset's targets carry instance masks."""
        from .multitask import MultiTaskCocoDataset  # data.multitask builds these sources

        if self.index is None:
            raise RuntimeError(f"{self.where} is used before it is loaded")
        if isinstance(self.index, CocoIndex):
            items: Dataset = MultiTaskCocoDataset(self.index, detection_transforms(train, **augment),
                                                  self.coco_masks, ignore_index, labels=self.labels)
        elif isinstance(self.index, MaskIndex):
            lut = np.arange(max(ignore_index, self.own_classes) + 1, dtype=np.int64)
            lut[: self.own_classes] = self.label_of
            items = MaskFolderItems(self.index, lut, self.own_classes, num_classes,
                                    detection_transforms(train, boxes=False, **augment), ignore_index, self.labels,
                                    masks)
        else:
            items = ImageFolderItems(self.index, self.label_of, num_classes,
                                     detection_transforms(train, boxes=False, **augment), self.labels, masks)
        return ConcatDataset([items] * self.repeat) if self.repeat > 1 else items
