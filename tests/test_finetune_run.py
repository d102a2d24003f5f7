"""Fine-tuning end to end: train.py init_from= another run's checkpoint, on a dataset with other classes."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_ok, make_imagefolder, run_train
from test_predict import trained
from test_train import printed_checkpoint


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory):
    return trained("classification", tmp_path_factory.getbasetemp() / "trained")  # 3 synthetic shape classes


def test_finetune_from_another_dataset_with_more_classes(source_ckpt, tmp_path):
    data = make_imagefolder(tmp_path / "pets", classes=("ant", "bee", "cat", "dog", "eel"), per_class=2)
    proc = run_train("experiment=smoke", "data=imagefolder", f"data.root={data}", "data.image_size=32",
                     "data.num_workers=0", f"init_from={source_ckpt}", "backbone.lr_mult=0.1",
                     "callbacks=[minimal,gradual_unfreeze]", "callbacks.gradual_unfreeze.unfreeze_at_epoch=0",
                     cwd=tmp_path)
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    assert "head tensors of another shape" in log and "fc.weight [3, 512] -> [5, 512]" in log
    source = torch.load(source_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    result = torch.load(printed_checkpoint(proc.stdout), map_location="cpu", weights_only=True)
    assert result["hyper_parameters"]["class_names"] == ["ant", "bee", "cat", "dog", "eel"]
    assert result["state_dict"]["model.fc.weight"].shape == (5, 512)
    # the backbone started from the source run: its first conv moved only a little from the source weights
    a, b = source["model.body.conv1.weight"], result["state_dict"]["model.body.conv1.weight"]
    assert (a - b).norm() < 0.5 * a.norm()
