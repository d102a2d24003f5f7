"""Which classes a horizontal flip would turn into something else: `data.augment.flip_check` (segmentation).

A flip is a safe augmentation only when a mirrored object is still an object of its class. For letters (b and d, p
and q), arrows, and any class drawn with one handedness, it is not: trained with flips, the model sees every b also
as a mirrored b labelled b, i.e. as a d, and cannot tell them apart (on the `glyphs` kind the default flip costs
about 0.1 mIoU, README "Recipes across dataset kinds").

The check reads up to `sample` training masks and measures, per connected region of one class (its own centre, so
where it lies in the image does not matter), the moments that a flip negates: the x-y covariance and the x-x-x and
x-y-y third moments, each normalised by the region's spread. A class whose regions agree in the sign of one of them
(`agreement`, of at least `min_regions` regions with a clear sign) has a handedness; objects seen from either side,
symmetric ones and ones at random angles do not agree, so natural classes keep their flips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

log = logging.getLogger("data")
MIN_PIXELS = 12  # regions smaller than this have no shape to speak of
CLEAR = 0.05  # |normalised moment| below this: no clear sign (a symmetric region)
MAX_SIDE = 64  # masks are checked at most this large (nearest): handedness shows at any size


def region_moments(mask: np.ndarray, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected regions of the classes in `labels` in the (H, W) `mask` of at least MIN_PIXELS pixels:
    (their classes (R,), their flip-negated normalised moments (R, 3): mu11, mu30, mu12 about each region's own
    centre, x and y each divided by the region's spread)."""
    m = np.asarray(mask)
    h, w = m.shape
    on = m[None] == np.asarray(labels).reshape(-1, 1, 1)  # (C, H, W)
    # label propagation, every class at once (one channel each): each pixel takes the largest id among its 8
    # neighbours of its class until nothing changes (as many rounds as the longest path inside a region). numpy
    # rather than torch: tiny ops, where torch's thread pool costs more than the work on a busy machine
    ids = np.where(on, np.arange(1, h * w + 1, dtype=np.int32).reshape(1, h, w), 0).astype(np.int32)
    for _ in range(h * w):
        grown = ids.copy()  # the 3 x 3 maximum as a 1 x 3 then a 3 x 1 one
        np.maximum(grown[:, :, 1:], ids[:, :, :-1], out=grown[:, :, 1:])
        np.maximum(grown[:, :, :-1], ids[:, :, 1:], out=grown[:, :, :-1])
        rows = grown.copy()
        np.maximum(grown[:, 1:], rows[:, :-1], out=grown[:, 1:])
        np.maximum(grown[:, :-1], rows[:, 1:], out=grown[:, :-1])
        grown *= on
        if np.array_equal(grown, ids):
            break
        ids = grown
    c, ys, xs = np.nonzero(on)
    keys, group = np.unique(c * (h * w + 1) + ids[c, ys, xs], return_inverse=True)
    count = np.bincount(group).astype(np.float64)
    x, y = xs.astype(np.float64), ys.astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values) / count

    ex, ey, exx, eyy, exy = mean(x), mean(y), mean(x * x), mean(y * y), mean(x * y)
    sx, sy = np.sqrt(np.maximum(exx - ex ** 2, 1e-12)), np.sqrt(np.maximum(eyy - ey ** 2, 1e-12))
    mu11 = (exy - ex * ey) / (sx * sy)
    mu30 = (mean(x ** 3) - 3 * ex * exx + 2 * ex ** 3) / sx ** 3
    mu12 = (mean(x * y * y) - 2 * ey * exy - ex * eyy + 2 * ex * ey ** 2) / (sx * sy ** 2)
    keep = count >= MIN_PIXELS
    classes = np.asarray(labels)[keys // (h * w + 1)]
    return classes[keep], np.stack([mu11, mu30, mu12], 1)[keep]


def flip_sensitive(masks: Iterable[np.ndarray], num_classes: int, skip: Sequence[int] = (0,),
                   agreement: float = 0.85, min_regions: int = 10) -> dict[int, float]:
    """{class: the share of its regions agreeing in the sign of its most consistent flip-negated moment} for the
    classes with a handedness in `masks` ((H, W) class-index arrays); `skip`: classes not checked (background)."""
    labels = [c for c in range(num_classes) if c not in skip]
    classes, moments = [], []
    for mask in masks:
        step = max(1, -(-max(mask.shape) // MAX_SIDE))
        c, m = region_moments(mask[::step, ::step], labels)
        classes.append(c)
        moments.append(m)
    if not classes:
        return {}
    classes, moments = np.concatenate(classes), np.concatenate(moments)
    found = {}
    for label in labels:
        table = moments[classes == label]  # (regions, 3)
        best = 0.0
        for column in table.T:
            clear = column[np.abs(column) >= CLEAR]
            if len(clear) >= min_regions:
                best = max(best, float(max((clear > 0).mean(), (clear < 0).mean())))
        if best >= agreement:
            found[label] = best
    return found


def checked_hflip(hflip: float, masks: Iterable[np.ndarray], class_names: Sequence[str],
                  background: Sequence[int]) -> float:
    """`hflip`, or 0 with a warning naming the classes when some have a handedness in the training `masks`."""
    if hflip <= 0:
        return hflip
    found = flip_sensitive(masks, len(class_names), background)
    if not found:
        log.info("data.augment.flip_check: no class has a handedness in the training masks; flips stay on "
                 "(hflip=%g)", hflip)
        return hflip
    named = ", ".join(f"{class_names[c]} ({share:.0%} of its regions one way)" for c, share in sorted(found.items()))
    log.warning("data.augment.flip_check: horizontal flips are OFF: a flip would mirror classes drawn with one "
                "handedness into shapes their class never has (%s); data.augment.flip_check=false keeps "
                "data.augment.hflip=%g", named, hflip)
    return 0.0
