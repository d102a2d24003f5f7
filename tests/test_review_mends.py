"""Review mends: the training masks are read (or painted) once per run for the pixel counts of `class_weights:
auto` and the flip check, COCO's counts included, and `tune.lr_find=true` does not count them again."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

import data.segmentation as segmentation
from data.flip_check import MAX_SIDE, flip_sensitive
from data.kinds import synthetic_segmentation_kind
from data.mask_scan import class_counts, scan_masks, shrunk
from data.masks import coco_mask, scan_mask_split
from data.sampling import spread
from data.segmentation import FLIP_CHECK_MASKS, MaskDataModule


def counted(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """Replace `owner.name` by a wrapper that records its first argument per call; returns the record."""
    calls: list[object] = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args[0] if args else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


# --- 1. COCO pixel counts: painted once, cached -------------------------------------------------------------------

def test_coco_counts_paint_each_mask_once_and_equal_a_direct_count(tmp_path, monkeypatch):
    from test_segmentation_data import coco_dm, write_coco

    for split in ("train", "val"):
        write_coco(tmp_path / "coco", split)
    dm = coco_dm(tmp_path / "coco")
    records = dm.source.index("train").images
    direct = [class_counts(coco_mask(rec, 4, 255), 4) for rec in records]
    painted = counted(monkeypatch, segmentation, "coco_mask")

    first = dm.class_pixel_counts()
    assert len(painted) == len(records) == 2
    assert dm.class_pixel_counts() is first and len(painted) == 2, "counted once, then kept"
    assert first.pixels.tolist() == np.sum(direct, 0).tolist() and first.masks == 2
    assert first.image_pixels.tolist() == [sum(int(c.sum()) for c in direct if c[k] > 0) for k in range(4)]

    assert dm.hflip == 0.5 and len(painted) == 2, "the flip check measures the masks the count kept"


def test_coco_counts_a_spread_sample_of_a_large_split(tmp_path, monkeypatch, caplog):
    """Past COUNT_MASKS training images COCO's counts come from that many masks spread over the split (painting
    all of COCO's 118k would take minutes at every start): here 1 of 2, the first."""
    from test_segmentation_data import coco_dm, write_coco

    for split in ("train", "val"):
        write_coco(tmp_path / "coco", split)
    dm = coco_dm(tmp_path / "coco")
    monkeypatch.setattr(segmentation, "COUNT_MASKS", 1)
    first = dm.source.index("train").images[0]
    with caplog.at_level(logging.INFO, logger="data"):
        counts = dm.class_pixel_counts()
    assert counts.masks == 1 and counts.pixels.tolist() == class_counts(coco_mask(first, 4, 255), 4).tolist()
    assert "counted the pixels of 1 of 2 train masks" in caplog.text


def test_coco_flip_check_without_a_count_still_paints_its_sample(tmp_path, monkeypatch):
    from test_segmentation_data import coco_dm, write_coco

    for split in ("train", "val"):
        write_coco(tmp_path / "coco", split)
    dm = coco_dm(tmp_path / "coco")
    painted = counted(monkeypatch, segmentation, "coco_mask")
    assert dm.hflip == 0.5 and len(painted) == 2
    dm.class_pixel_counts()  # the check is done: the count keeps no sample
    assert dm._flip_sample is None


# --- 3. the flip check rides on the mask scan ---------------------------------------------------------------------

def test_scan_keeps_the_flip_sample_spread_and_shrunk(tmp_path):
    """Masks larger than MAX_SIDE are kept subsampled as the flip check subsamples them: same verdict."""
    rng = np.random.default_rng(0)
    masks = []
    for i in range(7):
        mask = np.zeros((70, 150), np.uint8)
        x, y = int(rng.integers(0, 100)), int(rng.integers(0, 30))
        mask[y:y + 30, x:x + 8] = 1
        mask[y + 22:y + 30, x:x + 40] = 1  # an L: a handed class
        masks.append(mask)
        for kind, array in (("images", np.zeros((70, 150, 3), np.uint8)), ("masks", mask)):
            (tmp_path / "train" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(tmp_path / "train" / kind / f"{i}.png")
    index = scan_mask_split(tmp_path / "train")

    scan = scan_masks(index, 2, 255, keep=4)
    assert spread(7, 4).tolist() == [0, 2, 4, 6]
    assert len(scan.kept) == 4 and all(max(m.shape) <= MAX_SIDE for m in scan.kept)
    assert all(np.array_equal(k, shrunk(masks[i])) for k, i in zip(scan.kept, [0, 2, 4, 6]))
    # four masks: too few regions for the chance test, which is not what this compares (alpha=1 leaves it out)
    assert flip_sensitive(scan.kept, 2, min_regions=3, alpha=1) == flip_sensitive(
        [masks[i] for i in (0, 2, 4, 6)], 2, min_regions=3, alpha=1) != {}
    assert scan_masks(index, 2, 255).kept == [] and scan.counts.masks == 7


def test_after_the_scan_the_flip_check_opens_no_mask(monkeypatch, caplog):
    root = synthetic_segmentation_kind("glyphs", train_images=60, val_images=2, test_images=2, image_size=64)
    dm = MaskDataModule(str(root), image_size=64, num_workers=0)
    dm.setup("fit")
    kept = dm._flip_sample
    opened = counted(monkeypatch, Image, "open")
    with caplog.at_level(logging.INFO, logger="data"):
        assert dm.hflip == 0.0
    assert opened == [] and "horizontal flips are OFF" in caplog.text
    assert dm._flip_sample is None, "checked: the sample is let go"

    fresh = MaskDataModule(str(root), image_size=64, num_workers=0)
    assert fresh.hflip == 0.0 and len(opened) == 60, "no scan: the check reads its own masks"
    read = [shrunk(m) for m in fresh.sample_masks(FLIP_CHECK_MASKS)]
    assert len(kept) == len(read) == 60 and all(np.array_equal(a, b) for a, b in zip(kept, read)), \
        "the scan kept the masks the check would have read"


def test_no_sample_is_kept_when_the_flip_check_will_not_run():
    root = synthetic_segmentation_kind("glyphs", train_images=60, val_images=2, test_images=2, image_size=64)
    for augment in ({"flip_check": False}, {"hflip": 0}):
        dm = MaskDataModule(str(root), image_size=64, num_workers=0, augment=augment)
        dm.setup("fit")
        assert dm._flip_sample is None


# --- 2. tune.lr_find=true with class_weights=auto counts once -----------------------------------------------------

def test_lr_find_with_auto_weights_counts_the_masks_once(tmp_path, monkeypatch):
    """Through `train()`: the search's fit and the real fit both set the module up; the weights are counted at
    the first and kept (the buffer, restored by the search), the masks scanned once."""
    import tasks.segmentation.module as seg_module
    from backbones.hydra_configs import compose_config
    from tasks.run import train

    scans = counted(monkeypatch, segmentation, "scan_masks")
    weights = counted(monkeypatch, seg_module, "weights_from_data")
    cfg = compose_config([
        "task=segmentation", "callbacks=minimal", "logger=csv", "data.num_workers=0", "data.batch_size=4",
        "data.synthetic.train_images=8", "data.synthetic.val_images=4", "data.synthetic.test_images=4",
        "data.synthetic.image_size=32", "data.image_size=32", "task.model.decoder_channels=[16,16,8,8,8]",
        "task.module.vis_images=0", "task.module.loss.class_weights=auto", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test_after_fit=false",
        "tune.lr_find=true", "tune.num_training=3", "tune.plot=false"], output_dir=tmp_path)
    train(cfg)
    assert (tmp_path / "lr_find.csv").is_file(), "the search ran"
    assert len(weights) == 1
    train_scans = [index for index in scans if index.split_dir.name == "train"]
    assert len(train_scans) == 1
