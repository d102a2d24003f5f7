"""Synthetic datasets written to disk in the formats users already have, so the default run reads real files."""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .cache import keyed_dir
from .shapes import SHAPES, bright_colour, draw_shape, noisy_background

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the generator's output changes, so caches are rebuilt


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
        raise ValueError(f"synthetic classification supports 2..{len(SHAPES)} classes (got {num_classes})")
    params: dict[str, Any] = dict(num_classes=num_classes, image_size=image_size, seed=seed, version=FORMAT_VERSION,
                                  per_class={"train": train_per_class, "val": val_per_class, "test": test_per_class})
    root = keyed_dir("classification", params)
    if not root.exists():
        log.info("writing synthetic classification data to %s", root)
        _write_atomically(root, lambda tmp: write_classification(
            tmp, num_classes=num_classes, per_class=params["per_class"], image_size=image_size, seed=seed))
    return root
