"""`python -m data.check`: counts, size statistics and every problem of tiny ImageFolder, COCO and mask datasets
written here; exit code 1 on errors. One run is a subprocess, the others call `main(argv)` in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY_SYNTHETIC
from PIL import Image

from data.check import main


def png(path: Path, width: int, height: int, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)
    return path


def corrupt(path: Path) -> Path:
    """A file that has an image's name but not an image's content (the first bytes of a PNG, then garbage)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return path


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def row(report: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{report}")


# ImageFolder ------------------------------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """train: cat 3 images (20x10, 30x12, 40x14), dog 1 (24x16); val: cat 1, dog 1 (no test: tests on val)."""
    root = tmp_path / "folder"
    for i, (w, h) in enumerate([(20, 10), (30, 12), (40, 14)]):
        png(root / "train" / "cat" / f"{i}.png", w, h)
    png(root / "train" / "dog" / "0.png", 24, 16)
    png(root / "val" / "cat" / "0.png", 8, 8)
    png(root / "val" / "dog" / "0.jpg", 8, 8)
    return root


def test_imagefolder_counts_and_sizes(folder, capsys):
    code, out = run(capsys, "data=imagefolder", f"data.root={folder}")
    assert code == 0, out
    assert row(out, "cat")[1:] == ["3", "1"] and row(out, "dog")[1:] == ["1", "1"]
    assert row(out, "train")[1:5] == ["4", "0", "20 / 27 / 40", "10 / 13 / 16"]
    assert row(out, "val")[1:5] == ["2", "0", "8 / 8 / 8", "8 / 8 / 8"]
    assert "no test split: test runs on val" in out
    # the default data.image_size=224 on 10-16 px images is said, as training says it at setup
    assert "data.image_size=224 is 17x the median short side of the train images (13 px, from 4 images): every " \
           "image is upscaled about 17x for training and evaluation; data.image_size=32 trains at the data's own " \
           "size" in out
    assert out.rstrip().endswith("0 errors, 1 warning: training would run, but read the warnings first")


def test_imagefolder_broken_files_all_reported(folder, capsys):
    corrupt(folder / "train" / "cat" / "bad.png")
    data = (folder / "train" / "dog" / "0.png").read_bytes()
    (folder / "train" / "dog" / "cut.png").write_bytes(data[: len(data) // 2])  # truncated
    (folder / "val" / "cat" / "notes.txt").write_text("not an image")
    (folder / "val" / "wolf").mkdir()
    png(folder / "val" / "wolf" / "0.png", 8, 8)
    code, out = run(capsys, "data=imagefolder", f"data.root={folder}")
    assert code == 1
    assert f"cannot read image {folder}/train/cat/bad.png" in out
    assert f"cannot read image {folder}/train/dog/cut.png" in out
    assert "val has class folders ['wolf'] that the train split does not have" in out
    assert f"ignored {folder}/val/cat/notes.txt: not an image" in out
    assert row(out, "cat")[1:] == ["4", "1"]  # listed files, as training would list them
    assert "3 errors, 2 warnings: fix the errors before training" in out  # and the image size warning


def test_synthetic_default_is_generated_and_checked(capsys):
    code, out = run(capsys, *TINY_SYNTHETIC)
    assert code == 0, out
    assert row(out, "train")[1:5] == ["24", "0", "32 / 32 / 32", "32 / 32 / 32"]
    assert all(row(out, name)[1:] == ["8", "4", "4"] for name in ("circle", "square", "triangle"))


# COCO -------------------------------------------------------------------------------------------------------------

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def write_coco(root: Path, split: str, sizes: dict[int, tuple[int, int]], anns: list[dict]) -> None:
    for iid, (w, h) in sizes.items():
        png(root / split / f"{iid}.png", w, h)
    images = [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (w, h) in sizes.items()]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))


def box(aid: int, iid: int, cid: int, bbox: list[float], polygon: bool = True) -> dict:
    x, y, w, h = bbox
    segm = [[x, y, x + w, y, x + w, y + h, x, y + h]] if polygon else None
    return {"id": aid, "image_id": iid, "category_id": cid, "bbox": bbox, "area": w * h, "iscrowd": 0,
            "segmentation": segm}


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """train: image 1 (40x30) a cat and a dog, image 2 (20x20) two cats, image 3 (30x10) nothing; val: one dog."""
    root = tmp_path / "coco"
    write_coco(root, "train", {1: (40, 30), 2: (20, 20), 3: (30, 10)},
               [box(1, 1, 3, [0, 0, 10, 10]), box(2, 1, 7, [10, 10, 20, 10]), box(3, 2, 3, [0, 0, 5, 5]),
                box(4, 2, 3, [5, 5, 5, 5])])
    write_coco(root, "val", {1: (16, 16)}, [box(1, 1, 7, [2, 2, 4, 4])])
    return root


def test_coco_detection_counts_and_sizes(coco, capsys):
    code, out = run(capsys, "task=detection", "data=coco", f"data.root={coco}", "task.model.min_size=[32]")
    assert code == 0, out
    assert row(out, "cat (id 3)")[1:] == ["3", "2", "0", "0"]  # train boxes, train images, val boxes, val images
    assert row(out, "dog (id 7)")[1:] == ["1", "1", "1", "1"]
    assert row(out, "train")[1:5] == ["3", "1", "20 / 30 / 40", "10 / 20 / 30"]
    assert "image id 3" in out and "has no annotations" in out  # a negative example: a note
    assert "0 errors, 0 warnings, 1 note: ready to train" in out


def test_coco_multitask_checks_the_json_as_detection(coco, capsys):
    code, out = run(capsys, "task=multitask", "data=coco", f"data.root={coco}", "task.detection.model.min_size=[32]")
    assert code == 0, out
    assert row(out, "cat (id 3)")[1:] == ["3", "2", "0", "0"]
    assert "0 errors, 0 warnings, 1 note: ready to train" in out


def test_coco_segmentation_counts_pixels(coco, capsys):
    code, out = run(capsys, "task=segmentation", "data=coco", f"data.root={coco}")
    assert code == 0, out
    # columns: train boxes / images / pixels, val boxes / images / pixels; painted polygons cover their boxes
    assert row(out, "dog (id 7)")[1:] == ["1", "1", "200", "1", "1", "16"]
    assert row(out, "cat (id 3)")[1:4] == ["3", "2", "150"]
    assert row(out, "background")[1:4] == ["0", "3", f"{1200 + 400 + 300 - 350:,}"]


def test_coco_explicit_paths(coco, capsys):
    code, out = run(capsys, "task=detection", "data=coco", f"data.train_images={coco}/train",
                    f"data.train_annotations={coco}/annotations/instances_train.json", f"data.val_images={coco}/val",
                    f"data.val_annotations={coco}/annotations/instances_val.json")
    assert code == 0, out
    assert row(out, "cat (id 3)")[1:] == ["3", "2", "0", "0"]


def test_broken_coco_every_problem_reported_by_subprocess(coco):
    corrupt(coco / "train" / "2.png")
    (coco / "train" / "3.png").unlink()
    path = coco / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["annotations"] += [box(5, 1, 3, [30, 20, 20, 20]), box(6, 1, 99, [0, 0, 4, 4]), box(6, 1, 3, [1, 1, 4, 4]),
                            box(7, 1, 7, [3, 3, 0, 5])]
    path.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "data.check", "task=detection", "data=coco", f"data.root={coco}",
                           "task.model.min_size=[32]"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    expected = [
        f"cannot read image {coco}/train/2.png",
        f"image file {coco}/train/3.png (image id 3) does not exist; put the images in",
        "annotation 5 (image id 1): bbox [30, 20, 20, 20] (x, y, w, h) lies outside the 40x30 image; fix the box",
        "annotation 6 (image id 1) has category_id 99, which is not in \"categories\" (ids [3, 7])",
        "annotation id 6 appears twice in \"annotations\"",
        "annotation 7 (image id 1): bbox [3, 3, 0, 5] has zero or negative width/height",
    ]
    for message in expected:
        assert message in out, f"{message!r} not in\n{out}"
    assert "6 errors, 0 warnings: fix the errors before training" in out


# masks ------------------------------------------------------------------------------------------------------------

@pytest.fixture
def masks(tmp_path: Path) -> Path:
    """Classes bg, road, car; train: a (8x4: 8 bg, 16 road, 4 car, 4 ignore), b (6x6: all bg); val: c (4x4 car)."""
    root = tmp_path / "masks"
    root.mkdir()
    (root / "classes.txt").write_text("bg\nroad\ncar\n")
    a = np.zeros((4, 8), np.uint8)
    a[:2] = 1
    a[2, :4] = 2
    a[3, :4] = 255
    for split, stem, mask in (("train", "a", a), ("train", "b", np.zeros((6, 6), np.uint8)),
                              ("val", "c", np.full((4, 4), 2, np.uint8))):
        png(root / split / "images" / f"{stem}.png", mask.shape[1], mask.shape[0])
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / split / "masks" / f"{stem}.png")
    return root


def test_masks_pixel_counts_and_sizes(masks, capsys):
    code, out = run(capsys, "task=segmentation", "data=masks", f"data.root={masks}")
    assert code == 0, out
    # columns: train pixels, train images, val pixels, val images
    assert row(out, "bg")[1:] == ["44", "2", "0", "0"]
    assert row(out, "road")[1:] == ["16", "1", "0", "0"]
    assert row(out, "car")[1:] == ["4", "1", "16", "1"]
    assert row(out, "(ignore 255)")[1:] == ["4", "0", "0", "0"]
    assert row(out, "train")[1:5] == ["2", "1", "6 / 7 / 8", "4 / 5 / 6"]
    assert f"mask {masks}/train/masks/b.png has only background (0) and ignore (255) pixels" in out
    assert "0 errors, 0 warnings, 1 note: ready to train" in out


def test_broken_masks_every_problem_reported(masks, capsys):
    png(masks / "train" / "images" / "nomask.png", 4, 4)
    Image.fromarray(np.full((4, 8), 7, np.uint8)).save(masks / "train" / "masks" / "a.png")  # value 7: no class
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(masks / "val" / "masks" / "c.png")  # image is 4x4
    png(masks / "val" / "images" / "rgb.png", 4, 4)
    png(masks / "val" / "masks" / "rgb.png", 4, 4)  # an RGB mask
    corrupt(masks / "val" / "images" / "bad.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "val" / "masks" / "bad.png")
    code, out = run(capsys, "task=segmentation", "data=masks", f"data.root={masks}", "--limit=5")
    assert code == 1
    expected = [
        f"images without a mask: {masks}/train/images/nomask.png with no file of the same name in {masks}/train/masks",
        f"mask {masks}/train/masks/a.png has pixel values [7] but there are 3 classes (values 0..2) and 255 means "
        "ignore; fix the mask",
        f"mask {masks}/val/masks/c.png is 4x5 but its image {masks}/val/images/c.png is 4x4",
        f"mask {masks}/val/masks/rgb.png is a RGB image (3 channels); a mask must be a single-channel PNG",
        f"cannot read image {masks}/val/images/bad.png",
    ]
    for message in expected:
        assert message in out, f"{message!r} not in\n{out}"
    assert "5 errors," in out


def test_long_lists_are_capped(masks, capsys):
    for i in range(7):
        png(masks / "train" / "images" / f"lone{i}.png", 4, 4)
    code, out = run(capsys, "data=masks", f"data.root={masks}", "--limit", "3")
    assert code == 1 and "ERROR unpaired file (7)" in out and "... and 4 more unpaired file errors" in out
    assert out.count("images without a mask:") == 3


def test_usage(capsys):
    assert main(["--help"]) == 0 and "usage: python -m data.check" in capsys.readouterr().out
    assert main([]) == 2 and "data=coco" in capsys.readouterr().out
    assert main(["--nope"]) == 2 and "unknown option --nope" in capsys.readouterr().out
    assert main(["data=imagefolder", "data.root=/nonexistent/x"]) == 1
    assert "split directory /nonexistent/x/train does not exist" in capsys.readouterr().out
