"""train.py task=detection end to end, as a subprocess, on a tiny synthetic COCO set."""

from __future__ import annotations

import pytest
import torch
from conftest import CPU_DDP, assert_ok, run_train
from test_train import printed_checkpoint
from wandb_log import read_run

TINY = [
    "task=detection", "callbacks=minimal",
    "data.synthetic.num_classes=2", "data.synthetic.train_images=8", "data.synthetic.val_images=4",
    "data.synthetic.test_images=4", "data.synthetic.image_size=64", "data.num_workers=0", "data.batch_size=2",
    "task.model.min_size=[64]", "task.model.max_size=64", "neck.out_channels=32", "task.model.representation_size=64",
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
]


@pytest.mark.parametrize("backbone,logger", [("resnet18", "csv"), ("resnext50_32x4d", "wandb")])
def test_train_detection_end_to_end(tmp_path, backbone, logger):  # a basic-block and a grouped-bottleneck backbone
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": str(tmp_path / ".netrc")}
    proc = run_train(*TINY, f"backbone={backbone}", f"logger={logger}", cwd=tmp_path, env=env)
    assert_ok(proc)
    for key in ("test/AP", "test/AP50", "test/AP75", "test/APs", "test/APm", "test/APl", "test/AR100"):
        assert key in proc.stdout, key
    ckpt = printed_checkpoint(proc.stdout)
    run_dir = ckpt.parent.parent
    assert ckpt.name.startswith("best-") and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "val_predictions" / "epoch000.png").is_file()  # drawn predictions and ground truth
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = state["hyper_parameters"]
    assert hp["class_names"] == ["circle", "triangle"] and hp["category_ids"] == [1, 2]
    assert hp["config"]["task"]["name"] == "detection" and hp["config"]["backbone"]["name"] == backbone
    assert hp["config"]["backbone"]["norm"] == "frozen_bn"
    assert any(k.startswith("model.heads.detection.roi_heads.box_predictor") for k in state["state_dict"])
    if logger == "csv":
        metrics = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
        assert "val/AP" in metrics and "train/loss_classifier" in metrics
    else:  # the drawn predictions reach W&B with the metrics
        (offline,) = (run_dir / "wandb").glob("offline-run-*")
        _, history = read_run(offline)
        logged = set().union(*history)
        assert {"val/AP", "val/AP50", "test/AR100", "train/loss_classifier"} <= logged
        assert "val/predictions._type" in logged  # W&B keeps an image list as nested keys + the files below
        assert list((offline / "files" / "media" / "images").glob("val/predictions_*.png"))


def test_train_instance_segmentation_end_to_end(tmp_path):
    """task=instance_segmentation: Mask R-CNN on the synthetic modal masks, box and mask metrics, drawn masks."""
    tiny = [o for o in TINY if o != "task=detection"]
    proc = run_train("task=instance_segmentation", *tiny, "task.model.mask_channels=16", "logger=csv", cwd=tmp_path)
    assert_ok(proc)
    for key in ("test/AP", "test/AR100", "test/segm/AP", "test/segm/AP50", "test/segm/APs", "test/segm/AR100"):
        assert key in proc.stdout, key  # in the results table
    ckpt = printed_checkpoint(proc.stdout)
    run_dir = ckpt.parent.parent
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/segm/AP", "val/AP", "train/loss_mask"} <= set(header)
    assert "val/segm/AP" in (run_dir / "train.log").read_text()  # the epoch line names the mask metric
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert any(k.startswith("model.heads.detection.roi_heads.mask_predictor") for k in state["state_dict"])
    assert state["hyper_parameters"]["config"]["task"]["monitor"] == "val/segm/AP"
    assert (run_dir / "val_predictions" / "epoch000.png").is_file()


def test_bad_coco_json_names_the_file(tmp_path):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances_train.json").write_text("{not json")
    proc = run_train("task=detection", "data=coco", f"data.root={tmp_path}/coco", "logger=csv", cwd=tmp_path)
    assert proc.returncode != 0
    assert "instances_train.json" in proc.stderr


@pytest.mark.slow
def test_detection_ddp_two_cpu_processes(tmp_path):
    """2 gloo processes; 5 test images over 2 ranks makes the sampler repeat one, which the metric counts once."""
    proc = run_train(*TINY, *CPU_DDP, "logger=csv", "data.synthetic.test_images=5", cwd=tmp_path)
    assert_ok(proc)
    assert "test/AP" in proc.stdout
    (run_dir,) = (tmp_path / "outputs" / "detection" / "resnet18").iterdir()
    assert len(list(tmp_path.rglob("metrics.csv"))) == 1  # rank 0 logs
    assert [p.name for p in (run_dir / "val_predictions").iterdir()] == ["epoch000.png"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_anchors_far_from_the_boxes_are_said_at_start_with_the_fix(tmp_path):
    """The `small` kind at 64 px: boxes of a few px against torchvision's smallest anchor of 32 px."""
    tiny = [o for o in TINY if not o.startswith(("trainer.", "data.synthetic.num_classes"))]
    proc = run_train(*tiny, "data.synthetic.kind=small", "+trainer.fast_dev_run=true", "logger=csv", cwd=tmp_path)
    assert_ok(proc)
    said = proc.stdout + proc.stderr
    assert "below the smallest anchor (32 px)" in said and "task.model.anchor_sizes=[[4],[8],[16],[32],[64]]" in said


def test_anchor_check_scales_the_anchors_to_the_median_box():
    import numpy as np

    from data.coco import CocoImage
    from data.errors import Problems
    from data.scale import check_anchor_sizes, detector_box_sides

    def image(side: float, width: int = 128, height: int = 96, crowd: int = 0) -> CocoImage:
        return CocoImage(0, None, width, height, np.array([[0, 0, side, side]], np.float32), np.array([1]),
                         np.array([crowd]), np.array([side * side], np.float32))

    # the short side 96 -> 144 (x1.5, long side 192 <= 200); the crowd box and the image without boxes do not count
    empty = CocoImage(1, None, 64, 64, np.zeros((0, 4), np.float32), *(np.zeros(0),) * 3)
    sides = detector_box_sides([image(6), image(8), image(40, crowd=1), empty], min_size=144, max_size=200)
    assert sides.tolist() == [9.0, 12.0]
    fpn = [[32], [64], [128], [256], [512]]
    found = Problems(strict=False)
    check_anchor_sizes(fpn, sides, found)  # median 10.5 px: 3x below 32
    (problem,) = found.found
    assert problem.kind == "anchor size" and "task.model.anchor_sizes=[[8],[16],[32],[64],[128]]" in problem.message
    for median in (16.0, 1024.0):  # within FAR (2x) of the smallest and of the largest anchor: nothing said
        quiet = Problems(strict=False)
        check_anchor_sizes(fpn, np.array([median]), quiet)
        assert quiet.found == []
    big = Problems(strict=False)
    check_anchor_sizes([[32, 64, 128, 256, 512]], np.array([3000.0]), big)  # one level, five sizes: all scale up
    assert "task.model.anchor_sizes=[[256,512,1024,2048,4096]]" in big.found[0].message
    nothing = Problems(strict=False)
    check_anchor_sizes(fpn, np.zeros(0), nothing)
    assert nothing.found == []
