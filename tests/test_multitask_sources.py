"""Partial labels from several sources in one joint run: a mask folder, an ImageFolder and a boxes-only COCO json
beside the main COCO json, each labelling only some heads, classes matched to the json's by name (or id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_ok, run_train
from PIL import Image
from test_multitask_data import K, annotations, coco_dataset, write_coco
from test_multitask_train import TINY, _last, _rows

from data.errors import DataError
from data.multitask import HEADS, MultiTaskCocoDataModule
from data.multitask_sources import ExtraSource
from tasks.config_check import ConfigError, check_config

# the main json's labels: cat 1, dog 2, fox 3 (sorted category ids 3, 7, 12)


def write_mask_folder(root: Path, classes: list[str], size: tuple[int, int] = (40, 32), n: int = 3) -> Path:
    """root/train/images/<i>.png (random pixels) + masks/<i>.png: pixel value v in the left half of row block v
    for v = 1..len(classes)-1, 255 (ignore) in the last column, background elsewhere."""
    rng = np.random.default_rng(1)
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    w, h = size
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "train" / "images" / f"{i}.png")
        mask = np.zeros((h, w), np.uint8)
        for v in range(1, len(classes) - i % 2):  # odd images leave the last class out
            mask[4 * v: 4 * v + 4, : w // 2] = v
        mask[:, -1] = 255
        Image.fromarray(mask).save(root / "train" / "masks" / f"{i}.png")
    return root


def write_image_folder(root: Path, per_class: dict[str, int]) -> Path:
    rng = np.random.default_rng(2)
    for name, n in per_class.items():
        (root / "train" / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (30, 36, 3), dtype=np.uint8)).save(root / "train" / name / f"{i}.png")
    return root


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    return coco_dataset(tmp_path / "coco")


def module_with(coco: Path, extra: list[dict], **kw) -> MultiTaskCocoDataModule:
    module = MultiTaskCocoDataModule(str(coco), batch_size=2, num_workers=0, extra_train=extra, **kw)
    module.prepare_data()
    module.setup("fit")
    return module


def test_mask_folder_classes_are_matched_by_name(coco, tmp_path):
    # the folder's pixel values 1, 2 are dog, fox here; the json's labels for them are 2, 3
    folder = write_mask_folder(tmp_path / "masks", ["bg", "dog", "fox"])
    module = module_with(coco, [{"kind": "masks", "root": str(folder)}])
    train = module.dataset("train", train=False)
    assert len(train) == 3 + 3 and len(module.dataset("val", train=False)) == 3  # evaluation: the json's alone
    for i in range(3):
        image, target = train[3 + i]
        mask = np.array(Image.open(folder / "train" / "masks" / f"{i}.png")).astype(np.int64)
        expected = np.select([mask == 1, mask == 2, mask == 255], [2, 3, 255], 0)
        assert torch.equal(target["semantic"], torch.from_numpy(expected))
        present = [2, 3] if i % 2 == 0 else [2]
        assert target["classes"].tolist() == [float(label in present) for label in range(1, K + 1)]
        assert target["has"] == {"detection": False, "instance_segmentation": False, "segmentation": True,
                                 "classification": True}
        assert image.shape == (3, 32, 40) and target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 32, 40)
    # the main json's items are unchanged and labelled for every head
    assert train[0][1]["has"] == dict.fromkeys(HEADS, True)


def test_mask_folder_flip_keeps_image_and_mask_together(coco, tmp_path):
    folder = write_mask_folder(tmp_path / "masks", ["background", "cat"])
    module = module_with(coco, [{"kind": "masks", "root": str(folder)}],
                         augment={"hflip": 1.0, "photometric": 0.0})
    image, target = module.dataset("train", train=True)[3]
    original = np.asarray(Image.open(folder / "train" / "images" / "0.png"), dtype=np.float32) / 255
    mask = np.array(Image.open(folder / "train" / "masks" / "0.png")).astype(np.int64)
    torch.testing.assert_close(image, torch.from_numpy(original[:, ::-1].copy()).permute(2, 0, 1))
    assert torch.equal(target["semantic"], torch.from_numpy(mask[:, ::-1].copy()))


def test_image_folder_and_boxes_only_json(coco, tmp_path):
    photos = write_image_folder(tmp_path / "photos", {"fox": 2, "cat": 1})
    boxes = tmp_path / "boxes"
    anns = [{k: v for k, v in a.items() if k != "segmentation"} for a in annotations()]
    json_path = write_coco(boxes, "train", anns)
    module = module_with(coco, [{"kind": "imagefolder", "root": str(photos), "repeat": 2},
                                {"kind": "coco", "images": str(boxes / "train"), "annotations": str(json_path)}])
    train = module.dataset("train", train=True)
    assert len(train) == 3 + 2 * 3 + 3
    folder_items = [train[i] for i in range(3, 9)]
    # folders sorted: cat (label 1), fox (label 3); one-hot in the json's order; the repeat shows the same images
    assert [t["classes"].tolist() for _, t in folder_items[:3]] == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert [t["classes"].tolist() for _, t in folder_items[3:]] == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    for image, target in folder_items:
        assert image.shape == (3, 30, 36) and "semantic" not in target
        assert target["has"] == {"detection": False, "instance_segmentation": False, "segmentation": False,
                                 "classification": True}
    for i in range(9, 12):
        _, target = train[i]
        assert target["has"] == {"detection": True, "instance_segmentation": False, "segmentation": False,
                                 "classification": True}
        assert "masks" not in target and "semantic" not in target
    images, targets = next(iter(module.train_dataloader()))  # one collated batch of mixed items
    assert len(images) == len(targets) == 2


def test_heads_narrow_what_a_source_labels(coco, tmp_path):
    folder = write_mask_folder(tmp_path / "masks", ["background", "cat"])
    module = module_with(coco, [{"kind": "masks", "root": str(folder), "heads": ["segmentation"]}])
    target = module.dataset("train", train=False)[3][1]
    assert target["has"]["segmentation"] and not target["has"]["classification"]


def test_bad_sources_name_the_file_or_option_and_the_fix(coco, tmp_path):
    folder = write_mask_folder(tmp_path / "masks", ["background", "wolf", "cat"])
    with pytest.raises(DataError, match=r"classes.txt names class \['wolf'\].*\(cat, dog, fox\)"):
        module_with(coco, [{"kind": "masks", "root": str(folder)}])
    photos = write_image_folder(tmp_path / "photos", {"cats": 1})
    with pytest.raises(DataError, match=r"names class \['cats'\]"):
        module_with(coco, [{"kind": "imagefolder", "root": str(photos)}])
    with pytest.raises(ValueError, match="kind must be one of masks, imagefolder, coco"):
        ExtraSource({"kind": "voc", "root": "x"}, 0)
    with pytest.raises(ValueError, match="can label classification, not detection"):
        ExtraSource({"kind": "imagefolder", "root": "x", "heads": ["detection"]}, 1)
    with pytest.raises(ValueError, match=r"data.extra_train\[0\] \(kind=coco\) needs annotations, images"):
        ExtraSource({"kind": "coco"}, 0)
    with pytest.raises(ValueError, match=r"unknown option \['rot'\]"):
        ExtraSource({"kind": "masks", "rot": "x"}, 0)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"data": {"extra_train": [{"kind": "masks", "root": "x", "repeat": 0}]}})
    with pytest.raises(ConfigError, match="repeat must be a whole number >= 1"):
        check_config(cfg)


def test_joint_run_with_a_mask_folder_and_an_image_folder(tmp_path):
    """task=multitask on the synthetic shapes (circle 1, triangle 2, square 3) with segmentation from the json's
    masks and a mask folder, classification also from an ImageFolder: the run ends with finite losses and
    metrics, and says what each source labels."""
    folder = write_mask_folder(tmp_path / "masks", ["background", "square", "circle"], size=(64, 64), n=4)
    photos = write_image_folder(tmp_path / "photos", {"triangle": 2, "circle": 1})
    extra = f"data.extra_train=[{{kind:masks,root:'{folder}'}},{{kind:imagefolder,root:'{photos}',repeat:2}}]"
    proc = run_train(*TINY, "task.heads=[segmentation,classification]", extra, "hydra.run.dir=run", cwd=tmp_path)
    assert_ok(proc)
    out = proc.stdout + proc.stderr
    assert f"data.extra_train[0]: masks {folder}, 4 images labelling segmentation, classification" in out
    assert f"data.extra_train[1]: imagefolder {photos}, 3 images labelling classification (x2 per epoch)" in out
    assert ("training images per head, of 18 (the json's 8 and data.extra_train's): detection 8, "
            "instance_segmentation 8, segmentation 12, classification 18") in out
    rows = _rows(tmp_path / "run")
    for key in ("train/segmentation/loss", "train/classification/loss", "test/segmentation/mIoU",
                "test/classification/mAP"):
        assert np.isfinite(_last(rows, key)), key
