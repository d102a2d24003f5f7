"""Fine-tuning end to end: train.py init_from= another run's checkpoint, on a dataset with other classes; weights
of another backbone refused unless the user opts in."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import TINY_SYNTHETIC, assert_ok, make_imagefolder, run_train
from test_predict import trained
from test_train import printed_checkpoint

QUICK = ["experiment=smoke", *TINY_SYNTHETIC]


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory):
    return trained("classification", tmp_path_factory.getbasetemp() / "trained")  # 3 synthetic shape classes


def test_finetune_from_another_dataset_with_more_classes(source_ckpt, tmp_path):
    data = make_imagefolder(tmp_path / "pets", classes=("ant", "bee", "cat", "dog", "eel"), per_class=2)
    proc = run_train("experiment=smoke", "data=imagefolder", f"data.root={data}", "data.image_size=32",
                     "data.num_workers=0", f"init_from={source_ckpt}", "task.module.backbone_lr_mult=0.1",
                     "callbacks=[minimal,gradual_unfreeze]", "callbacks.gradual_unfreeze.unfreeze_at_epoch=0",
                     cwd=tmp_path)
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    assert "head tensors of another shape" in log and "fc.weight [3, 512] -> [5, 512]" in log
    source = torch.load(source_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    result = torch.load(printed_checkpoint(proc.stdout), map_location="cpu", weights_only=True)
    assert result["hyper_parameters"]["class_names"] == ["ant", "bee", "cat", "dog", "eel"]
    assert result["state_dict"]["model.heads.classification.fc.weight"].shape == (5, 512)
    # the backbone started from the source run: its first conv moved only a little from the source weights
    a, b = source["model.body.conv1.weight"], result["state_dict"]["model.body.conv1.weight"]
    assert (a - b).norm() < 0.5 * a.norm()


def test_init_from_another_backbone_is_refused_unless_partial(source_ckpt, tmp_path):
    """A resnet18 run into resnet50 would leave most of the backbone random: refused, naming the fix."""
    proc = run_train(*QUICK, "backbone=resnet50", f"init_from={source_ckpt}", cwd=tmp_path)
    assert proc.returncode != 0
    assert f"init_from={source_ckpt} would leave 73% of the backbone" in proc.stderr
    assert "trained with backbone=resnet18 (its stored config): pass backbone=resnet18" in proc.stderr
    assert "or init_from_partial=true" in proc.stderr
    proc = run_train(*QUICK, "backbone=resnet50", f"init_from={source_ckpt}", "++init_from_partial=true",
                     cwd=tmp_path)
    assert_ok(proc)
    assert "165 missing" in proc.stdout + proc.stderr  # reported, not refused


def test_backbone_weights_of_another_architecture_are_refused_unless_partial(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    proc = run_train(*QUICK, f"backbone.weights={path}", cwd=tmp_path)  # the default backbone: resnet18
    assert proc.returncode != 0
    assert f"{path} would leave 44% of the backbone resnet18" in proc.stderr
    assert "These weights look like resnet50's (they fill 100% of it): pass backbone=resnet50" in proc.stderr
    assert "or backbone.weights_partial=true" in proc.stderr
    proc = run_train(*QUICK, f"backbone.weights={path}", "backbone.weights_partial=true", cwd=tmp_path)
    assert_ok(proc)
    assert "77 loaded, 0 missing" in proc.stdout + proc.stderr
