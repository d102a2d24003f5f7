"""Semantic masks: the image/mask folder format (pairing by stem, classes.txt, class-index PNGs) and COCO
instance annotations painted into class-index masks (or decoded one mask per instance)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from .coco import CocoImage
from .errors import RAISE, Problems
from .files import list_folder, report_skipped

CLASSES_FILE = "classes.txt"
LAYOUT = "root/<split>/images/<name>.png|jpg + root/<split>/masks/<name>.png"


@dataclass(frozen=True)
class MaskIndex:
    """The files of one split: `samples[i] = (image path, mask path)`, paired by file stem."""

    split_dir: Path
    samples: list[tuple[Path, Path]]


def read_classes(root: Path | None, classes: Sequence[str] | None = None,
                 problems: Problems = RAISE) -> tuple[list[str], str]:
    """(class names, where they came from): `classes` if given, else `root/classes.txt`, one name per line,
    line i naming pixel value i (trailing blank lines are ignored); no names when collecting a problem."""
    if classes is not None:
        return [str(c) for c in classes], "data.classes"
    path = Path(root or ".") / CLASSES_FILE
    if not path.is_file():
        problems.error("classes", f"class list {path} does not exist; write one class name per line (line i names "
                                  "pixel value i, e.g. background first) or pass data.classes=[background,...]")
        return [], str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        problems.error("classes", f"{path}: line {blank[0]} is blank; every line up to the last names one class "
                                  "(line i is pixel value i), so fill it in (e.g. 'unused') rather than leave it empty")
        return [], str(path)
    return [line.strip() for line in lines], str(path)


def check_classes(names: list[str], ignore_index: int, source: str, problems: Problems = RAISE) -> bool:
    """At least one class, no duplicates, and every class index below the ignore value."""
    if not names:
        problems.error("classes", f"{source} lists no classes; give one name per class index (0 first)")
        return False
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.error("classes", f"{source} lists {twice} more than once; give every class index its own name")
    if len(names) > ignore_index:
        problems.error("classes", f"{source} lists {len(names)} classes but pixel value {ignore_index} means "
                                  f"ignore; use fewer classes or set data.ignore_index to a value >= {len(names)}")
        return False
    return not twice


def _files_by_stem(folder: Path, kind: str, problems: Problems = RAISE) -> dict[str, Path]:
    """Image files of `folder` by file stem; files that are not images, broken links and images in sub-folders
    (pairs are found by name in the folder itself) are skipped with a warning that counts them."""
    if not folder.is_dir():
        problems.error("layout", f"{kind} folder {folder} does not exist; a segmentation split needs images/ and "
                                 f"masks/ paired by file name ({LAYOUT})")
        return {}
    listing = list_folder(folder)
    report_skipped(folder, listing.broken, listing.top(listing.others), problems)
    problems.each("warning", "sub-folder files", listing.nested(listing.images + listing.others),
                  lambda s: f"{folder}: ignored {len(s)} files in sub-folders, e.g. {s[0]}; {kind} are paired by "
                            f"file name in {folder} itself ({LAYOUT}): move them up or remove them",
                  lambda p: f"ignored {p}: in a sub-folder of {folder}; {kind} are paired by file name in the folder "
                            "itself, so move it up or remove it")
    by_stem: dict[str, Path] = {}
    for p in listing.top(listing.images):
        if p.stem in by_stem:
            problems.error("duplicate name", f"{by_stem[p.stem]} and {p} have the same name; {kind} are paired by "
                                             "file stem, so keep only one of them")
            continue
        by_stem[p.stem] = p
    return by_stem


def _unpaired(found: dict[str, Path], others: dict[str, Path], other: Path, what: str, fix: str,
              problems: Problems) -> None:
    """Report the files of `found` with no file of the same stem in `others` (the folder `other`)."""
    def message(names: Sequence[str]) -> str:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        count = f" ({len(names)} in all)" if problems.strict else ""  # collecting: one problem per file
        return f"{what}: {', '.join(str(found[s]) for s in names[:3])}{more}{count} with no file of the same " \
               f"name in {other}; {fix}"

    if others or other.is_dir():  # a missing folder is reported once, not once per file
        problems.each("error", "unpaired file", sorted(found.keys() - others.keys()), message)


def scan_mask_split(split_dir: Path, problems: Problems = RAISE) -> MaskIndex:
    """Pair `split_dir/images/*` with `split_dir/masks/*` by file stem.

    Reports to `problems` (by default: raises DataError naming the files) a missing or empty folder, two files
    sharing a stem, an image without a mask or a mask without an image; when collecting, only the pairs are kept.
    """
    if not split_dir.is_dir():
        problems.error("layout", f"split directory {split_dir} does not exist; create it with images/ and masks/ "
                                 f"({LAYOUT})")
        return MaskIndex(split_dir, [])
    images = _files_by_stem(split_dir / "images", "images", problems)
    masks = _files_by_stem(split_dir / "masks", "masks", problems)
    if not images and (split_dir / "images").is_dir():
        problems.error("layout", f"{split_dir / 'images'} has no images (PNG/JPEG); add images and their masks "
                                 f"({LAYOUT})")
    _unpaired(images, masks, split_dir / "masks", "images without a mask",
              "add a mask with the image's file name (e.g. masks/<name>.png) or remove the image", problems)
    _unpaired(masks, images, split_dir / "images", "masks without an image",
              "rename the mask to its image's file name or remove it", problems)
    return MaskIndex(split_dir, [(images[s], masks[s]) for s in sorted(images.keys() & masks.keys())])


def load_mask(path: Path, problems: Problems = RAISE) -> np.ndarray | None:
    """The pixel values (H, W) of a single-channel mask (L, P: palette indices, 1, I;16 or I), as stored
    (None when collecting a problem). A JPEG mask is refused: its lossy compression changes class indices."""
    try:
        with Image.open(path) as img:
            img.load()
            bands, mode, fmt = img.getbands(), img.mode, img.format
            arr = np.array(img)  # a writable copy, as torch.from_numpy wants
    except FileNotFoundError:
        problems.error("missing file", f"mask file {path} does not exist; restore it or remove its image")
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        problems.error("broken file", f"cannot read mask {path}: {err}. The file is truncated, corrupt or not an "
                                      "image; re-export it")
        return None
    if fmt in ("JPEG", "MPO"):  # by content, whatever the file is called (MPO: multi-picture JPEG)
        values = np.unique(arr).tolist()
        shown = f"{values[:10]}{' ...' if len(values) > 10 else ''}"
        problems.error("jpeg mask", f"mask {path} is a JPEG: JPEG compression is lossy and changes pixel values "
                                    f"near every edge (this one has values {shown}), so class indices are not kept; "
                                    "save masks as PNG (lossless), re-exported from the source annotations rather "
                                    "than converted from this JPEG")
        return None
    if len(bands) != 1 or arr.dtype.kind not in "biu":
        problems.error("mask channels", f"mask {path} is a {mode} image ({len(bands)} channels); a mask must be a "
                                        "single-channel PNG (mode L or P) whose pixel value is the class index (255 = "
                                        "ignore): convert colour-coded masks to class indices, e.g. "
                                        "Image.fromarray(index_array.astype('uint8')).save(...)")
        return None
    return arr.astype(np.uint8) if arr.dtype == bool else arr


def check_mask(mask: np.ndarray, path: Path, num_classes: int, ignore_index: int, problems: Problems = RAISE) -> bool:
    """Every value is a class index (< num_classes) or the ignore value."""
    bad = (mask >= num_classes) & (mask != ignore_index)
    if not bad.any():
        return True
    values = np.unique(mask[bad]).tolist()
    problems.error("mask value", f"mask {path} has pixel values {values[:10]}{' ...' if len(values) > 10 else ''} "
                                 f"but there are {num_classes} classes (values 0..{num_classes - 1}) and "
                                 f"{ignore_index} means ignore; fix the mask, or the class list (classes.txt / "
                                 "data.classes) if classes are missing")
    return False


def check_mask_size(mask: np.ndarray, mask_path: Path, image_size: tuple[int, int], image_path: Path,
                    problems: Problems = RAISE) -> bool:
    """The mask (H, W) has its image's (width, height)."""
    if mask.shape == (image_size[1], image_size[0]):
        return True
    problems.error("size mismatch", f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                                    f"{image_path} is {image_size[0]}x{image_size[1]}; a mask must have its image's "
                                    "size (re-export it)")
    return False


def check_pair(mask_path: Path, image_path: Path, image_size: tuple[int, int] | None, num_classes: int | None,
               ignore_index: int, problems: Problems = RAISE) -> np.ndarray | None:
    """The mask (H, W) of the image at `image_path` of (width, height) `image_size`, checked: readable,
    single-channel, not JPEG, the image's size (unless `image_size` is None) and values that are classes (unless
    `num_classes` is None) or `ignore_index`. None when collecting a problem that leaves no mask to count."""
    mask = load_mask(mask_path, problems)
    if mask is None:
        return None
    if image_size is not None:
        check_mask_size(mask, mask_path, image_size, image_path, problems)
    if num_classes is not None:
        check_mask(mask, mask_path, num_classes, ignore_index, problems)
    return mask


def read_mask(mask_path: Path, image_path: Path, image_size: tuple[int, int], num_classes: int,
              ignore_index: int) -> np.ndarray:
    """The checked mask (H, W) of the image at `image_path` of (width, height) `image_size`: uint8 as most
    PNGs store it, else int64. Raises DataError naming the file for any problem."""
    mask = check_pair(mask_path, image_path, image_size, num_classes, ignore_index)
    return mask if mask.dtype == np.uint8 else mask.astype(np.int64)  # 16/32-bit: a dtype torch fully supports


def report_unlabelled(folder: Path, unlabelled: Sequence[Path], total: int, ignore_index: int,
                      problems: Problems = RAISE) -> None:
    """Masks whose every pixel is `ignore_index` give no loss: an error when all `total` masks of the split in
    `folder` are like that (nothing to learn or measure; the loss would be NaN), else a warning with the count."""
    if not unlabelled:
        return
    if len(unlabelled) == total:
        problems.error("no labelled pixel", f"every mask in {folder} ({total}) has only the ignore value "
                                            f"{ignore_index}: no pixel is labelled, so there is nothing to learn or "
                                            "measure (the loss is NaN). If a class is stored as "
                                            f"{ignore_index} (e.g. 0/255 binary masks), map it to a class index "
                                            f"({ignore_index} -> 1) or set data.ignore_index to a value the masks do "
                                            "not use")
        return
    problems.each("warning", "no labelled pixel", list(unlabelled),
                  lambda s: f"{len(s)} of {total} masks in {folder} have only the ignore value {ignore_index} "
                            f"(e.g. {', '.join(p.name for p in s[:3])}): they contribute no loss; fix them if they "
                            "should have labels",
                  lambda p: f"mask {p} has only the ignore value {ignore_index}: no pixel is labelled, so it "
                            "contributes no loss")


def mask_dtype(num_classes: int, ignore_index: int) -> np.dtype:
    """uint8 when every label and the ignore value fit (cheap to transform), else int64."""
    return np.dtype(np.uint8 if max(num_classes - 1, ignore_index) <= 255 else np.int64)


def _rle(segm: Any, height: int, width: int) -> dict[str, Any]:
    """One RLE of COCO polygons, an uncompressed RLE or a compressed RLE (as validated by `check_segmentation`)."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def coco_mask(rec: CocoImage, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(H, W) class-index mask of an image loaded with `load_coco(..., segmentation=True)`: 0 is background,
    label k (1..K) paints category k, crowd regions paint `ignore_index`. Larger regions are painted first,
    so smaller objects on top of them stay visible."""
    mask = np.zeros((rec.height, rec.width), mask_dtype(num_classes, ignore_index))
    regions = [(_rle(segm, rec.height, rec.width), ignore_index if crowd else int(label))
               for segm, label, crowd in zip(rec.segmentations, rec.labels, rec.iscrowd)]
    with warnings.catch_warnings():  # pycocotools' decode under NumPy 2 warns about __array__(copy=...)
        warnings.simplefilter("ignore", DeprecationWarning)
        for rle, value in sorted(regions, key=lambda r: -int(mask_utils.area(r[0]))):  # stable: json order on ties
            mask[mask_utils.decode(rle).astype(bool)] = value
    return mask


def instance_masks(rec: CocoImage) -> np.ndarray:
    """(N, H, W) uint8 0/1 masks of an image loaded with `load_coco(..., segmentation=True)`, one per annotation in
    the index's order (polygons, uncompressed and compressed RLE alike; crowd regions too, flagged by `iscrowd`)."""
    if not len(rec.segmentations):
        return np.zeros((0, rec.height, rec.width), np.uint8)
    rles = [_rle(segm, rec.height, rec.width) for segm in rec.segmentations]
    with warnings.catch_warnings():  # as in coco_mask
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))
