"""Scan the splits of a configured DataModule with the loaders' own checks in collecting mode: every image and
mask is decoded, counted per class and measured; every problem is kept (see `Problems`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..classification import ImageFolderDataModule
from ..coco import CocoImage, CocoIndex, check_annotated, check_image_size, load_coco
from ..detection import CocoDetectionDataModule
from ..errors import DataError, Problems
from ..imagefolder import scan_split
from ..images import load_rgb
from ..masks import check_classes, check_pair, coco_mask, read_classes, report_unlabelled, scan_mask_split
from ..multitask import MultiTaskCocoDataModule
from ..segmentation import CocoSegmentationDataModule, MaskDataModule
from ..splits import SPLITS, report_drop_last, split_folder


@dataclass
class SplitReport:
    """What one split holds: `counts[metric][class name]` (metric "images", "boxes" or "pixels"), the decoded
    images' (width, height), how many images have no label; `same_as` names the split it falls back to."""

    name: str
    source: str
    images: int = 0
    unlabelled: int = 0
    counts: dict[str, Counter] = field(default_factory=dict)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    same_as: str | None = None


@dataclass
class Report:
    """A checked dataset: class names in label order, the count columns per split, the splits and the problems."""

    title: str
    classes: list[str]
    metrics: list[str]
    splits: list[SplitReport]
    problems: Problems


@dataclass
class Item:
    """The result of checking one image (and its mask): run in a worker thread, merged in the main one."""

    size: tuple[int, int] | None
    counts: dict[str, Counter]
    labelled: bool | None
    problems: Problems


def image_size(path: Path, problems: Problems) -> tuple[int, int] | None:
    """(width, height) of the image as training decodes it (`load_rgb`, which notes 16-bit images), or None and
    its DataError as a problem."""
    try:
        return load_rgb(path, notes=problems).size
    except DataError as err:
        problems.error("broken file" if path.exists() else "missing file", str(err))
        return None


def pixel_counts(mask: np.ndarray, classes: Sequence[str], ignore_index: int) -> Counter:
    """Pixels per class name (values out of range are the mask-value check's business), ignore as its own row."""
    values, counts = np.unique(mask, return_counts=True)
    names = {i: c for i, c in enumerate(classes)} | {ignore_index: f"(ignore {ignore_index})"}
    return Counter({names[int(v)]: int(n) for v, n in zip(values, counts) if int(v) in names})


class Scanner:
    """Runs `check(item) -> Item` over a split's items on `workers` threads (decoding releases the GIL) under a
    progress bar, and adds the results to a `SplitReport` and the run's `Problems`."""

    def __init__(self, problems: Problems, progress: Progress, workers: int) -> None:
        self.problems, self.progress, self.workers = problems, progress, max(1, workers)

    def run(self, split: SplitReport, items: Sequence[Any], check: Callable[[Any], Item]) -> None:
        task = self.progress.add_task(f"{split.name}: {len(items)} images", total=len(items))
        with ThreadPoolExecutor(self.workers) as pool:
            for item in pool.map(check, items):
                self.progress.advance(task)
                split.images += 1
                split.unlabelled += item.labelled is False
                if item.size:
                    split.sizes.append(item.size)
                for metric, counts in item.counts.items():
                    split.counts.setdefault(metric, Counter()).update(counts)
                self.problems.extend(item.problems)


def progress_bar(console: Any) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _shown(path: Path, root: Path | None) -> str:
    """`path` relative to the dataset root (named in the title) when it is inside it."""
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)


def _fallback(root: Path, split: str) -> tuple[Path, str | None]:
    """The folder of `split` under `root`, as the DataModules resolve it, and "val" when test falls back to it."""
    folder = split_folder(root, split)
    return folder, (None if folder == root / split else folder.name)


def _folder_splits(root: Path) -> tuple[list[SplitReport], list[tuple[str, Path, SplitReport]]]:
    """A report row for every split, and (name, folder, row) of the splits to scan (a test that falls back to
    val is shown, not scanned twice)."""
    reports, todo = [], []
    for name in SPLITS:
        split_dir, same_as = _fallback(root, name)
        reports.append(SplitReport(name, _shown(split_dir, root), same_as=same_as))
        if not same_as:
            todo.append((name, split_dir, reports[-1]))
    return reports, todo


def check_training_shape(dm: Any, splits: list[SplitReport], problems: Problems) -> None:
    """What training says at setup about the train split as a whole: sizes far from the configured ones, and a
    last batch of one image that is dropped."""
    train = next((s for s in splits if s.name == "train" and not s.same_as), None)
    if train is not None and train.images:
        dm.check_sizes(train.sizes, problems)
        report_drop_last(train.images, dm.batch_size, 1, problems)


def check_imagefolder(dm: ImageFolderDataModule, scanner: Scanner) -> Report:
    problems = scanner.problems
    train = scan_split(_fallback(dm.root, "train")[0], None, problems)
    splits, todo = _folder_splits(dm.root)
    for name, split_dir, split in todo:
        index = train if name == "train" else scan_split(split_dir, train.classes, problems)

        def check(sample: tuple[Path, int], classes: list[str] = index.classes) -> Item:
            local = Problems(strict=False)
            return Item(image_size(sample[0], local), {"images": Counter([classes[sample[1]]])}, True, local)

        scanner.run(split, index.samples, check)
    check_training_shape(dm, splits, problems)
    return Report(f"ImageFolder {dm.root}", train.classes, ["images"], splits, problems)


def check_masks(dm: MaskDataModule, scanner: Scanner) -> Report:
    problems = scanner.problems
    classes, source = read_classes(dm.root, dm.classes, problems)
    ignore = dm.ignore_index
    checked = (classes or dm.classes is not None) and check_classes(classes, ignore, source, problems)
    num_classes = len(classes) if checked else None  # a bad class list is reported once, above
    splits, todo = _folder_splits(dm.root)
    for _, split_dir, split in todo:
        unlabelled: list[Path] = []  # appended from the worker threads (list.append is atomic)

        def check(pair: tuple[Path, Path], unlabelled: list[Path] = unlabelled) -> Item:
            image_path, mask_path = pair
            local = Problems(strict=False)
            size = image_size(image_path, local)
            mask = check_pair(mask_path, image_path, size, num_classes or None, ignore, local)
            if mask is None:
                return Item(size, {}, None, local)
            pixels = pixel_counts(mask, classes, ignore)
            labelled = bool(((mask != 0) & (mask != ignore)).any())
            if mask.size and (mask == ignore).all():
                unlabelled.append(mask_path)  # reported for the split as a whole, below
            elif not labelled:
                local.note("no labels", f"mask {mask_path} has only background (0) and ignore ({ignore}) pixels; "
                                        "fine for an image without objects, else re-export the mask")
            return Item(size, {"pixels": pixels, "images": Counter(c for c in pixels if not c.startswith("("))},
                        labelled, local)

        samples = scan_mask_split(split_dir, problems).samples
        scanner.run(split, samples, check)
        report_unlabelled(split_dir / "masks", sorted(unlabelled), len(samples), ignore, problems)
    check_training_shape(dm, splits, problems)
    return Report(f"image / mask folders {dm.root}", classes, ["pixels", "images"], splits, problems)


def check_coco(dm: CocoDetectionDataModule | CocoSegmentationDataModule, scanner: Scanner) -> Report:
    """Detection, instance segmentation (every annotation's mask validated), or semantic segmentation when `dm` is
    a CocoSegmentationDataModule (annotations painted, pixels counted)."""
    problems = scanner.problems
    source = dm.source
    segmentation = source.segmentation  # masks required and validated
    painted = isinstance(dm, CocoSegmentationDataModule)
    paths: dict[str, tuple[Path, Path] | None] = {}
    for name in SPLITS:
        try:
            paths[name] = source.paths(name)  # the data module's own layout, explicit paths and test -> val fallback
        except DataError as err:
            problems.error("layout", str(err))
            paths[name] = None
    train: CocoIndex | None = None
    splits = []
    for name in SPLITS:
        if paths[name] is None:
            continue
        images, annotations = paths[name]
        same_as = "val" if name == "test" and paths[name] == paths["val"] else None
        split = SplitReport(name, f"{_shown(annotations, source.root)} + {_shown(images, source.root)}/",
                            same_as=same_as)
        splits.append(split)
        if same_as:
            continue
        categories = train.category_ids if train is not None and train.category_ids else None
        index = load_coco(annotations, images, category_ids=categories, drop_bad_boxes=source.drop_bad_boxes,
                          segmentation=segmentation, problems=problems)
        check_annotated(index, name, problems, painted)
        if name == "train":
            train = index
        names = [f"{n} (id {c})" for n, c in zip(index.class_names, index.category_ids)]
        scanner.run(split, index.images, _coco_check(index, names, painted, getattr(dm, "ignore_index", 255)))
    names = [f"{n} (id {c})" for n, c in zip(train.class_names, train.category_ids)] if train else []
    if train is not None and train.images:  # the sizes the json gives, as training reads them
        dm.check_sizes([(rec.width, rec.height) for rec in train.images], problems)
        report_drop_last(len(train.images), dm.batch_size, 1, problems)
    if painted and train is not None and train.category_ids:
        check_classes(["background", *train.class_names], dm.ignore_index, str(train.json_path), problems)
    metrics = ["boxes", "images", "pixels"] if painted else ["boxes", "images"]
    kind = "segmentation" if painted else "instance segmentation" if segmentation else "detection"
    return Report(f"COCO {kind} {source.root or ''}".rstrip(),
                  ["background", *names] if painted else names, metrics, splits, problems)


def _coco_check(index: CocoIndex, names: list[str], painted: bool, ignore: int) -> Callable[[CocoImage], Item]:
    def check(rec: CocoImage) -> Item:
        local = Problems(strict=False)
        size = image_size(rec.path, local)
        boxes = Counter(names[label - 1] for label in rec.labels.tolist())
        counts = {"boxes": boxes, "images": Counter(boxes.keys())}
        if not boxes:
            local.note("no labels", f"{index.json_path}: image id {rec.image_id} ({rec.path}) has no annotations; "
                                    "it is kept as a negative example (add its objects if it has any)")
        if size and check_image_size(rec, size, index.json_path, local) and painted:
            pixels = pixel_counts(coco_mask(rec, len(names) + 1, ignore), ["background", *names], ignore)
            counts |= {"pixels": pixels, "images": Counter(c for c in pixels if not c.startswith("("))}
        return Item(size, counts, bool(boxes), local)

    return check


def check_datamodule(dm: Any, problems: Problems, progress: Progress, workers: int) -> Report:
    """The report of any Cerberus DataModule (after `prepare_data`, which generates the synthetic sets)."""
    scanner = Scanner(problems, progress, workers)
    if isinstance(dm, (CocoDetectionDataModule, CocoSegmentationDataModule)):
        return check_coco(dm, scanner)
    if isinstance(dm, MultiTaskCocoDataModule):  # its json, read as detection reads it (data.extra_train: at setup)
        return check_coco(dm.detection, scanner)
    if isinstance(dm, MaskDataModule):
        return check_masks(dm, scanner)
    if isinstance(dm, ImageFolderDataModule):
        return check_imagefolder(dm, scanner)
    raise TypeError(f"data.check knows ImageFolder, COCO and mask-folder DataModules, not {type(dm).__name__}")


def size_stats(sizes: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]] | None:
    """([min, median, max] width, [min, median, max] height), or None without sizes."""
    arr = np.asarray(list(sizes)).reshape(-1, 2)
    if not len(arr):
        return None
    stats = [[int(a.min()), int(np.median(a)), int(a.max())] for a in arr.T]
    return stats[0], stats[1]
