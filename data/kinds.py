"""Synthetic dataset kinds: data unlike the built-in shapes, generated on the fly in the same on-disk layouts, so a
recipe (loss, augmentation, resolution) can be measured on what it is meant to help with.

Each kind stresses one thing; every object has a random colour (`bright_colour`), so only its shape tells the
class:

- shapes: the built-in sets (`synthetic_segmentation`, `synthetic_detection`), unchanged.
- thin: strokes 1-2.5 px wide (line, zigzag, arc, dashed): foreground is a small share of the pixels.
- imbalance: few small objects (a few % of the pixels) of classes seen 75 % / 20 % / 5 % of the time.
- similar: eight classes that differ by detail only: 5- to 8-sided polygons and 5- to 8-pointed stars.
- small: 4-10 objects per image, each a few px to ~10 % of the side.
- glyphs: letters b d p q F J L 7 drawn upright: b/d and p/q are mirror images, so a flip changes the class.

Pick one with `data.synthetic.kind=<kind>`. `num_classes` and `max_objects` are the shapes' knobs: the other kinds
decide their classes and objects per image themselves and ignore them (said in a log line).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from backbones.errors import ConfigError

from .kind_geometry import GLYPHS, Polygon, glyph, place, regular, stroke
from .shapes import bright_colour, noisy_background, shape_polygon
from .synthetic import (
    MAX_COVER,
    _cached,
    _cover,
    synthetic_detection,
    synthetic_segmentation,
    write_coco_splits,
    write_mask_splits,
)

log = logging.getLogger(__name__)
KINDS: tuple[str, ...] = ("shapes", "thin", "imbalance", "similar", "small", "glyphs")
KINDS_VERSION = 1  # bump when a kind's output changes, so caches are rebuilt
MIN_SIDE = 3  # px: an object whose box is narrower or lower is redrawn (a detector cannot anchor a 1 px box)
MIN_IMAGE_SIZE = 32  # px: below it the thin, small and similar objects lose what tells them apart
TRIES = 20  # placements tried per object before it is left out


@dataclass(frozen=True)
class Kind:
    """A dataset kind: its class names, how many objects an image has (inclusive range), how often each class is
    drawn (None: equally often), and `draw(rng, label, size)`: the polygons of one object of class `label`
    placed in a `size` px image."""

    classes: tuple[str, ...]
    objects: tuple[int, int]
    draw: Callable[[np.random.Generator, int, int], list[Polygon]]
    weights: tuple[float, ...] | None = None


THIN = ("line", "zigzag", "arc", "dashed")


def _thin(rng: np.random.Generator, label: int, size: int) -> list[Polygon]:
    """A stroke 1-2.5 px wide (in pixels whatever the image size: thin stays thin), 35-65 % of the side long."""
    width, length = rng.uniform(1.0, 2.5), rng.uniform(0.35, 0.65) * size
    name = THIN[label]
    if name == "line":
        pieces = [[(-length / 2, 0.0), (length / 2, 0.0)]]
    elif name == "zigzag":
        teeth = max(3, int(length / (rng.uniform(0.05, 0.08) * size)))
        amplitude = rng.uniform(0.03, 0.05) * size
        pieces = [[(x, amplitude * (-1) ** i) for i, x in enumerate(np.linspace(-length / 2, length / 2, teeth + 1))]]
    elif name == "arc":
        radius, span = rng.uniform(0.15, 0.3) * size, rng.uniform(0.6, 1.2) * math.pi
        pieces = [[(radius * math.cos(a), radius * math.sin(a)) for a in np.linspace(0, span, 20)]]
    else:  # dashed: gaps of 3+ px, so they stay open at any stroke width
        dash = rng.uniform(0.06, 0.09) * size
        gap = max(3.0, rng.uniform(0.5, 0.9) * dash)
        starts = np.arange(-length / 2, length / 2 - dash / 2, dash + gap)
        pieces = [[(x, 0.0), (min(x + dash, length / 2), 0.0)] for x in starts]
    return place(rng, [quad for piece in pieces for quad in stroke(piece, width)], size, rng.uniform(0, 2 * math.pi))


PLAIN = ("circle", "square", "triangle")


def _plain(low: float, high: float) -> Callable[[np.random.Generator, int, int], list[Polygon]]:
    """Draw class k as the built-in shape PLAIN[k], radius `low`-`high` of the side, any rotation."""
    def draw(rng: np.random.Generator, label: int, size: int) -> list[Polygon]:
        radius = rng.uniform(low, high) * size
        return place(rng, [shape_polygon(PLAIN[label], 0.0, 0.0, radius, 0.0)], size, rng.uniform(0, 2 * math.pi))
    return draw


SIMILAR = ("pentagon", "hexagon", "heptagon", "octagon", "star5", "star6", "star7", "star8")


def _similar(rng: np.random.Generator, label: int, size: int) -> list[Polygon]:
    """A 5- to 8-sided regular polygon or a 5- to 8-pointed star, radius 15-28 % of the side, any rotation."""
    poly = regular(5 + label % 4, rng.uniform(0.15, 0.28) * size, star=label >= 4)
    return place(rng, [poly], size, rng.uniform(0, 2 * math.pi))


def _glyph(rng: np.random.Generator, label: int, size: int) -> list[Polygon]:
    """A glyph 30-56 % of the side tall, upright (within 9 degrees: turned by 180 degrees a b would be a q)."""
    return place(rng, glyph(tuple(GLYPHS)[label], rng.uniform(0.15, 0.28) * size), size, rng.uniform(-0.15, 0.15))


SPECS: dict[str, Kind] = {
    "thin": Kind(THIN, (2, 3), _thin),
    "imbalance": Kind(PLAIN, (1, 2), _plain(0.07, 0.11), weights=(0.75, 0.2, 0.05)),
    "similar": Kind(SIMILAR, (1, 3), _similar),
    "small": Kind(PLAIN, (4, 10), _plain(0.025, 0.05)),
    "glyphs": Kind(tuple(GLYPHS), (1, 3), _glyph),
}


def check_kind(kind: str) -> None:
    """A ConfigError naming the known kinds when `kind` is not one."""
    if kind not in KINDS:
        raise ConfigError(f"data.synthetic.kind={kind!r} is not a synthetic dataset kind; known: {', '.join(KINDS)}")


@dataclass(frozen=True)
class Drawn:
    """One object drawn: class index (0-based), polygons, tight box [x, y, w, h] and pixel area, both of the
    polygons' fill clipped to the image."""

    label: int
    polygons: list[Polygon]
    bbox: list[int]
    area: int


def fill_polygons(polygons: list[Polygon], size: int, value: int | tuple[int, ...] = 1,
                  canvas: Image.Image | None = None) -> Image.Image:
    """Fill `polygons` with `value` on `canvas` (in place), by default on a new `size` px "L" image of zeros."""
    canvas = canvas if canvas is not None else Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        draw.polygon(poly, fill=value)
    return canvas


def scene(rng: np.random.Generator, kind: str, size: int) -> tuple[Image.Image, list[Drawn]]:
    """An image of `kind` (`size` px square, noisy background) and its objects in drawing order (later ones on
    top). A placement whose box is under MIN_SIDE px or hides more than MAX_COVER of an earlier box is redrawn
    (TRIES times, then the object is left out)."""
    spec = SPECS[kind]
    img = noisy_background(rng, size, size)
    drawn: list[Drawn] = []
    for _ in range(rng.integers(spec.objects[0], spec.objects[1] + 1)):
        label = int(rng.choice(len(spec.classes), p=spec.weights))
        for _try in range(TRIES):
            polygons = spec.draw(rng, label, size)
            ys, xs = np.nonzero(np.asarray(fill_polygons(polygons, size)))
            if not len(xs):
                continue
            x0, y0 = int(xs.min()), int(ys.min())
            bbox = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
            if min(bbox[2:]) >= MIN_SIDE and all(_cover(bbox, d.bbox) <= MAX_COVER for d in drawn):
                break
        else:
            continue
        fill_polygons(polygons, size, bright_colour(rng), img)
        drawn.append(Drawn(label, polygons, bbox, len(xs)))
    return img, drawn


def segmentation_scene(rng: np.random.Generator, kind: str, size: int) -> tuple[Image.Image, Image.Image]:
    """An image of `kind` and its class-index mask (0 background, k + 1 where class k shows; later objects
    cover earlier ones in both)."""
    img, drawn = scene(rng, kind, size)
    mask = Image.new("L", (size, size), 0)
    for d in drawn:
        fill_polygons(d.polygons, size, d.label + 1, mask)
    return img, mask


def detection_scene(rng: np.random.Generator, kind: str, size: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """An image of `kind` and its COCO objects {category_id (1..K), bbox xywh, area, iscrowd 0, segmentation: the
    object's polygons, whole also where a later object covers them}. Box and area are of the pixels drawn; pycocotools
    decodes a polygon a little thinner than PIL fills it, which shows on 1-2 px strokes (`visible_masks` stores the
    drawn pixels instead)."""
    img, drawn = scene(rng, kind, size)
    return img, [dict(category_id=d.label + 1, bbox=d.bbox, area=d.area, iscrowd=0,
                      segmentation=[[round(c, 2) for xy in poly for c in xy] for poly in d.polygons]) for d in drawn]


def _check(kind: str, image_size: int, num_classes: int | None, max_objects: int | None) -> None:
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"data.synthetic.image_size must be at least {MIN_IMAGE_SIZE} for kind={kind} "
                          f"(got {image_size})")
    ignored = [f"num_classes={num_classes}"] * (num_classes is not None) + \
        [f"max_objects={max_objects}"] * (max_objects is not None)
    if ignored:
        log.info("data.synthetic.kind=%s has its own classes (%s) and objects per image; %s apply to kind=shapes "
                 "only and are ignored", kind, ", ".join(SPECS[kind].classes), ", ".join(ignored))


def write_segmentation_kind(root: Path, *, kind: str, counts: dict[str, int], image_size: int, seed: int) -> None:
    write_mask_splits(root, SPECS[kind].classes, counts, seed, lambda rng: segmentation_scene(rng, kind, image_size))


def write_detection_kind(root: Path, *, kind: str, counts: dict[str, int], image_size: int, seed: int,
                         visible_masks: bool = False) -> None:
    write_coco_splits(root, SPECS[kind].classes, counts, image_size, seed,
                      lambda rng: detection_scene(rng, kind, image_size), visible_masks=visible_masks,
                      description=f"Cerberus synthetic {kind}")


def synthetic_segmentation_kind(kind: str = "shapes", train_images: int = 400, val_images: int = 80,
                                test_images: int = 80, image_size: int = 64, seed: int = 0,
                                num_classes: int | None = None, max_objects: int | None = None) -> Path:
    """Generate (once, cached) the image/mask folders of `kind` (`root/<split>/images`, `root/<split>/masks`,
    `root/classes.txt` with background first) and return the root. kind=shapes is `synthetic_segmentation`
    (with `num_classes`, `max_objects` when given); other kinds ignore those two."""
    check_kind(kind)
    if kind == "shapes":
        shapes_only = {k: v for k, v in (("num_classes", num_classes), ("max_objects", max_objects)) if v is not None}
        return synthetic_segmentation(train_images=train_images, val_images=val_images, test_images=test_images,
                                      image_size=image_size, seed=seed, **shapes_only)
    _check(kind, image_size, num_classes, max_objects)
    return _cached(f"segmentation-{kind}", KINDS_VERSION, write_segmentation_kind, kind=kind, image_size=image_size,
                   seed=seed, counts={"train": train_images, "val": val_images, "test": test_images})


def synthetic_detection_kind(kind: str = "shapes", train_images: int = 240, val_images: int = 60,
                             test_images: int = 60, image_size: int = 128, seed: int = 0, visible_masks: bool = False,
                             num_classes: int | None = None, max_objects: int | None = None) -> Path:
    """Generate (once, cached) the COCO set of `kind` (`root/annotations/instances_<split>.json`, images in
    `root/<split>/`; polygons, or with `visible_masks` what shows of each object as RLE) and return the root.
    kind=shapes is `synthetic_detection` (with `num_classes`, `max_objects` when given); other kinds ignore those
    two and draw 1+ objects per image (so no split is empty)."""
    check_kind(kind)
    if kind == "shapes":
        shapes_only = {k: v for k, v in (("num_classes", num_classes), ("max_objects", max_objects)) if v is not None}
        return synthetic_detection(train_images=train_images, val_images=val_images, test_images=test_images,
                                   image_size=image_size, seed=seed, visible_masks=visible_masks, **shapes_only)
    _check(kind, image_size, num_classes, max_objects)
    return _cached(f"detection-{kind}", KINDS_VERSION, write_detection_kind, kind=kind, image_size=image_size,
                   seed=seed, counts={"train": train_images, "val": val_images, "test": test_images},
                   **({"visible_masks": True} if visible_masks else {}))
