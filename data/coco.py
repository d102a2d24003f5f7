"""COCO instances json: reading, validation, and the map from category ids to contiguous labels 1..K."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)
BOX_TOLERANCE = 1.0  # pixels a box may exceed the image by (rounding in exporters) before it is an error
SECTIONS = ("images", "annotations", "categories")


@dataclass(frozen=True)
class CocoImage:
    """One image and its annotations; boxes (N, 4) float32 xyxy pixels, labels (N,) int64 in 1..K,
    iscrowd (N,) int64, area (N,) float32; segmentations (N,) the json's polygons / RLE dicts, kept only
    when `load_coco(..., segmentation=True)` (else empty)."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    segmentations: tuple[Any, ...] = ()


@dataclass(frozen=True)
class CocoIndex:
    """A validated split: label i+1 is category `category_ids[i]` named `class_names[i]`."""

    json_path: Path
    category_ids: list[int]
    class_names: list[str]
    images: list[CocoImage]


def read_coco_json(path: Path) -> dict[str, list]:
    """The parsed file, with its three sections checked to be lists."""
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist; check the path (COCO layout: "
                        "root/annotations/instances_<split>.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); fix or re-export the file") from err
    missing = [k for k in SECTIONS if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{path} has no {' / '.join(repr(k) for k in missing)} list; a COCO instances file "
                        f"needs the lists {', '.join(SECTIONS)} (an image without objects still needs "
                        "\"annotations\": [])")
    return data


def _field(entry: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """`entry[key]` converted to `kind`, or a DataError naming the file, the entry and the field."""
    try:
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        return kind(value)
    except (KeyError, TypeError, ValueError) as err:
        kind_name = {int: "an integer", float: "a number", str: "a string"}[kind]
        raise DataError(f"{path}: {where} needs {kind_name} field {key!r} (got "
                        f"{entry.get(key, 'nothing') if isinstance(entry, dict) else entry!r}); fix the entry") from err


def read_categories(data: dict[str, list], path: Path) -> dict[int, str]:
    """Category id -> name, sorted by id."""
    cats: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        cid = _field(cat, "id", int, path, f"categories[{i}]")
        if cid in cats:
            raise DataError(f"{path}: category id {cid} appears twice in \"categories\"; give each its own id")
        cats[cid] = _field(cat, "name", str, path, f"category {cid}")
    if not cats:
        raise DataError(f"{path} has an empty \"categories\" list; list the classes as {{\"id\": 1, \"name\": ...}}")
    return dict(sorted(cats.items()))


def check_box(bbox: Any, width: int, height: int) -> tuple[list[float] | None, str]:
    """COCO [x, y, w, h] -> ([x0, y0, x1, y1] clamped to the image, "") or (None, what is wrong)."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
        return None, f"bbox {bbox!r} is not [x, y, width, height] (four numbers)"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return None, f"bbox {bbox} has zero or negative width/height"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return None, f"bbox {bbox} (x, y, w, h) lies outside the {width}x{height} image"
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        return None, f"bbox {bbox} is empty once clamped to the {width}x{height} image"
    return [x0, y0, x1, y1], ""


def check_segmentation(segm: Any, width: int, height: int) -> str:
    """"" if `segm` is COCO polygons `[[x0, y0, x1, y1, ...], ...]` (3+ points each) or an RLE
    `{"size": [height, width], "counts": [...] or "..."}` of this image, else what is wrong with it."""
    if isinstance(segm, list) and segm:
        for poly in segm:
            if not (isinstance(poly, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and math.isfinite(v) for v in poly)):
                return f"polygon {str(poly)[:60]} is not a list of numbers [x0, y0, x1, y1, ...]"
            if len(poly) % 2 or len(poly) < 6:
                return f"polygon {str(poly)[:60]} has {len(poly)} coordinates; a polygon needs 3+ (x, y) points"
        return ""
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if segm["size"] != [height, width]:
            return f"RLE size {segm['size']} is not the image's [height, width] = [{height}, {width}]"
        counts = segm["counts"]
        if isinstance(counts, list):  # uncompressed: run lengths that must cover the image exactly
            runs = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
            if not runs or sum(counts) != height * width:
                return f"uncompressed RLE counts do not add up to {height} x {width} = {height * width} pixels"
        elif not isinstance(counts, str):
            return "RLE counts are neither a list of run lengths nor a compressed string"
        return ""
    if segm is None or segm == [] or segm == {}:
        return "segmentation is missing or empty"
    return f"segmentation {str(segm)[:60]} is neither polygons [[x0, y0, ...], ...] nor RLE {{size, counts}}"


def load_coco(json_path: str | Path, image_dir: str | Path, *, category_ids: list[int] | None = None,
              drop_bad_boxes: bool = False, segmentation: bool = False) -> CocoIndex:
    """Read and validate an instances json whose `file_name`s are relative to `image_dir`.

    `category_ids` (from the train split) fixes the label order; by default it is this file's categories
    sorted by id. Raises DataError naming the file, the image / annotation id and the fix for malformed
    entries, unknown ids, listed images missing on disk and, unless `drop_bad_boxes`, bad boxes (outside
    the image by more than BOX_TOLERANCE px, or empty); dropped boxes are counted in a warning.
    `segmentation` keeps each annotation's polygons / RLE and requires a valid one (semantic segmentation).
    """
    path, image_dir = Path(json_path), Path(image_dir)
    data = read_coco_json(path)
    cats = read_categories(data, path)
    category_ids = list(cats) if category_ids is None else list(category_ids)
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}

    images: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(data["images"]):
        iid = _field(entry, "id", int, path, f"images[{i}]")
        if iid in images:
            raise DataError(f"{path}: image id {iid} appears twice in \"images\"; image ids must be unique")
        where = f"image id {iid}"
        images[iid] = dict(path=image_dir / _field(entry, "file_name", str, path, where),
                           width=_field(entry, "width", int, path, where),
                           height=_field(entry, "height", int, path, where), anns=[])

    dropped: list[str] = []
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        aid = _field(ann, "id", int, path, f"annotations[{i}]")
        if aid in seen:  # COCO evaluation matches by annotation id
            raise DataError(f"{path}: annotation id {aid} appears twice in \"annotations\"; ids must be unique")
        seen.add(aid)
        iid = _field(ann, "image_id", int, path, f"annotation {aid}")
        if iid not in images:
            raise DataError(f"{path}: annotation {aid} refers to image id {iid}, which is not in \"images\"; "
                            "add the image or remove the annotation")
        where = f"annotation {aid} (image id {iid})"
        cid = _field(ann, "category_id", int, path, where)
        if cid not in cats:
            raise DataError(f"{path}: {where} has category_id {cid}, which is not in \"categories\" "
                            f"(ids {list(cats)}); fix the category_id or add the category")
        if cid not in label_of:
            raise DataError(f"{path}: {where} has category {cid} ({cats[cid]!r}), which the train annotations "
                            f"do not list (train ids {category_ids}); every category must be in train's categories")
        img = images[iid]
        box, problem = check_box(ann.get("bbox"), img["width"], img["height"])
        if box is None:
            if not drop_bad_boxes:
                raise DataError(f"{path}: {where}: {problem}; fix the box, or pass data.drop_bad_boxes=true "
                                "to drop such boxes")
            dropped.append(f"{where}: {problem}")
            continue
        iscrowd = _field(ann, "iscrowd", int, path, where) if "iscrowd" in ann else 0
        area = _field(ann, "area", float, path, where) if "area" in ann else (box[2] - box[0]) * (box[3] - box[1])
        segm = ann.get("segmentation")
        if segmentation and (problem := check_segmentation(segm, img["width"], img["height"])):
            raise DataError(f"{path}: {where}: {problem}; task=segmentation needs every annotation's "
                            "\"segmentation\" as polygons [[x0, y0, x1, y1, ...]] or RLE {\"size\": [h, w], "
                            "\"counts\": ...}: fix or remove the annotation (or train task=detection)")
        img["anns"].append((box, label_of[cid], iscrowd, area, segm if segmentation else None))
    if dropped:
        log.warning("dropped %d bad boxes from %s (first: %s)", len(dropped), path, dropped[0])

    missing = [(iid, img["path"]) for iid, img in images.items() if not img["path"].is_file()]
    if missing:
        iid, file = missing[0]
        raise DataError(f"{path}: image file {file} (image id {iid}) does not exist"
                        f"{f', nor do {len(missing) - 1} more' if len(missing) > 1 else ''}; "
                        f"put the images in {image_dir} or fix \"file_name\"")
    return CocoIndex(path, category_ids, [cats.get(c, str(c)) for c in category_ids],
                     [_image(iid, img, segmentation) for iid, img in images.items()])


def _image(iid: int, img: dict[str, Any], segmentation: bool) -> CocoImage:
    anns = img["anns"]
    boxes, labels, iscrowd, area, segms = zip(*anns) if anns else ((), (), (), (), ())
    return CocoImage(iid, img["path"], img["width"], img["height"],
                     np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                     np.asarray(iscrowd, np.int64), np.asarray(area, np.float32),
                     tuple(segms) if segmentation else ())
