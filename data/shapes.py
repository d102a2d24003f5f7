"""Coloured shapes on noisy backgrounds: the drawing primitives behind every synthetic dataset.

Each shape is a polygon, so the same draw gives the image, its box and (later) its mask.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "triangle", "square", "star", "cross", "hexagon", "diamond", "arrow")


def shape_polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of `kind` centred at (cx, cy), fitting a circle of `radius`, rotated by `angle` radians."""
    if kind == "circle":
        pts = [(1.0, 2 * math.pi * i / 40) for i in range(40)]
    elif kind == "triangle":
        pts = [(1.0, -math.pi / 2 + 2 * math.pi * i / 3) for i in range(3)]
    elif kind == "square":
        pts = [(1.0, math.pi / 4 + math.pi / 2 * i) for i in range(4)]
    elif kind == "diamond":
        pts = [(1.0 if i % 2 == 0 else 0.6, math.pi / 2 * i) for i in range(4)]
    elif kind == "hexagon":
        pts = [(1.0, 2 * math.pi * i / 6) for i in range(6)]
    elif kind == "star":
        pts = [(1.0 if i % 2 == 0 else 0.42, -math.pi / 2 + math.pi * i / 5) for i in range(10)]
    elif kind == "cross":
        w = 0.33
        xy = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1),
              (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        pts = [(math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    elif kind == "arrow":
        xy = [(1, 0), (0.2, 0.7), (0.2, 0.3), (-1, 0.3), (-1, -0.3), (0.2, -0.3), (0.2, -0.7)]
        pts = [(math.hypot(x, y), math.atan2(y, x)) for x, y in xy]
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")
    return [(cx + radius * r * math.cos(a + angle), cy + radius * r * math.sin(a + angle)) for r, a in pts]


def noisy_background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A dim colour gradient with pixel noise, so a model cannot key on a flat background."""
    base = rng.uniform(20, 110, size=3)
    tilt = rng.uniform(-40, 40, size=(2, 3))
    ys = np.linspace(0, 1, height)[:, None, None]
    xs = np.linspace(0, 1, width)[None, :, None]
    img = base + ys * tilt[0] + xs * tilt[1] + rng.normal(0, 18, size=(height, width, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def bright_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour that stands out from `noisy_background`."""
    colour = rng.uniform(60, 255, size=3)
    colour[rng.integers(3)] = 255
    return tuple(int(c) for c in colour)


def draw_shape(img: Image.Image, kind: str, cx: float, cy: float, radius: float, angle: float,
               colour: tuple[int, int, int]) -> list[tuple[float, float]]:
    """Draw one filled shape in place; returns its polygon."""
    poly = shape_polygon(kind, cx, cy, radius, angle)
    ImageDraw.Draw(img).polygon(poly, fill=colour)
    return poly
