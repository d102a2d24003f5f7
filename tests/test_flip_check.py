"""data.augment.flip_check: classes drawn with one handedness (letters, an L) turn horizontal flips off; symmetric,
randomly rotated or randomly mirrored ones, and where a region lies in the image, do not."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data import MaskDataModule
from data.flip_check import _agreeing, chance_agreement, flip_sensitive, region_moments
from data.kinds import synthetic_segmentation_kind


def masks(draw_one, count: int = 30, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """`count` masks, each with two regions of class 1 drawn by `draw_one(draw, rng, x, y)` at random places."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(image)
        for x in (rng.integers(2, 12), rng.integers(34, 44)):  # left half, right half: two separate regions
            draw_one(draw, rng, int(x), int(rng.integers(2, 40)))
        out.append(np.asarray(image))
    return out


def ell(draw, rng, x, y, mirrored=False):
    """An upright L (stem 4 px wide, foot to the right; mirrored: to the left), 14-20 px tall."""
    h, foot = int(rng.integers(14, 21)), int(rng.integers(8, 13))
    if mirrored:
        draw.rectangle([x + foot - 4, y, x + foot - 1, y + h - 1], fill=1)
        draw.rectangle([x, y + h - 4, x + foot - 1, y + h - 1], fill=1)
    else:
        draw.rectangle([x, y, x + 3, y + h - 1], fill=1)
        draw.rectangle([x, y + h - 4, x + foot - 1, y + h - 1], fill=1)


def test_a_handed_class_is_found_and_a_mirrored_or_symmetric_one_is_not():
    assert list(flip_sensitive(masks(ell), 2)) == [1]
    both_ways = masks(lambda d, rng, x, y: ell(d, rng, x, y, mirrored=bool(rng.integers(2))))
    assert flip_sensitive(both_ways, 2) == {}
    boxes = masks(lambda d, rng, x, y: d.rectangle([x, y, x + int(rng.integers(6, 16)), y + 12], fill=1))
    assert flip_sensitive(boxes, 2) == {}
    rotated = [np.asarray(Image.fromarray(m).rotate(float(a), resample=Image.NEAREST))
               for m, a in zip(masks(ell), np.random.default_rng(1).uniform(0, 360, 30))]
    assert flip_sensitive(rotated, 2) == {}


def test_where_a_symmetric_region_lies_does_not_count():
    """Always a square on the left and a wide bar on the right: the class's pixels as a whole are lopsided, each
    region is not."""
    def layout(draw, rng, x, y):
        if x < 32:
            draw.rectangle([x, y, x + 9, y + 9], fill=1)
        else:
            draw.rectangle([x, y, x + 17, y + 5], fill=1)
    assert flip_sensitive(masks(layout), 2) == {}


def test_regions_are_8_connected_per_class():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:8, 2:8] = 1
    mask[8:14, 8:14] = 1  # touches the first square at a corner: one region
    mask[2:8, 14:19] = 2
    mask[14:19, 2:6] = 1  # apart: a second region of class 1
    classes, moments = region_moments(mask, [1, 2])
    assert sorted(classes.tolist()) == [1, 1, 2] and moments.shape == (3, 3)
    alone = region_moments(mask[2:8, 2:8], [1])[1][0]
    assert np.allclose(alone, 0, atol=1e-9)  # a square: nothing a flip would change
    flipped = region_moments(np.ascontiguousarray(mask[:, ::-1]), [1, 2])[1]
    assert np.allclose(np.sort(flipped, 0), np.sort(-moments, 0), atol=1e-9)  # a flip negates all three


@pytest.mark.parametrize("kind, flips", [("glyphs", 0.0), ("shapes", 0.5)])
def test_the_data_module_turns_flips_off_for_handed_classes(kind, flips, caplog):
    # 100 images: about 16 regions per glyph, enough for the chance test (60 left b at its edge with 10)
    root = synthetic_segmentation_kind(kind, train_images=100, val_images=2, test_images=2, image_size=64)
    module = MaskDataModule(str(root), image_size=64, num_workers=0)
    with caplog.at_level(logging.INFO, logger="data"):
        assert module.hflip == flips
    if kind == "glyphs":
        assert "horizontal flips are OFF" in caplog.text and "b (" in caplog.text and "flip_check=false" in caplog.text
        kept = MaskDataModule(str(root), image_size=64, num_workers=0, augment={"flip_check": False})
        assert kept.hflip == 0.5
    else:
        assert "no class has a handedness" in caplog.text


def test_a_small_set_of_mirror_symmetric_classes_rarely_turns_flips_off():
    """10 classes of 12 regions each whose moments have coin-flip signs (objects seen from either side): the 85 %
    agreement alone turns flips off on about 15 % of such sets (10 regions each: half); with the chance test, at
    most ALPHA (5 %)."""
    rng = np.random.default_rng(0)
    labels, trials = list(range(1, 11)), 400
    classes = [np.repeat(labels, 12)]

    def flagged(alpha: float) -> float:
        hits = 0
        for _ in range(trials):
            moments = rng.choice([-1.0, 1.0], size=(120, 3)) * rng.uniform(0.1, 1.0, size=(120, 3))
            hits += bool(_agreeing(classes, [moments], labels, agreement=0.85, min_regions=10, alpha=alpha))
        return hits / trials
    assert flagged(alpha=1.0) > 0.15  # the rule without the test: what this guards against
    assert flagged(alpha=0.05) <= 0.05
    handed = np.abs(rng.uniform(0.1, 1.0, size=(120, 3)))  # every region one way: still found, all ten
    assert sorted(_agreeing(classes, [handed], labels, 0.85, 10)) == labels


def test_chance_agreement_is_the_binomial_tail():
    assert chance_agreement(10, 9) == pytest.approx(2 * 11 / 1024)
    assert chance_agreement(10, 5) == 1.0 and chance_agreement(1, 1) == 1.0
    assert 0 < chance_agreement(3000, 1700) < 1e-12  # 2 ** 3000 is no float: exact integers
