"""data.augment.flip_check for COCO instances (task=detection, instance_segmentation, multitask): classes drawn with
one handedness (the `glyphs` kind's letters) turn horizontal flips off; symmetric or randomly rotated shapes, letters
mirrored half the time, boxes-only annotations and flip_check=false keep them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from torchvision.transforms import v2

from backbones.hydra_configs import compose_config
from data import CocoDetectionDataModule
from data.coco import CocoImage, load_coco
from data.flip_check import checked_hflip_instances, coco_instance_crops, flip_sensitive_instances, instance_crops
from data.kinds import synthetic_detection_kind
from data.multitask import MultiTaskCocoDataModule

GLYPHS = {"kind": "glyphs", "train_images": 80, "val_images": 2, "test_images": 2, "image_size": 64}
SHAPES = {**GLYPHS, "kind": "shapes"}


def flip_of(module) -> float:
    """The flip probability of the module's training transform (0 when it has no flip)."""
    flips = [t.p for t in module.dataset("train", train=True).transform.transforms
             if isinstance(t, v2.RandomHorizontalFlip)]
    return flips[0] if flips else 0.0


@pytest.fixture(scope="module")
def glyphs() -> Path:
    return synthetic_detection_kind(**GLYPHS)


def test_instance_crops_are_class_masks_of_each_object():
    """A polygon and an RLE become their label on 0, cropped to their pixels; a crowd region is no object."""
    square = [[2.0, 3.0, 9.0, 3.0, 9.0, 7.0, 2.0, 7.0]]
    rle = {"size": [12, 16], "counts": [133, 3, 9, 3, 9, 3, 32]}  # column-major: rows 1-3 of columns 11-13
    rec = CocoImage(1, Path("x.png"), 16, 12, np.zeros((3, 4)), np.array([2, 1, 3]), np.array([0, 0, 1]),
                    np.zeros(3, np.float32), (square, rle, square))
    crops = instance_crops(rec)
    assert [c.max() for c in crops] == [2, 1] and all(set(np.unique(c)) <= {0, c.max()} for c in crops)
    assert crops[0].all() and crops[1].shape == (3, 3) and crops[1].all()


def test_mirrored_half_the_time_the_letters_keep_their_flips(glyphs):
    """The letters as drawn are found; the same crops each mirrored at random are not: the check measures a
    handedness, not a shape."""
    index = load_coco(glyphs / "annotations" / "instances_train.json", glyphs / "train", segmentation=True)
    crops = coco_instance_crops(index)
    assert sorted(flip_sensitive_instances(crops, 9)) == list(range(1, 9))
    rng = np.random.default_rng(0)
    mirrored = [np.ascontiguousarray(c[:, ::-1]) if rng.integers(2) else c for c in crops]
    assert flip_sensitive_instances(mirrored, 9) == {}
    assert checked_hflip_instances(0.0, crops, index.class_names) == 0.0  # no flips to check


@pytest.mark.parametrize("masks", [False, True])  # detection keeps a sample of the polygons; instance seg all
def test_glyphs_turn_the_training_flip_off(masks, caplog):
    module = CocoDetectionDataModule(synthetic=GLYPHS, num_workers=0, masks=masks)
    with caplog.at_level(logging.INFO, logger="data"):
        assert flip_of(module) == 0.0 and module.hflip == 0.0
    assert "horizontal flips are OFF" in caplog.text and "flip_check=false" in caplog.text
    assert "b (100% of its instances one way)" in caplog.text and "d (100%" in caplog.text
    assert flip_of(CocoDetectionDataModule(synthetic=GLYPHS, num_workers=0, augment={"flip_check": False})) == 0.5
    assert module.dataset("val", train=False).transform is not None  # evaluation builds no check


def test_shapes_keep_the_flip(caplog):
    module = CocoDetectionDataModule(synthetic=SHAPES, num_workers=0)
    with caplog.at_level(logging.INFO, logger="data"):
        assert flip_of(module) == 0.5
    assert "no class has a handedness in the training instance masks" in caplog.text


def test_boxes_only_annotations_keep_the_flip_with_an_info_line(glyphs, tmp_path, caplog):
    data = json.loads((glyphs / "annotations" / "instances_train.json").read_text())
    for ann in data["annotations"]:
        del ann["segmentation"]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(data))
    val = str(glyphs / "annotations" / "instances_val.json")
    module = CocoDetectionDataModule(train_images=str(glyphs / "train"), train_annotations=str(boxes),
                                     val_images=str(glyphs / "val"), val_annotations=val, num_workers=0)
    with caplog.at_level(logging.INFO, logger="data"):
        assert flip_of(module) == 0.5
    infos = [r for r in caplog.records if "flip_check" in r.getMessage()]
    assert [r.levelno for r in infos] == [logging.INFO] and "carry no instance masks" in infos[0].getMessage()


def test_the_config_key_switches_the_check(tmp_path):
    small = [f"data.synthetic.{k}={v}" for k, v in GLYPHS.items()] + ["data.num_workers=0"]
    checked = instantiate(compose_config(["task=detection", *small], output_dir=tmp_path).data)
    assert checked.flip_check and checked.hflip == 0.0
    kept = instantiate(compose_config(["task=detection", *small, "data.augment.flip_check=false"],
                                      output_dir=tmp_path).data)
    assert kept.hflip == 0.5 and flip_of(kept) == 0.5


def test_multitask_flips_as_detection_does():
    module = MultiTaskCocoDataModule(synthetic=GLYPHS, num_workers=0, augment={"hflip": 0.5, "flip_check": True})
    assert flip_of(module) == 0.0 and "flip_check" not in module.augment


def test_detection_keeps_the_polygons_of_a_sample_and_reads_the_json_once(glyphs, monkeypatch):
    """task=detection's index holds the segmentations of up to `sample_segmentations` train images (spread over
    the split), None where an annotation has no valid one, and none for the other images; the check reads no file."""
    data = json.loads((glyphs / "annotations" / "instances_train.json").read_text())
    data["annotations"][0]["segmentation"] = []  # not a valid mask: kept as None, required of nobody
    bad = tmp = glyphs.parent / "flip_sample_test.json"
    tmp.write_text(json.dumps(data))
    try:
        index = load_coco(bad, glyphs / "train", sample_segmentations=5)
    finally:
        tmp.unlink()
    kept = [i for i, rec in enumerate(index.images) if rec.segmentations]
    assert kept == [0, 20, 40, 59, 79]
    assert all(len(index.images[i].segmentations) == len(index.images[i].labels) for i in kept)
    assert index.images[0].segmentations[0] is None and index.images[0].segmentations[1:] != ()
    assert [c.max() for c in instance_crops(index.images[0])] == index.images[0].labels[1:].tolist()
    module = CocoDetectionDataModule(synthetic=GLYPHS, num_workers=0)
    module.source.index("train")
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("the json was read again"))
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail(f"a file was opened: {a[0]}"))
    assert module.hflip == 0.0
