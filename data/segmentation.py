"""LightningDataModules for semantic segmentation: image/mask folders (given, or the generated synthetic set) and
COCO instance annotations painted into class-index masks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .class_names import background_classes
from .coco import CocoIndex, check_image_size
from .coco_source import CocoSource
from .errors import RAISE, DataError, Problems
from .flip_check import checked_hflip
from .images import load_rgb, sample_sizes
from .kinds import synthetic_segmentation_kind
from .mask_scan import PixelCounts, class_counts, scan_masks, shrunk
from .masks import MaskIndex, check_classes, coco_mask, read_classes, read_mask, scan_mask_split
from .preprocessing import Preprocessing, pad_to_batch
from .sampling import spread
from .scale import check_segmentation_sizes, median_short_side, to_multiple, validate_size
from .splits import SPLITS, STAGE_SPLITS, SplitDataModule, split_folder
from .transforms import augment_options, segmentation_transforms

log = logging.getLogger("data")
FLIP_CHECK_MASKS = 100  # training masks the flip check reads (spread over the split)
# COCO masks painted for the class pixel counts (`class_weights: auto`, the default): a spread sample estimates the
# frequencies to well within the weights' square root, where painting all of COCO's 118k would take minutes
COUNT_MASKS = 2000


def collate(batch: Sequence[tuple[Tensor, Tensor]], record: Preprocessing) -> tuple[Tensor, Tensor]:
    """Stack `(image (3, H_i, W_i), mask (H_i, W_i))` items into `(images (B, 3, H, W), masks (B, H, W) int64)`,
    H and W the largest in the batch rounded up to a multiple of the record's `size_divisibility`; at the bottom /
    right images are padded with the mean colour and masks with `mask_pad_value` (ignore_index), so padding counts
    in no loss or metric."""
    images = record.pad_images([img for img, _ in batch])
    masks = pad_to_batch([mask.to(torch.int64) for _, mask in batch], record.size_divisibility,
                         255 if record.mask_pad_value is None else record.mask_pad_value)
    return images, masks


class SegmentationDataset(Dataset):
    """Items are `(image (3, H, W) float32, mask (H, W) int64)` after `transform`, mask values in 0..K-1 or
    `ignore_index`. Subclasses implement `load(i) -> (PIL image, mask (H, W) integer array)`."""

    def __init__(self, transform: Callable | None = None) -> None:
        self.transform = transform or segmentation_transforms(train=False, image_size=0)

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img, mask = self.load(i)
        image, mask = self.transform(img, tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))))
        return image.as_subclass(Tensor), mask.as_subclass(Tensor)  # plain tensors: the model needs no tv_tensors


class MaskFolderDataset(SegmentationDataset):
    """The pairs of a `MaskIndex`; a mask of the wrong size or with values that are neither a class index nor
    `ignore_index` raises DataError naming the mask file when the item is loaded."""

    def __init__(self, index: MaskIndex, num_classes: int, transform: Callable | None = None,
                 ignore_index: int = 255) -> None:
        super().__init__(transform)
        self.index, self.num_classes, self.ignore_index = index, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.index.samples)

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        image_path, mask_path = self.index.samples[i]
        img = load_rgb(image_path)
        return img, read_mask(mask_path, image_path, img.size, self.num_classes, self.ignore_index)


class CocoSegmentationDataset(SegmentationDataset):
    """The images of a `CocoIndex` loaded with `segmentation=True`, their annotations painted by `coco_mask`."""

    def __init__(self, index: CocoIndex, transform: Callable | None = None, ignore_index: int = 255) -> None:
        super().__init__(transform)
        self.index, self.ignore_index = index, ignore_index

    def __len__(self) -> int:
        return len(self.index.images)

    def load(self, i: int) -> tuple[Image.Image, np.ndarray]:
        rec = self.index.images[i]
        img = load_rgb(rec.path)
        check_image_size(rec, img.size, self.index.json_path)  # raises DataError on a mismatch
        return img, coco_mask(rec, len(self.index.category_ids) + 1, self.ignore_index)


class SegmentationLoading:
    """What both segmentation DataModules share: the scale policy (one base size for training and evaluation:
    `eval_size`, else each image's own size; training jitters the scale around it and crops `image_size`, by
    default the data's own typical size), the transforms of `segmentation_transforms` and the padding
    `collate`, both of the preprocessing record (the model's, else the one of these options). Mixed in before a
    SplitDataModule; call `_segmentation_options` in `__init__`; subclasses implement `train_sizes`."""

    preprocessing: Preprocessing | None

    def _segmentation_options(self, *, image_size: int | None, eval_size: int | None,
                              augment: Mapping[str, Any] | None, ignore_index: int) -> None:
        if ignore_index < 0:
            raise DataError(f"data.ignore_index must be a pixel value >= 0 (got {ignore_index})")
        self.image_size = validate_size("data.image_size", image_size, optional=True)
        self.eval_size = validate_size("data.eval_size", eval_size, optional=True)
        _, self.augment = augment_options(augment, "segmentation")
        self.flip_check = bool(self.augment.pop("flip_check", True))
        self._hflip: float | None = None  # the training flip probability after the flip check
        #: the flip check's training masks, kept by a pass that read or painted every training mask anyway (the
        #: scan of `setup`, the pixel count of `class_weights: auto`); None: none happened, the check reads its own
        self._flip_sample: list[np.ndarray] | None = None
        self.ignore_index = ignore_index
        self._crop: int | None = None
        self._sizes_checked = False

    train_sizes: Callable[[], list[tuple[int, int]]]  # (width, height) of the train images (or of a sample)

    @property
    def record(self) -> Preprocessing:
        """The model's preprocessing record, else the one of these data options."""
        return self.preprocessing or Preprocessing.from_data(
            "segmentation", {"eval_size": self.eval_size, "ignore_index": self.ignore_index})

    def use_preprocessing(self, record: Preprocessing) -> None:
        self.preprocessing, self._crop = record, None  # the default crop is a multiple of its size_divisibility

    @property
    def crop_size(self) -> int:
        """The side of the square training crops: data.image_size, or for null the base size (data.eval_size,
        else the train images' median short side) rounded down to a multiple of the backbone's size_divisibility."""
        if self.image_size is not None:
            return self.image_size
        if self._crop is None:
            median = median_short_side(self.train_sizes())
            self._crop = to_multiple(self.eval_size or median or 0, self.record.size_divisibility)
            base = f"data.eval_size={self.eval_size}" if self.eval_size else \
                f"the train images' median short side, {median} px"
            log.info("data.image_size=null: training crops of %d px (%s)", self._crop, base)
        return self._crop

    def check_sizes(self, sizes: Sequence[tuple[int, int]], problems: Problems = RAISE) -> None:
        """Say when data.eval_size or data.image_size is far from the train images' (width, height) `sizes`."""
        check_segmentation_sizes(self.image_size, self.eval_size, sizes, problems)

    def _check_sizes_once(self) -> None:
        if not self._sizes_checked:
            self._sizes_checked = True
            self.check_sizes(self.train_sizes())

    def transform(self, train: bool) -> Callable:
        """The joint image + mask transform of a train or eval split."""
        if not train:
            return self.record.eval_transform()
        return segmentation_transforms(True, self.crop_size, eval_size=self.record.size,
                                       ignore_index=self.ignore_index, **{**self.augment, "hflip": self.hflip})

    @property
    def hflip(self) -> float:
        """`augment.hflip`, or 0 when `augment.flip_check` finds classes with a handedness in the training masks
        (`data/flip_check.py`); checked once, on the masks a full pass kept (`_flip_sample`) or else on masks read
        for it (`sample_masks`)."""
        if self._hflip is None:
            hflip = self._asked_hflip
            if self.flip_check and hflip > 0:
                names = self.class_names
                masks = self._flip_sample if self._flip_sample is not None else self.sample_masks(FLIP_CHECK_MASKS)
                hflip = checked_hflip(hflip, masks, names, background_classes(names))
            self._hflip = hflip
            self._flip_sample = None  # checked: not needed again
        return self._hflip

    @property
    def _asked_hflip(self) -> float:
        return float(self.augment.get("hflip", 0.5))  # segmentation_transforms' default

    def _flip_masks_wanted(self) -> int:
        """How many training masks a full pass should keep for the flip check: FLIP_CHECK_MASKS while the check
        is still to run and has no sample yet, else 0."""
        pending = self._hflip is None and self._flip_sample is None
        return FLIP_CHECK_MASKS if pending and self.flip_check and self._asked_hflip > 0 else 0

    sample_masks: Callable[[int], Iterator[np.ndarray]]  # up to n training masks (H, W), spread over the split

    def collate(self) -> Callable:
        return partial(collate, record=self.record)


class MaskDataModule(SegmentationLoading, SplitDataModule):
    """Reads `root/<split>/images/*` paired by file stem with class-index masks `root/<split>/masks/*` for train,
    val and, if present, test (else tests on val). Mask pixel value i is class i, `ignore_index` is ignored.
    Batches are `(images (B, 3, H, W) float, masks (B, H, W) int64)`, see `collate`.

    Args:
        root: dataset folder; `None` with `synthetic` set means "generate the synthetic set and use it".
        classes: class names, name i for pixel value i; default: the lines of `root/classes.txt`.
        image_size: side of the square training crops; None: the data's own typical size (see `crop_size`).
        eval_size: the base size: train and val/test images have their short side resized to it (training
            jittered by `augment.scale`); None: each image's own size.
        augment: options of `segmentation_transforms` for training (scale, hflip, photometric).
        ignore_index: the mask value of unlabelled pixels (and of padding), counted in no loss or metric.
        synthetic: arguments of `data.kinds.synthetic_segmentation_kind`: `kind` (shapes, thin, imbalance, similar,
            small, glyphs; default shapes, `data.synthetic.synthetic_segmentation`) and its options.
    """

    def __init__(
        self,
        root: str | None = None,
        *,
        classes: Sequence[str] | None = None,
        image_size: int | None = None,
        eval_size: int | None = None,
        batch_size: int = 8,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        augment: Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if root is None and synthetic is None:
            raise DataError("data.root is not set: pass data.root=/path/to/data (with train/images, train/masks, "
                            "val/images, val/masks and classes.txt)")
        self.root = Path(root).expanduser() if root is not None else None
        self.synthetic = dict(synthetic) if synthetic is not None and root is None else None
        self.classes = list(classes) if classes is not None else None
        self._segmentation_options(image_size=image_size, eval_size=eval_size, augment=augment,
                                   ignore_index=ignore_index)
        self._class_names: list[str] | None = None
        self._splits: dict[str, MaskIndex] = {}
        self._scanned: set[Path] = set()
        self._pixel_counts: dict[Path, PixelCounts] = {}  # split folder -> its masks' labelled pixels per class
        self._train_sizes: list[tuple[int, int]] | None = None

    def prepare_data(self) -> None:
        """Generate the synthetic set on first use (idempotent; runs on one process per node)."""
        if self.root is None and self.synthetic is not None:
            self.root = synthetic_segmentation_kind(**self.synthetic)

    @property
    def class_names(self) -> list[str]:
        """Name i is class (pixel value) i: the `classes` argument, else `root/classes.txt`."""
        if self._class_names is None:
            self.prepare_data()
            names, source = read_classes(self.root, self.classes)
            check_classes(names, self.ignore_index, source)
            self._class_names = names
        return self._class_names

    def _index(self, split: str) -> MaskIndex:
        if split not in self._splits:
            self.prepare_data()
            split_dir = split_folder(self.root, split)
            self._splits[split] = scan_mask_split(split_dir)
        return self._splits[split]

    def train_sizes(self) -> list[tuple[int, int]]:
        """Header sizes of a sample of the train images."""
        if self._train_sizes is None:
            self._train_sizes = sample_sizes([image for image, _ in self._index("train").samples])
        return self._train_sizes

    def setup(self, stage: str | None = None) -> None:
        """Read and check the classes, pair the files, and decode every mask of the stage's splits once (a bad
        mask stops the run here, not mid-epoch; masks without a labelled pixel are counted)."""
        num_classes = len(self.class_names)
        for split in STAGE_SPLITS.get(stage or "fit", SPLITS):
            index = self._index(split)
            if index.split_dir not in self._scanned:  # test on val: scanned once
                self._scanned.add(index.split_dir)
                keep = self._flip_masks_wanted() if split == "train" else 0
                scan = scan_masks(index, num_classes, self.ignore_index, max(1, self.num_workers), keep=keep)
                self._pixel_counts[index.split_dir] = scan.counts
                if keep:  # the flip check measures these rather than reading masks again
                    self._flip_sample = scan.kept
        self._check_sizes_once()

    def sample_masks(self, n: int) -> Iterator[np.ndarray]:
        """Up to `n` training masks read from disk (the flip check's, when no scan kept them)."""
        samples = self._index("train").samples
        for i in spread(len(samples), n):
            yield np.asarray(Image.open(samples[i][1]))

    def class_pixel_counts(self) -> PixelCounts:
        """The training masks' labelled pixels per class (`class_weights: auto`), from the scan of `setup`."""
        split_dir = self._index("train").split_dir
        if split_dir not in self._pixel_counts:
            self.setup("fit")
        return self._pixel_counts[split_dir]

    def dataset(self, split: str, train: bool) -> MaskFolderDataset:
        return MaskFolderDataset(self._index(split), len(self.class_names), self.transform(train), self.ignore_index)


class CocoSegmentationDataModule(SegmentationLoading, SplitDataModule):
    """COCO instances as semantic masks: class 0 is background, category k (labels 1..K in the order of the
    train json's category ids, as for detection) paints pixel value k, crowd regions `ignore_index`. The dataset
    is a `CocoSource`, as for detection (`root/annotations/instances_<split>.json` + `root/<split>/`, or explicit
    `*_images` / `*_annotations`); every annotation needs a `segmentation` (polygons or RLE).
    Batches are `(images (B, 3, H, W) float, masks (B, H, W) int64)`, see `collate`.

    Args: the transform and padding options of `MaskDataModule`; the paths, `drop_bad_boxes` and `synthetic`
    (arguments of `synthetic_detection_kind`, whose annotations carry polygons) are the `CocoSource`'s.
    """

    def __init__(
        self,
        root: str | None = None,
        *,
        image_size: int | None = None,
        eval_size: int | None = None,
        batch_size: int = 8,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        augment: Mapping[str, Any] | None = None,
        ignore_index: int = 255,
        **source: Any,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        self.source = CocoSource(root, segmentation=True, **source)  # the paths per split, drop_bad_boxes, synthetic
        self._segmentation_options(image_size=image_size, eval_size=eval_size, augment=augment,
                                   ignore_index=ignore_index)
        self._pixel_counts: dict[str, PixelCounts] = {}  # split -> its painted masks' labelled pixels per class

    def prepare_data(self) -> None:
        """Generate the synthetic set on first use (idempotent; runs on one process per node)."""
        self.source.prepare()

    def train_sizes(self) -> list[tuple[int, int]]:
        return self.source.train_sizes()

    @property
    def class_names(self) -> list[str]:
        """K + 1 names: "background", then the train json's categories sorted by id (pixel value k+1 is
        `category_ids[k]`)."""
        names = ["background", *self.source.index("train").class_names]
        check_classes(names, self.ignore_index, str(self.source.annotation_file("train")))
        return names

    @property
    def category_ids(self) -> list[int]:
        """The COCO category id of each class, aligned with `class_names`: 0 for background."""
        return [0, *self.source.index("train").category_ids]

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", SPLITS):
            self.source.index(split)
        self._check_sizes_once()

    def sample_masks(self, n: int) -> Iterator[np.ndarray]:
        """Up to `n` training masks painted (the flip check's, when no pixel count kept them)."""
        images = self.source.index("train").images
        for i in spread(len(images), n):
            yield coco_mask(images[i], len(self.class_names), self.ignore_index)

    def class_pixel_counts(self) -> PixelCounts:
        """The labelled pixels per class of the training images' painted masks (`class_weights: auto`): each
        mask painted once per run, as `CocoSegmentationDataset` paints it, and counted once (kept)."""
        if "train" not in self._pixel_counts:
            self._pixel_counts["train"] = self._count_pixels("train")
        return self._pixel_counts["train"]

    def _count_pixels(self, split: str) -> PixelCounts:
        """Paint and count up to COUNT_MASKS masks of `split` spread over it (all of a smaller split); for train,
        keep the flip check's sample of them on the way, so the check paints none again."""
        index, num_classes = self.source.index(split), len(self.class_names)
        images = [index.images[i] for i in spread(len(index.images), COUNT_MASKS)]
        wanted = spread(len(images), self._flip_masks_wanted() if split == "train" else 0)
        chosen, kept = set(wanted.tolist()), {}
        totals, start = PixelCounts.zeros(num_classes), time.perf_counter()
        for i, rec in enumerate(images):
            mask = coco_mask(rec, num_classes, self.ignore_index)
            totals.add(class_counts(mask, num_classes))
            if i in chosen:
                kept[i] = shrunk(mask)
        if len(wanted):
            self._flip_sample = [kept[i] for i in wanted.tolist()]
        log.info("counted the pixels of %d of %d %s masks (spread over the split) in %.1f s", totals.masks,
                 len(index.images), split, time.perf_counter() - start)
        return totals

    def dataset(self, split: str, train: bool) -> CocoSegmentationDataset:
        return CocoSegmentationDataset(self.source.index(split), self.transform(train), self.ignore_index)
