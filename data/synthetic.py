"""Synthetic datasets written to disk in the formats users already have, so the default run reads real files."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from .cache import keyed_dir
from .shapes import SHAPES, bright_colour, draw_shape, noisy_background, shape_polygon

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the generator's output changes, so caches are rebuilt


def _cached(kind: str, version: int, write: Callable[..., None], /, **args: Any) -> Path:
    """The cache folder of `kind` keyed by `args` and the generator's `version`, written once by
    `write(folder, **args)` if it does not exist yet."""
    root = keyed_dir(kind, {**args, "version": version})
    if not root.exists():
        log.info("writing synthetic %s data to %s", kind, root)
        _write_atomically(root, lambda tmp: write(tmp, **args))
    return root


def _write_atomically(root: Path, write: Callable[[Path], None]) -> Path:
    """Write into a temporary sibling and rename, so a crash or a concurrent run never sees half a dataset."""
    if root.exists():
        return root
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def classification_image(rng: np.random.Generator, kind: str, size: int):
    """One shape of class `kind`, random colour, scale, rotation and position, on a noisy background."""
    img = noisy_background(rng, size, size)
    radius = rng.uniform(0.22, 0.4) * size
    margin = radius * 0.9
    cx, cy = rng.uniform(margin, size - margin, size=2)
    draw_shape(img, kind, cx, cy, radius, rng.uniform(0, 2 * math.pi), bright_colour(rng))
    return img


def write_classification(root: Path, *, num_classes: int, per_class: dict[str, int], image_size: int,
                         seed: int) -> None:
    """Write `root/<split>/<shape>/<index>.png` as an ImageFolder."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for kind in SHAPES[:num_classes]:
            folder = root / split / kind
            folder.mkdir(parents=True)
            for i in range(count):
                classification_image(rng, kind, image_size).save(folder / f"{i:05d}.png")


def synthetic_classification(num_classes: int = 6, train_per_class: int = 200, val_per_class: int = 50,
                             test_per_class: int = 50, image_size: int = 64, seed: int = 0) -> Path:
    """Generate (once, cached) the synthetic ImageFolder and return its root."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"data.synthetic.num_classes must be in 2..{len(SHAPES)} for classification, one class "
                         f"per shape (got {num_classes})")
    return _cached("classification", FORMAT_VERSION, write_classification, num_classes=num_classes,
                   per_class={"train": train_per_class, "val": val_per_class, "test": test_per_class},
                   image_size=image_size, seed=seed)


DETECTION_VERSION = 3  # bump when the detection output changes (1 repeated annotation ids, 2 splits without objects)
MAX_COVER = 0.3  # a new shape may hide at most this fraction of an earlier shape's box


def _mask_box(poly: list[tuple[float, float]], size: int) -> tuple[list[int], int]:
    """Tight COCO box [x, y, w, h] and pixel area of the polygon as PIL fills it, clipped to the image."""
    mask = Image.new("1", (size, size))
    ImageDraw.Draw(mask).polygon(poly, fill=1)
    ys, xs = np.nonzero(np.asarray(mask))
    if not len(xs):
        return [0, 0, 0, 0], 0
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0], len(xs)


def _cover(box: list[int], earlier: list[int]) -> float:
    """Fraction of `earlier` (xywh) that `box` (xywh) overlaps."""
    w = min(box[0] + box[2], earlier[0] + earlier[2]) - max(box[0], earlier[0])
    h = min(box[1] + box[3], earlier[1] + earlier[3]) - max(box[1], earlier[1])
    return max(w, 0) * max(h, 0) / (earlier[2] * earlier[3])


def detection_image(rng: np.random.Generator, num_classes: int, size: int,
                    max_objects: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """0..max_objects shapes (box side about 12-45% of the image, up to ~30% cut by the border) drawn in turn
    on a noisy background; a placement hiding more than MAX_COVER of an earlier box is re-drawn (20 tries).
    Returns the image and COCO-style objects {category_id (1..K), bbox xywh, area, segmentation}."""
    img = noisy_background(rng, size, size)
    objects: list[dict[str, Any]] = []
    for _ in range(rng.integers(0, max_objects + 1)):
        label = int(rng.integers(num_classes))
        for _try in range(20):
            radius = rng.uniform(0.06, 0.225) * size
            cx, cy = rng.uniform(0.7 * radius, size - 0.7 * radius, size=2)
            angle = rng.uniform(0, 2 * math.pi)
            poly = shape_polygon(SHAPES[label], cx, cy, radius, angle)
            bbox, area = _mask_box(poly, size)
            if area and all(_cover(bbox, o["bbox"]) <= MAX_COVER for o in objects):
                break
        else:
            continue
        draw_shape(img, SHAPES[label], cx, cy, radius, angle, bright_colour(rng))
        objects.append(dict(category_id=label + 1, bbox=bbox, area=area, iscrowd=0,
                            segmentation=[[round(c, 2) for xy in poly for c in xy]]))
    return img, objects


def visible_instances(objects: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The objects of `detection_image` with COCO's modal masks: what shows of each shape once the shapes drawn
    after it are on top, as a compressed RLE, with the box and area of that mask; a shape hidden entirely is left
    out. (The polygons `detection_image` returns are whole shapes, also where a later one covers them.)"""
    filled = []
    for obj in objects:
        canvas = Image.new("1", (size, size))
        for flat in obj["segmentation"]:  # one polygon per shape; several for an object in parts (data/kinds.py)
            ImageDraw.Draw(canvas).polygon(list(zip(flat[::2], flat[1::2])), fill=1)
        filled.append(np.asarray(canvas, dtype=bool))
    shown: list[dict[str, Any]] = []
    for i, obj in enumerate(objects):
        visible = filled[i] & ~np.any(filled[i + 1:], axis=0) if i + 1 < len(objects) else filled[i]
        if not visible.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        shown.append({**obj, "bbox": [int(v) for v in mask_utils.toBbox(rle)], "area": int(visible.sum()),
                      "segmentation": {"size": [size, size], "counts": rle["counts"]}})
    return shown


def write_detection(root: Path, *, num_classes: int, counts: dict[str, int], image_size: int,
                    max_objects: int, seed: int, visible_masks: bool = False) -> None:
    """Write `root/<split>/<index>.png` and `root/annotations/instances_<split>.json` (COCO instances; with
    `visible_masks` each object's mask is what shows of it, as compressed RLE, see `visible_instances`)."""
    write_coco_splits(root, SHAPES[:num_classes], counts, image_size, seed,
                      lambda rng: detection_image(rng, num_classes, image_size, max_objects),
                      visible_masks=visible_masks, redraw_empty=max_objects > 0)


Scene = Callable[[np.random.Generator], tuple[Image.Image, list[dict[str, Any]]]]


def write_coco_splits(root: Path, names: Sequence[str], counts: dict[str, int], image_size: int, seed: int,
                      scene: Scene, *, visible_masks: bool = False, redraw_empty: bool = True,
                      description: str = "Cerberus synthetic shapes") -> None:
    """Write `root/<split>/<index>.png` and `root/annotations/instances_<split>.json`: `counts[split]` images of
    `scene(rng)` (an image and its COCO objects with category_id 1..len(names)), one rng seeded by `seed` drawn in
    split order. `redraw_empty`: a split that would have no object redraws its last image until it has one."""
    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(names)]
    (root / "annotations").mkdir(parents=True)
    for n, (split, count) in enumerate(counts.items()):
        (root / split).mkdir()
        images, annotations = [], []
        for i in range(count):
            img, objects = scene(rng)
            if i == count - 1 and not annotations and not objects and redraw_empty:
                # a split without any object has undefined metrics (COCO AP -1) and is refused by the loader:
                # redraw its last image from a side stream, so the other splits (and every split that has
                # objects) stay exactly what they were
                side = np.random.default_rng([seed, n])
                while not objects:
                    img, objects = scene(side)
            if visible_masks:
                objects = visible_instances(objects, image_size)
            img.save(root / split / f"{i:05d}.png")
            images.append({"id": i + 1, "file_name": f"{i:05d}.png", "width": image_size, "height": image_size})
            annotations += [{"id": len(annotations) + k + 1, "image_id": i + 1, **o} for k, o in enumerate(objects)]
        coco = {"info": {"description": description}, "licenses": [], "images": images,
                "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def synthetic_detection(num_classes: int = 3, train_images: int = 240, val_images: int = 60, test_images: int = 60,
                        image_size: int = 128, max_objects: int = 4, seed: int = 0,
                        visible_masks: bool = False) -> Path:
    """Generate (once, cached) the synthetic COCO detection set and return its root. Its polygons are the whole
    shapes; `visible_masks` (instance segmentation) writes the same images with what shows of each shape instead
    (`visible_instances`)."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"data.synthetic.num_classes must be in 1..{len(SHAPES)} for detection, one class per "
                         f"shape (got {num_classes})")
    return _cached("detection", DETECTION_VERSION, write_detection, num_classes=num_classes,
                   image_size=image_size, max_objects=max_objects, seed=seed,
                   counts={"train": train_images, "val": val_images, "test": test_images},
                   # only when set, so the detection set's cache key (and its folder) stays what it was
                   **({"visible_masks": True} if visible_masks else {}))


SEGMENTATION_VERSION = 1  # bump when the segmentation output changes


def segmentation_image(rng: np.random.Generator, num_classes: int, size: int,
                       max_objects: int) -> tuple[Image.Image, Image.Image]:
    """1..max_objects shapes (radius 10-30% of the side, overlaps allowed) drawn in turn on a noisy background,
    and their mask: pixel value k + 1 where shape SHAPES[k] shows, 0 elsewhere. Both come from the same
    polygon fill, so later shapes cover earlier ones in the image and the mask alike."""
    img = noisy_background(rng, size, size)
    mask = Image.new("L", (size, size), 0)
    for _ in range(rng.integers(1, max_objects + 1)):
        label = int(rng.integers(num_classes))
        radius = rng.uniform(0.1, 0.3) * size
        cx, cy = rng.uniform(0.5 * radius, size - 0.5 * radius, size=2)
        poly = draw_shape(img, SHAPES[label], cx, cy, radius, rng.uniform(0, 2 * math.pi), bright_colour(rng))
        ImageDraw.Draw(mask).polygon(poly, fill=label + 1)
    return img, mask


def write_segmentation(root: Path, *, num_classes: int, counts: dict[str, int], image_size: int,
                       max_objects: int, seed: int) -> None:
    """Write `root/<split>/images/<index>.png`, `root/<split>/masks/<index>.png` and `root/classes.txt`."""
    write_mask_splits(root, SHAPES[:num_classes], counts, seed,
                      lambda rng: segmentation_image(rng, num_classes, image_size, max_objects))


def write_mask_splits(root: Path, names: Sequence[str], counts: dict[str, int], seed: int,
                      scene: Callable[[np.random.Generator], tuple[Image.Image, Image.Image]]) -> None:
    """Write `root/<split>/images/<index>.png`, `root/<split>/masks/<index>.png` (`counts[split]` pairs of
    `scene(rng)`: an image and its class-index mask, 0 background, k + 1 for `names[k]`; one rng seeded by `seed`
    drawn in split order) and `root/classes.txt` (background, then `names`)."""
    rng = np.random.default_rng(seed)
    (root / "classes.txt").write_text("\n".join(["background", *names]) + "\n")
    for split, count in counts.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        for i in range(count):
            img, mask = scene(rng)
            img.save(root / split / "images" / f"{i:05d}.png")
            mask.save(root / split / "masks" / f"{i:05d}.png")


def synthetic_segmentation(num_classes: int = 3, train_images: int = 400, val_images: int = 80,
                           test_images: int = 80, image_size: int = 64, max_objects: int = 4, seed: int = 0) -> Path:
    """Generate (once, cached) the synthetic image/mask folders (classes: background + `num_classes` shapes)
    and return the root."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"data.synthetic.num_classes must be in 1..{len(SHAPES)} for segmentation, one class per "
                         f"shape besides background (got {num_classes})")
    if max_objects < 1:
        raise ValueError(f"data.synthetic.max_objects must be at least 1 (got {max_objects})")
    return _cached("segmentation", SEGMENTATION_VERSION, write_segmentation, num_classes=num_classes,
                   image_size=image_size, max_objects=max_objects, seed=seed,
                   counts={"train": train_images, "val": val_images, "test": test_images})
