"""The objects of the synthetic dataset kinds (data/kinds.py) as polygons: strokes, regular polygons and stars,
letter-like glyphs. An object is a list of polygons whose union is its mask, so the same polygons fill the image,
paint the mask and become COCO's multi-polygon `segmentation`.

Coordinates are local (centred near the origin, unrotated, in pixels) until `place` rotates and moves them.
"""

from __future__ import annotations

import math

import numpy as np

Polygon = list[tuple[float, float]]


def stroke(points: list[tuple[float, float]], width: float) -> list[Polygon]:
    """A polyline `width` px wide as one quad per segment. Inner joints get square caps (each segment is
    lengthened by width / 2 at a joint) so a bend leaves no notch; the two ends stay where they are, so a dash
    keeps its length and the gap to the next one."""
    quads = []
    last = len(points) - 2
    for i, ((x0, y0), (x1, y1)) in enumerate(zip(points, points[1:])):
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        dx, dy = (x1 - x0) / length, (y1 - y0) / length
        cap0, cap1 = (width / 2 if i > 0 else 0.0), (width / 2 if i < last else 0.0)
        x0, y0, x1, y1 = x0 - dx * cap0, y0 - dy * cap0, x1 + dx * cap1, y1 + dy * cap1
        nx, ny = -dy * width / 2, dx * width / 2
        quads.append([(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)])
    return quads


def regular(sides: int, radius: float, star: bool = False, inner: float = 0.5) -> Polygon:
    """A regular `sides`-gon fitting a circle of `radius`, or with `star` a star of `sides` points whose inner
    vertices lie at `inner` * radius (the same ratio for every point count, so only the count tells stars apart)."""
    if star:
        return [((radius if i % 2 == 0 else inner * radius) * math.cos(-math.pi / 2 + math.pi * i / sides),
                 (radius if i % 2 == 0 else inner * radius) * math.sin(-math.pi / 2 + math.pi * i / sides))
                for i in range(2 * sides)]
    return [(radius * math.cos(-math.pi / 2 + 2 * math.pi * i / sides),
             radius * math.sin(-math.pi / 2 + 2 * math.pi * i / sides)) for i in range(sides)]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _ring(cx: float, cy: float, outer: float, inner: float, pieces: int = 20) -> list[Polygon]:
    """An annulus as `pieces` quads (a polygon cannot have a hole)."""
    angles = [2 * math.pi * i / pieces for i in range(pieces + 1)]
    return [[(cx + outer * math.cos(a), cy + outer * math.sin(a)), (cx + outer * math.cos(b), cy + outer * math.sin(b)),
             (cx + inner * math.cos(b), cy + inner * math.sin(b)), (cx + inner * math.cos(a), cy + inner * math.sin(a))]
            for a, b in zip(angles, angles[1:])]


def _mirror(polygons: list[Polygon], x: bool = False, y: bool = False) -> list[Polygon]:
    return [[(-px if x else px, -py if y else py) for px, py in poly] for poly in polygons]


# Glyphs in a box x in [-0.6, 0.6], y in [-1, 1] (y points down, as in the image), strokes 0.28 thick. b, d, p, q
# are one glyph mirrored: a horizontal flip turns b into d and p into q, a vertical one b into p; F, J, L, 7 have
# no mirror in the set but change under a flip too, so flip augmentation mislabels every class.
_T = 0.28
_B = [_rect(-0.6, -1.0, -0.6 + _T, 1.0), *_ring(0.0, 0.4, 0.6, 0.6 - _T)]
GLYPHS: dict[str, list[Polygon]] = {
    "b": _B,
    "d": _mirror(_B, x=True),
    "p": _mirror(_B, y=True),
    "q": _mirror(_B, x=True, y=True),
    "F": [_rect(-0.6, -1.0, -0.6 + _T, 1.0), _rect(-0.6, -1.0, 0.6, -1.0 + _T), _rect(-0.6, -0.14, 0.35, 0.14)],
    "J": [_rect(0.6 - _T, -1.0, 0.6, 1.0), _rect(-0.6, 1.0 - _T, 0.6, 1.0), _rect(-0.6, 0.35, -0.6 + _T, 1.0)],
    "L": [_rect(-0.6, -1.0, -0.6 + _T, 1.0), _rect(-0.6, 1.0 - _T, 0.6, 1.0)],
    "7": [_rect(-0.6, -1.0, 0.6, -1.0 + _T), [(0.6 - _T, -1.0 + _T), (0.6, -1.0 + _T), (-0.2, 1.0), (-0.2 - _T, 1.0)]],
}


def glyph(name: str, half_height: float) -> list[Polygon]:
    """Glyph `name` scaled to 2 * `half_height` px tall, centred at the origin."""
    return [[(x * half_height, y * half_height) for x, y in poly] for poly in GLYPHS[name]]


def place(rng: np.random.Generator, polygons: list[Polygon], size: int, angle: float) -> list[Polygon]:
    """Rotate `polygons` by `angle` radians and move them to a random spot where they lie inside the
    `size` x `size` image (centred when they are too large to fit)."""
    cos, sin = math.cos(angle), math.sin(angle)
    turned = [[(x * cos - y * sin, x * sin + y * cos) for x, y in poly] for poly in polygons]
    xs = [x for poly in turned for x, _ in poly]
    ys = [y for poly in turned for _, y in poly]
    shift = []
    for lo, hi in ((min(xs), max(xs)), (min(ys), max(ys))):
        room = size - (hi - lo)
        shift.append((rng.uniform(0, room) if room > 0 else room / 2) - lo)
    return [[(x + shift[0], y + shift[1]) for x, y in poly] for poly in turned]
