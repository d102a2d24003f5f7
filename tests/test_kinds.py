"""The synthetic dataset kinds (data/kinds.py): each writes layouts the real data modules load, and each has the
property it is meant to stress (thin strokes, imbalance, similar classes, small objects, mirror glyphs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from backbones.hydra_configs import compose_config
from data import CocoDetectionDataModule, MaskDataModule
from data.kind_geometry import glyph
from data.kinds import (
    KINDS,
    SPECS,
    fill_polygons,
    scene,
    segmentation_scene,
    synthetic_detection_kind,
    synthetic_segmentation_kind,
)
from data.synthetic import synthetic_detection, synthetic_segmentation

TINY = dict(train_images=4, val_images=2, test_images=2, image_size=64)


def foreground_and_class_pixels(kind: str, images: int, size: int = 64) -> tuple[float, np.ndarray]:
    """Mean foreground fraction of `images` masks of `kind` and the pixels of each class (index 0 background)."""
    rng, fg, pixels = np.random.default_rng(0), [], np.zeros(len(SPECS[kind].classes) + 1)
    for _ in range(images):
        mask = np.asarray(segmentation_scene(rng, kind, size)[1])
        fg.append((mask > 0).mean())
        pixels += np.bincount(mask.ravel(), minlength=len(pixels))
    return float(np.mean(fg)), pixels


@pytest.mark.parametrize("kind", KINDS)
def test_segmentation_kind_loads_in_the_mask_data_module(kind):
    module = MaskDataModule(None, synthetic={"kind": kind, **TINY}, image_size=64, batch_size=2, num_workers=0)
    module.setup("fit")
    names = module.class_names
    assert names[0] == "background" and names[1:] == list(SPECS[kind].classes if kind != "shapes" else
                                                          ("circle", "triangle", "square"))
    images, masks = next(iter(module.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 64, 64)
    assert 0 <= int(masks.min()) and int(masks[masks != 255].max()) < len(names)
    assert [len(list((module.root / s / "masks").glob("*.png"))) for s in ("train", "val", "test")] == [4, 2, 2]


@pytest.mark.parametrize("kind", KINDS)
def test_detection_kind_loads_in_the_detection_data_module(kind):
    module = CocoDetectionDataModule(None, synthetic={"kind": kind, **TINY}, batch_size=2, num_workers=0)
    module.prepare_data()
    module.setup("fit")
    assert len(module.class_names) == (3 if kind == "shapes" else len(SPECS[kind].classes))
    images, targets = next(iter(module.train_dataloader()))
    assert images[0].shape == (3, 64, 64) and all(t["boxes"].shape[1:] == (4,) for t in targets)
    coco = json.loads(module.annotation_file("train").read_text())
    assert {a["iscrowd"] for a in coco["annotations"]} == {0}
    assert all(isinstance(a["segmentation"], list) and a["area"] > 0 for a in coco["annotations"])


def test_kinds_with_visible_masks_load_as_instance_segmentation():
    """Instance segmentation (data=synthetic_instance_segmentation) asks for visible_masks: each object's mask as
    drawn, in several parts for a dashed stroke."""
    module = CocoDetectionDataModule(None, synthetic={"kind": "thin", "visible_masks": True, **TINY}, masks=True,
                                     batch_size=2, num_workers=0)
    module.setup("fit")
    _, targets = next(iter(module.val_dataloader()))
    assert all(t["masks"].shape[0] == t["boxes"].shape[0] and t["masks"].flatten(1).sum(1).min() > 0
               for t in targets)


def test_thin_strokes_cover_under_10_percent():
    fg, _ = foreground_and_class_pixels("thin", 60)
    assert 0.01 < fg < 0.10


def test_imbalance_has_little_foreground_and_a_rare_class():
    fg, pixels = foreground_and_class_pixels("imbalance", 150)
    assert 0.02 <= fg < 0.06
    assert pixels[1:].min() * 5 < pixels[1:].max()  # the rare class has under a fifth of the common one's pixels


def test_similar_has_eight_classes_drawn_alike():
    root = synthetic_segmentation_kind("similar", **TINY)
    names = (root / "classes.txt").read_text().split()
    assert len(names) >= 9 and names[0] == "background"  # 8+ classes besides background


def test_small_objects_have_small_boxes_several_per_image():
    root = synthetic_detection_kind("small", **TINY)
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert max(max(a["bbox"][2:]) for a in coco["annotations"]) < 0.15 * 64
    assert len(coco["annotations"]) >= 3 * len(coco["images"])


def test_glyphs_have_mirror_pairs():
    """b flipped left-right is d, p flipped is q (up to a few pixels where PIL's edge rule breaks ties), while
    b and d themselves differ: a horizontal flip changes the class."""
    size = 64

    def render(name: str) -> np.ndarray:
        centred = [[(x + size / 2, y + size / 2) for x, y in poly] for poly in glyph(name, 24)]
        return np.asarray(fill_polygons(centred, size)) > 0

    for left, right in (("b", "d"), ("p", "q")):
        a, b = render(left), render(right)
        assert (np.fliplr(a) != b).sum() <= 0.01 * a.sum()
        assert (a != b).sum() > 0.3 * a.sum()
    assert set("bdpq") <= set(SPECS["glyphs"].classes)


def test_objects_are_drawn_as_reported_in_random_colours():
    """The last object drawn (nothing covers it) has its class in the mask and one colour in the image over all
    its pixels; colours differ from object to object, so colour carries no class information."""
    colours = []
    for k, kind in enumerate(KINDS[1:]):
        for seed in range(4):
            img, drawn = scene(np.random.default_rng([k, seed]), kind, 64)
            mask = np.asarray(segmentation_scene(np.random.default_rng([k, seed]), kind, 64)[1])  # the same scene
            top = drawn[-1]
            where = np.asarray(fill_polygons(top.polygons, 64)) > 0
            pixels = np.asarray(img)[where]
            assert (pixels == pixels[0]).all() and where.sum() == top.area
            assert (mask[where] == top.label + 1).all() and mask.max() <= len(SPECS[kind].classes)
            colours.append(tuple(pixels[0]))
    assert len(set(colours)) == len(colours)


def test_shapes_is_the_existing_generator():
    assert synthetic_segmentation_kind("shapes", **TINY) == synthetic_segmentation(**TINY)
    assert synthetic_segmentation_kind("shapes", num_classes=2, max_objects=2, **TINY) == \
        synthetic_segmentation(num_classes=2, max_objects=2, **TINY)
    assert synthetic_detection_kind("shapes", **TINY) == synthetic_detection(**TINY)
    assert synthetic_detection_kind("shapes", visible_masks=True, **TINY) == synthetic_detection(visible_masks=True,
                                                                                                 **TINY)


def test_kinds_are_cached_and_keyed():
    root = synthetic_segmentation_kind("glyphs", **TINY)
    stamp = (root / "train" / "images" / "00000.png").stat().st_mtime_ns
    assert synthetic_segmentation_kind("glyphs", **TINY) == root
    assert (root / "train" / "images" / "00000.png").stat().st_mtime_ns == stamp
    assert synthetic_segmentation_kind("glyphs", **{**TINY, "seed": 1}) != root
    assert synthetic_segmentation_kind("small", **TINY) != root


def test_unknown_kind_and_too_small_images_are_refused():
    with pytest.raises(ValueError, match="known: shapes, thin, imbalance, similar, small, glyphs"):
        synthetic_segmentation_kind("stripes")
    with pytest.raises(ValueError, match="data.synthetic.kind='stripes'"):
        synthetic_detection_kind("stripes")
    with pytest.raises(ValueError, match="image_size must be at least 32 for kind=thin"):
        synthetic_segmentation_kind("thin", image_size=16)


@pytest.mark.parametrize("overrides", [["task=segmentation", "data.synthetic.kind=thin"],
                                       ["task=detection", "data.synthetic.kind=glyphs"]])
def test_kind_picked_on_the_command_line(tmp_path: Path, overrides):
    cfg = compose_config(overrides, output_dir=tmp_path)
    assert cfg.data.synthetic.kind == overrides[1].split("=")[1]
    module = instantiate(cfg.data)
    synthetic = module.synthetic if isinstance(module, MaskDataModule) else module.source.synthetic
    assert synthetic["kind"] == cfg.data.synthetic.kind


def test_default_configs_stay_on_shapes(tmp_path: Path):
    for task in ("segmentation", "detection", "instance_segmentation", "multitask"):
        assert compose_config([f"task={task}"], output_dir=tmp_path).data.synthetic.kind == "shapes"
