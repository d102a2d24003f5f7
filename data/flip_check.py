"""Which classes a horizontal flip would turn into something else: `data.augment.flip_check` (segmentation, and
detection / instance segmentation when the annotations carry masks).

A flip is a safe augmentation only when a mirrored object is still an object of its class. For letters (b and d, p
and q), arrows, and any class drawn with one handedness, it is not: trained with flips, the model sees every b also
as a mirrored b labelled b, i.e. as a d, and cannot tell them apart (on the `glyphs` kind the default flip costs
about 0.1 mIoU, README "Recipes across dataset kinds").

The check reads up to `sample` training masks and measures, per connected region of one class (its own centre, so
where it lies in the image does not matter), the moments that a flip negates: the x-y covariance and the x-x-x and
x-y-y third moments, each normalised by the region's spread. A class whose regions agree in the sign of one of them
(`agreement`, of at least `min_regions` regions with a clear sign) has a handedness; objects seen from either side,
symmetric ones and ones at random angles do not agree, so natural classes keep their flips. On a small set a
symmetric class can agree by chance (9 of 10 regions one way happens 2 % of the time per moment): the agreement must
also be unlikely under a fair coin: a two-sided binomial test at `alpha` (5 %), Bonferroni-corrected for every
class and moment tested (with 10 classes: 11 of 11 regions one way, 18 of 20; from 25 regions on the 85 % agreement
is the stricter rule). The test is loose on purpose: flips wrongly kept make a handed class unlearnable, flips
wrongly turned off cost some augmentation, and the warning says how to keep them.

Detection reads COCO instances instead (`coco_instance_crops`): each instance's polygons / RLE, measured as one
region (an occluded object in pieces is still one object), of the training images whose segmentations the COCO
index keeps (for task=detection a sample, `load_coco(sample_segmentations=CHECK_IMAGES)`: the json is read once). A
box alone cannot show a handedness: boxes-only annotations keep their flips, said in an info line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from .coco import CocoImage, CocoIndex
from .masks import instance_masks
from .sampling import spread

log = logging.getLogger("data")
MIN_PIXELS = 12  # regions smaller than this have no shape to speak of
CLEAR = 0.05  # |normalised moment| below this: no clear sign (a symmetric region)
MAX_SIDE = 64  # masks are checked at most this large (nearest): handedness shows at any size
CHECK_IMAGES = 100  # training images the detection check reads (spread over the split)
CHECK_INSTANCES = 400  # instances it measures at most
ALPHA = 0.05  # the chance, over all classes and moments, that a check on a flip-symmetric set turns flips off


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
    count, moments = _group_moments(group, xs, ys)
    keep = count >= MIN_PIXELS
    classes = np.asarray(labels)[keys // (h * w + 1)]
    return classes[keep], moments[keep]


def _group_moments(group: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels per group (G,), flip-negated normalised moments (G, 3): mu11, mu30, mu12) of the pixels at (`xs`,
    `ys`) in groups 0..G-1, each about its group's own centre, x and y divided by the group's spread."""
    count = np.bincount(group).astype(np.float64)
    x, y = xs.astype(np.float64), ys.astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=values) / count

    ex, ey, exx, eyy, exy = mean(x), mean(y), mean(x * x), mean(y * y), mean(x * y)
    sx, sy = np.sqrt(np.maximum(exx - ex ** 2, 1e-12)), np.sqrt(np.maximum(eyy - ey ** 2, 1e-12))
    mu11 = (exy - ex * ey) / (sx * sy)
    mu30 = (mean(x ** 3) - 3 * ex * exx + 2 * ex ** 3) / sx ** 3
    mu12 = (mean(x * y * y) - 2 * ey * exy - ex * eyy + 2 * ex * ey ** 2) / (sx * sy ** 2)
    return count, np.stack([mu11, mu30, mu12], 1)


def flip_sensitive(masks: Iterable[np.ndarray], num_classes: int, skip: Sequence[int] = (0,),
                   agreement: float = 0.85, min_regions: int = 10, alpha: float = ALPHA) -> dict[int, float]:
    """{class: the share of its regions agreeing in the sign of its most consistent flip-negated moment} for the
    classes with a handedness in `masks` ((H, W) class-index arrays); `skip`: classes not checked (background)."""
    labels = [c for c in range(num_classes) if c not in skip]
    classes, moments = [], []
    for mask in masks:
        c, m = region_moments(at_most_side(mask), labels)
        classes.append(c)
        moments.append(m)
    return _agreeing(classes, moments, labels, agreement, min_regions, alpha)


def at_most_side(mask: np.ndarray) -> np.ndarray:
    """`mask` subsampled (nearest) to at most MAX_SIDE px a side, as the check measures it (a view)."""
    step = max(1, -(-max(mask.shape) // MAX_SIDE))
    return mask[::step, ::step]


def _agreeing(classes: list[np.ndarray], moments: list[np.ndarray], labels: Sequence[int], agreement: float,
              min_regions: int, alpha: float = ALPHA) -> dict[int, float]:
    """`flip_sensitive`'s verdict on the measured regions: their classes and (R, 3) moments, in parts. A class is
    found when, for one moment, at least `min_regions` regions have a clear sign, at least `agreement` of them agree,
    and that many agreeing is unlikely by chance (`chance_agreement` <= `alpha` over every class and moment)."""
    if not classes:
        return {}
    classes, moments = np.concatenate(classes), np.concatenate(moments)
    tests = len(labels) * moments.shape[1]
    found = {}
    for label in labels:
        table = moments[classes == label]  # (regions, 3)
        best = 0.0
        for column in table.T:
            clear = column[np.abs(column) >= CLEAR]
            if len(clear) < min_regions:
                continue
            agree = int(max((clear > 0).sum(), (clear < 0).sum()))
            # the exact tail sums thousands of big integers on a large set: only where the share could count
            if agree / len(clear) >= agreement and chance_agreement(len(clear), agree) * tests <= alpha:
                best = max(best, agree / len(clear))
        if best >= agreement:
            found[label] = best
    return found


def chance_agreement(n: int, k: int) -> float:
    """The two-sided binomial tail: the chance that at least `k` of `n` fair coin flips land on one side."""
    if 2 * k <= n:
        return 1.0
    # exact integers: 2 ** n overflows a float from n = 1024 on (a large COCO sample)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n)


def checked_hflip(hflip: float, masks: Iterable[np.ndarray], class_names: Sequence[str],
                  background: Sequence[int]) -> float:
    """`hflip`, or 0 with a warning naming the classes when some have a handedness in the training `masks`."""
    if hflip <= 0:
        return hflip
    return _verdict(hflip, flip_sensitive(masks, len(class_names), background), class_names, "masks", "regions")


def _verdict(hflip: float, found: dict[int, float], class_names: Sequence[str], read: str, unit: str) -> float:
    """`hflip` with an info line, or 0 with a warning naming the `found` classes; `read`: what was checked (the
    training "masks"), `unit`: what each share counts ("regions")."""
    if not found:
        log.info("data.augment.flip_check: no class has a handedness in the training %s; flips stay on "
                 "(hflip=%g)", read, hflip)
        return hflip
    named = ", ".join(f"{class_names[c]} ({share:.0%} of its {unit} one way)" for c, share in sorted(found.items()))
    log.warning("data.augment.flip_check: horizontal flips are OFF: a flip would mirror classes drawn with one "
                "handedness into shapes their class never has (%s); data.augment.flip_check=false keeps "
                "data.augment.hflip=%g", named, hflip)
    return 0.0


def instance_crops(rec: CocoImage) -> list[np.ndarray]:
    """Each non-crowd instance of `rec` (with its segmentations) as its own class-index mask: cropped to the
    instance's pixels, its label (1..K) on 0. A crowd region is a group, not one object of a shape."""
    crops = []
    known = [i for i, segm in enumerate(rec.segmentations) if segm is not None]  # a sample keeps valid ones only
    masks = instance_masks(replace(rec, segmentations=tuple(rec.segmentations[i] for i in known)))
    for mask, label, crowd in zip(masks, rec.labels[known], rec.iscrowd[known]):
        ys, xs = np.nonzero(mask)
        if not crowd and len(xs):
            crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            crops.append(np.where(crop != 0, int(label), 0).astype(np.int32))
    return crops


def coco_instance_crops(index: CocoIndex, images: int = CHECK_IMAGES,
                        limit: int = CHECK_INSTANCES) -> list[np.ndarray]:
    """Up to `limit` instance crops (`instance_crops`) of up to `images` training images spread over those of
    `index` that carry segmentations (all of them for instance segmentation; for task=detection the sample
    `load_coco(sample_segmentations=...)` kept). Empty when none carries a mask."""
    with_masks = [rec for rec in index.images if any(s is not None for s in rec.segmentations)]
    crops: list[np.ndarray] = []
    for i in spread(len(with_masks), images):
        if len(crops) >= limit:
            break
        crops += instance_crops(with_masks[i])
    return crops[:limit]


def flip_sensitive_instances(crops: Iterable[np.ndarray], num_classes: int, agreement: float = 0.85,
                             min_regions: int = 10, alpha: float = ALPHA) -> dict[int, float]:
    """`flip_sensitive` on instances: {label: the share of its instances agreeing in the sign of its most consistent
    flip-negated moment} for the labels 1..num_classes-1 with a handedness; each crop (`instance_crops`) is one
    region, all of its pixels (an object occluded into pieces is still one object)."""
    classes, groups, xs, ys = [], [], [], []
    for crop in crops:
        y, x = np.nonzero(at_most_side(crop))
        if len(x) >= MIN_PIXELS:
            classes.append(int(crop.max()))
            groups.append(np.full(len(x), len(classes) - 1))
            xs.append(x)
            ys.append(y)
    if not classes:
        return {}
    _, moments = _group_moments(np.concatenate(groups), np.concatenate(xs), np.concatenate(ys))
    return _agreeing([np.asarray(classes)], [moments], range(1, num_classes), agreement, min_regions, alpha)


def checked_hflip_instances(hflip: float, crops: Sequence[np.ndarray], class_names: Sequence[str]) -> float:
    """`checked_hflip` for detection: `hflip`, or 0 with the same warning when some of the K `class_names` (label k
    is `class_names[k - 1]`) have a handedness in the training instance `crops` (`coco_instance_crops`). No crops
    (boxes-only annotations): an info line, and the flips stay on."""
    if hflip <= 0:
        return hflip
    if not len(crops):
        log.info("data.augment.flip_check: the training annotations carry no instance masks (polygons / RLE) and a "
                 "box cannot show a handedness, so the check cannot run; flips stay on (hflip=%g). If a class is "
                 "drawn one way only (letters such as b/d, arrows), set data.augment.hflip=0", hflip)
        return hflip
    names = ["background", *class_names]
    return _verdict(hflip, flip_sensitive_instances(crops, len(names)), names, "instance masks", "instances")
