"""COCO instances json: reading, validation, and the map from category ids to contiguous labels 1..K."""

from __future__ import annotations

import json
import math
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import BOX_TOLERANCE, check_box, is_bbox, xyxy_pattern
from .errors import RAISE, Problems
from .sampling import spread

__all__ = ["BOX_TOLERANCE", "CocoImage", "CocoIndex", "check_annotated", "check_box", "check_image_size",
           "check_segmentation", "load_coco", "read_coco_json"]
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
    """A validated split: label i+1 is category `category_ids[i]` named `class_names[i]`; `num_annotations`
    counts the json's "annotations" entries (kept or not)."""

    json_path: Path
    category_ids: list[int]
    class_names: list[str]
    images: list[CocoImage]
    num_annotations: int = 0


def read_coco_json(path: Path, problems: Problems = RAISE) -> dict[str, list] | None:
    """The parsed file, with its three sections checked to be lists (None when collecting and it is not)."""
    if not path.is_file():
        problems.error("missing file", f"annotation file {path} does not exist; check the path (COCO layout: "
                                       "root/annotations/instances_<split>.json)")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problems.error("bad json", f"{path} is not valid JSON ({err}); fix or re-export the file")
        return None
    missing = [k for k in SECTIONS if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        problems.error("bad json", f"{path} has no {' / '.join(repr(k) for k in missing)} list; a COCO instances "
                                   f"file needs the lists {', '.join(SECTIONS)} (an image without objects still "
                                   "needs \"annotations\": [])")
        return None
    return data


def _field(entry: Any, key: str, kind: type, path: Path, where: str, problems: Problems = RAISE) -> Any:
    """`entry[key]` converted to `kind`; else a problem naming the file, the entry and the field (and None)."""
    try:
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        return kind(value)
    except (KeyError, TypeError, ValueError):
        kind_name = {int: "an integer", float: "a number", str: "a string"}[kind]
        problems.error("bad field", f"{path}: {where} needs {kind_name} field {key!r} (got "
                                    f"{entry.get(key, 'nothing') if isinstance(entry, dict) else entry!r}); "
                                    "fix the entry")
        return None


SINGULAR = {"categories": "category", "images": "image", "annotations": "annotation"}


def _new_id(entry: Any, i: int, section: str, seen: Container[int], path: Path, problems: Problems) -> int | None:
    """The integer "id" of `data[section][i]`, or None (reported) when it is malformed or already in `seen`:
    ids must be unique within a section (COCO evaluation matches by id)."""
    eid = _field(entry, "id", int, path, f"{section}[{i}]", problems)
    if eid is not None and eid in seen:
        problems.error("duplicate id", f"{path}: {SINGULAR[section]} id {eid} "
                                       f"appears twice in \"{section}\"; give each entry its own id")
        return None
    return eid


def read_categories(data: dict[str, list], path: Path, problems: Problems = RAISE) -> dict[int, str]:
    """Category id -> name, sorted by id (bad entries left out when collecting)."""
    cats: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        cid = _new_id(cat, i, "categories", cats, path, problems)
        if cid is None:
            continue
        name = _field(cat, "name", str, path, f"category {cid}", problems)
        if name is not None:
            cats[cid] = name
    if not cats:
        problems.error("bad json", f"{path} has an empty \"categories\" list; list the classes as "
                                   "{\"id\": 1, \"name\": ...}")
    return dict(sorted(cats.items()))


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
              drop_bad_boxes: bool = False, segmentation: bool = False, sample_segmentations: int = 0,
              problems: Problems = RAISE) -> CocoIndex:
    """Read and validate an instances json whose `file_name`s are relative to `image_dir`.

    `category_ids` (from the train split) fixes the label order; by default it is this file's categories
    sorted by id. Reports to `problems` (by default: raises DataError naming the file, the image / annotation
    id and the fix) malformed entries, unknown or duplicate ids, two images with one file_name, listed images
    missing on disk, boxes that look like [x1, y1, x2, y2] (even with `drop_bad_boxes`) and, unless
    `drop_bad_boxes`, bad boxes (outside the image by more than BOX_TOLERANCE px, or under MIN_BOX_SIZE px
    wide or high); dropped boxes are counted in a warning. `segmentation` keeps each annotation's polygons /
    RLE and requires a valid one (semantic segmentation). Without it, `sample_segmentations` keeps the valid
    polygons / RLE (None for the others) of that many images spread over the json, required of none (what the
    detection flip check measures: a sample, so a large json's polygons are not held for the run). When
    collecting, the bad entries (and missing images) are left out of the index.
    """
    path, image_dir = Path(json_path), Path(image_dir)
    data = read_coco_json(path, problems)
    if data is None:  # only when collecting
        return CocoIndex(path, [], [], [])
    cats = read_categories(data, path, problems)
    category_ids = list(cats) if category_ids is None else list(category_ids)
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}

    images: dict[int, dict[str, Any]] = {}
    by_name: dict[str, int] = {}
    for i, entry in enumerate(data["images"]):
        iid = _new_id(entry, i, "images", images, path, problems)
        if iid is None:
            continue
        where = f"image id {iid}"
        fields = [_field(entry, key, kind, path, where, problems)
                  for key, kind in (("file_name", str), ("width", int), ("height", int))]
        if None in fields:
            continue
        if fields[0] in by_name:
            problems.error("duplicate file", f"{path}: image ids {by_name[fields[0]]} and {iid} both have file_name "
                                             f"{fields[0]!r}; list each image once (move the annotations of one id "
                                             "to the other and delete its entry)")
            continue
        by_name[fields[0]] = iid
        images[iid] = dict(path=image_dir / fields[0], width=fields[1], height=fields[2], anns=[])
    if (pattern := _xyxy_pattern(data["annotations"], images)) is not None:
        problems.error("xyxy boxes", f"{path}: {pattern}")

    ids = list(images)
    sampled = set() if segmentation else {ids[i] for i in spread(len(ids), sample_segmentations)}
    dropped: list[str] = []
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        aid = _new_id(ann, i, "annotations", seen, path, problems)
        if aid is None:
            continue
        seen.add(aid)
        iid = _field(ann, "image_id", int, path, f"annotation {aid}", problems)
        if iid is None:
            continue
        if iid not in images:
            problems.error("unknown id", f"{path}: annotation {aid} refers to image id {iid}, which is not in "
                                         "\"images\"; add the image or remove the annotation")
            continue
        where = f"annotation {aid} (image id {iid})"
        cid = _field(ann, "category_id", int, path, where, problems)
        if cid is None:
            continue
        if cid not in cats:
            problems.error("unknown category", f"{path}: {where} has category_id {cid}, which is not in "
                                               f"\"categories\" (ids {list(cats)}); fix the category_id or add "
                                               "the category")
            continue
        if cid not in label_of:
            problems.error("unknown category", f"{path}: {where} has category {cid} ({cats[cid]!r}), which the "
                                               f"train annotations do not list (train ids {category_ids}); every "
                                               "category must be in train's categories")
            continue
        img = images[iid]
        box, problem = check_box(ann.get("bbox"), img["width"], img["height"])
        if box is None:
            if not drop_bad_boxes:
                problems.error("bad box", f"{path}: {where}: {problem}; fix the box, or pass "
                                          "data.drop_bad_boxes=true to drop such boxes")
            dropped.append(f"{where}: {problem}")
            continue
        iscrowd = _field(ann, "iscrowd", int, path, where, problems) if "iscrowd" in ann else 0
        area = _field(ann, "area", float, path, where, problems) if "area" in ann else \
            (box[2] - box[0]) * (box[3] - box[1])
        if iscrowd is None or area is None:
            continue
        segm = ann.get("segmentation")
        if segmentation and (problem := check_segmentation(segm, img["width"], img["height"])):
            problems.error("bad segmentation", f"{path}: {where}: {problem}; masks (task=segmentation, "
                                               "task=instance_segmentation) need every annotation's "
                                               "\"segmentation\" as polygons [[x0, y0, x1, y1, ...]] or RLE "
                                               "{\"size\": [h, w], \"counts\": ...}: fix or remove the "
                                               "annotation (or train task=detection)")
            continue
        if iid in sampled and check_segmentation(segm, img["width"], img["height"]):
            segm = None  # a sampled annotation without a valid mask: nothing to measure
        img["anns"].append((box, label_of[cid], iscrowd, area, segm if segmentation or iid in sampled else None))
    if drop_bad_boxes:
        problems.each("warning", "dropped box", dropped,
                      lambda d: f"dropped {len(d)} bad boxes from {path} (first: {d[0]})",
                      lambda d: f"{path}: dropped {d} (data.drop_bad_boxes=true)")

    missing = [(iid, img["path"]) for iid, img in images.items() if not img["path"].is_file()]
    problems.each("error", "missing file", missing,
                  lambda m: f"{path}: image file {m[0][1]} (image id {m[0][0]}) does not exist"
                            f"{f', nor do {len(m) - 1} more' if len(m) > 1 else ''}; "
                            f"put the images in {image_dir} or fix \"file_name\"")
    for iid, _ in missing:  # only when collecting: checked, so left out
        del images[iid]
    return CocoIndex(path, category_ids, [cats.get(c, str(c)) for c in category_ids],
                     [_image(iid, img, segmentation or iid in sampled) for iid, img in images.items()],
                     len(data["annotations"]))


def _xyxy_pattern(annotations: list[Any], images: dict[int, dict[str, Any]]) -> str | None:
    """`xyxy_pattern` of the well-formed boxes of known images (checked before any box is dropped or refused)."""
    boxes = []
    for ann in annotations:
        if isinstance(ann, dict) and is_bbox(ann.get("bbox")) and (img := images.get(ann.get("image_id"))):
            boxes.append((ann.get("id"), ann["bbox"], img["width"], img["height"]))
    return xyxy_pattern(boxes)


def check_annotated(index: CocoIndex, split: str, problems: Problems = RAISE, segmentation: bool = False) -> bool:
    """A split needs images and at least one non-crowd object: training without objects learns that there are
    none (AP 0), and val / test without them make every COCO metric undefined (-1), on which the best checkpoint
    would then be chosen (`segmentation`: the masks are all background, and so would be the model)."""
    where = f"data.{split}_annotations (or data.root)"
    if not index.images:
        problems.error("no images", f"{index.json_path} lists no usable images; add them to \"images\" or point "
                                    f"{where} at the right file")
        return False
    if any((rec.iscrowd == 0).any() for rec in index.images):
        return True
    what = "has \"annotations\": []" if not index.num_annotations else \
        f"has no usable object (none of its {index.num_annotations} annotations is a non-crowd box that passed)"
    if split == "train":
        why = "a model trained on it learns that there are no objects " + \
            ("(every mask is background)" if segmentation else "(detection AP 0)")
    else:
        why = f"every {split} metric would be " + ("measured on background alone" if segmentation else
                                                   "undefined (COCO AP -1)")
        why += (" and the best checkpoint would be chosen on " + ("it" if segmentation else "-1")) \
            if split == "val" else ""
    problems.error("no annotations", f"{index.json_path} {what}: {why}. Add the objects' annotations, or point "
                                     f"{where} at the annotated file")
    return False


def check_image_size(rec: CocoImage, size: tuple[int, int], json_path: Path, problems: Problems = RAISE) -> bool:
    """The decoded image's (width, height) `size` is the json's (boxes, polygons and RLEs are in the json's size)."""
    if size == (rec.width, rec.height):
        return True
    problems.error("size mismatch", f"image {rec.path} is {size[0]}x{size[1]} but {json_path} says "
                                    f"{rec.width}x{rec.height} (image id {rec.image_id}); fix \"width\"/\"height\"")
    return False


def _image(iid: int, img: dict[str, Any], segmentation: bool) -> CocoImage:
    anns = img["anns"]
    boxes, labels, iscrowd, area, segms = zip(*anns) if anns else ((), (), (), (), ())
    return CocoImage(iid, img["path"], img["width"], img["height"],
                     np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                     np.asarray(iscrowd, np.int64), np.asarray(area, np.float32),
                     tuple(segms) if segmentation else ())
