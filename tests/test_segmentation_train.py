"""train.py task=segmentation end to end, as a subprocess, on tiny synthetic and COCO data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CPU_DDP, assert_ok, run_train
from PIL import Image
from test_train import printed_checkpoint
from wandb_log import read_run

TINY = [
    "task=segmentation", "callbacks=minimal", "data.num_workers=0", "data.batch_size=4",
    "data.synthetic.train_images=8", "data.synthetic.val_images=4", "data.synthetic.test_images=4",
    "data.synthetic.image_size=48", "data.image_size=32", "task.model.decoder_channels=[32,16,16,8,8]",
    "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
]


@pytest.mark.parametrize("backbone,neck,logger", [("resnet18", "none", "wandb"), ("resnext50_32x4d", "fpn", "csv")])
def test_train_segmentation_end_to_end(tmp_path, backbone, neck, logger):
    """A basic-block backbone with the U-Net, a grouped-bottleneck one with the semantic-FPN head."""
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": str(tmp_path / ".netrc")}
    extra = ["neck.out_channels=32", "task.model.fpn_channels=16"] if neck == "fpn" else []
    proc = run_train(*TINY, f"backbone={backbone}", f"neck={neck}", f"logger={logger}", *extra, cwd=tmp_path, env=env)
    assert_ok(proc)
    for key in ("test/mIoU", "test/acc", "test/mDice", "Test IoU per class", "background", "circle", "square"):
        assert key in proc.stdout, key
    ckpt = printed_checkpoint(proc.stdout)
    run_dir = ckpt.parent.parent
    assert (run_dir / "val_predictions" / "epoch000.png").is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = state["hyper_parameters"]
    assert hp["class_names"] == ["background", "circle", "triangle", "square"]
    assert hp["config"]["task"]["name"] == "segmentation" and hp["config"]["backbone"]["name"] == backbone
    decoder = "semantic_fpn" if neck == "fpn" else "unet"
    assert any(k.startswith("model.heads.segmentation.decoder.") for k in state["state_dict"])
    assert any(k.startswith("model.body.fpn.") for k in state["state_dict"]) == (decoder == "semantic_fpn")
    if logger == "csv":
        header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
        assert "val/mIoU" in header and "val/IoU/circle" in header and "train/mIoU" in header
    else:
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        _, history = read_run(offline)
        logged = set().union(*history)
        assert {"val/mIoU", "val/acc", "val/mDice", "val/IoU/triangle", "test/mIoU"} <= logged
        assert "val/predictions._type" in logged
        assert list((offline / "files" / "media" / "images").glob("val/predictions_*.png"))


def write_mask_dataset(root, classes=("bg", "blob")):
    """train/val image+mask pairs of varied sizes: a bright square (class 1) on dark noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for i in range(n):
            h, w = int(rng.integers(40, 56)), int(rng.integers(40, 56))
            img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            img[8:24, 10:30] = 220
            mask[8:24, 10:30] = 1
            mask[0, :] = 255
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / split / "images" / f"{i}.jpg")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_train_on_a_mask_folder_of_varied_sizes(tmp_path):
    root = write_mask_dataset(tmp_path / "ds")
    proc = run_train("task=segmentation", "data=masks", f"data.root={root}", "data.image_size=32",
                     "data.batch_size=3", "data.num_workers=0", "callbacks=minimal", "logger=csv",
                     "task.model.decoder_channels=[16,16,8,8,8]", "trainer.max_epochs=1", cwd=tmp_path)
    assert_ok(proc)
    assert "test/mIoU" in proc.stdout and "blob" in proc.stdout


def test_bad_mask_value_names_the_file(tmp_path):
    root = write_mask_dataset(tmp_path / "ds")
    Image.fromarray(np.full((48, 48), 7, np.uint8)).resize((48, 48)).save(root / "val" / "masks" / "0.png")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "val" / "images" / "0.jpg")
    proc = run_train("task=segmentation", "data=masks", f"data.root={root}", "data.num_workers=0",
                     "logger=csv", "trainer.max_epochs=1", cwd=tmp_path)
    assert proc.returncode != 0
    assert "0.png" in proc.stderr and "7" in proc.stderr


def test_train_segmentation_on_coco_polygons(tmp_path):
    """data=coco task=segmentation: instance polygons painted into class masks, end to end."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train", 4), ("val", 2)):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(n):
            Image.fromarray(np.full((40, 48, 3), 30 + 20 * i, np.uint8)).save(root / split / f"{i}.png")
            images.append({"id": i + 1, "file_name": f"{i}.png", "width": 48, "height": 40})
            anns.append({"id": i + 1, "image_id": i + 1, "category_id": 5, "bbox": [4, 4, 20, 20], "area": 400,
                         "iscrowd": 0, "segmentation": [[4, 4, 24, 4, 24, 24, 4, 24]]})
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 5, "name": "tile"}]},
                  open(root / "annotations" / f"instances_{split}.json", "w"))
    proc = run_train("task=segmentation", "data=coco", f"data.root={root}", "data.image_size=32",
                     "data.batch_size=2", "data.num_workers=0", "callbacks=minimal", "logger=csv",
                     "task.model.decoder_channels=[16,16,8,8,8]", "trainer.max_epochs=1", cwd=tmp_path)
    assert_ok(proc)
    ckpt = torch.load(printed_checkpoint(proc.stdout), map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["class_names"] == ["background", "tile"]
    assert ckpt["hyper_parameters"]["category_ids"] == [0, 5]


@pytest.mark.slow
def test_segmentation_ddp_two_cpu_processes(tmp_path):
    proc = run_train(*TINY, *CPU_DDP, "logger=csv", "data.synthetic.test_images=5", cwd=tmp_path)
    assert_ok(proc)
    assert "test/mIoU" in proc.stdout
    assert len(list(tmp_path.rglob("metrics.csv"))) == 1
