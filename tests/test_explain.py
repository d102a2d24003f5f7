"""Grad-CAM: the map's shape and range, that it depends on the class explained, and predict.py explain=gradcam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_predict import run_predict, trained, write_inputs

from backbones import build_body
from tasks.classification.model import ClassificationModel
from tasks.explain import default_level, grad_cam
from tasks.segmentation.model import SegmentationModel


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return lambda task: trained(task, tmp_path_factory.getbasetemp() / "trained")


@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_the_map_has_the_input_size_and_changes_with_the_class(kind):
    torch.manual_seed(0)
    body = build_body({"name": "resnet18", "norm": "frozen_bn", "freeze_at": 2})  # frozen stages: still a map
    model = (ClassificationModel(body, 3) if kind == "classification" else SegmentationModel(body, 3)).eval()
    images = torch.rand(2, 3, 64, 96)
    maps = [grad_cam(model, images, [k, k]) for k in range(3)]
    for cam in maps:
        assert cam.shape == (2, 64, 96) and float(cam.min()) >= 0 and float(cam.max()) <= 1
        assert not cam.requires_grad
    assert float((maps[0] - maps[1]).abs().max()) > 0.05  # another class, another map
    assert default_level(model, kind) == "c5"
    finer = grad_cam(model, images, [0, 1], level="c4")
    assert finer.shape == (2, 64, 96)
    with pytest.raises(ValueError, match="explain level 'p9' is not among the body's levels"):
        grad_cam(model, images, [0, 0], level="p9")


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_predict_writes_explanations(task, checkpoint, tmp_path):
    images = write_inputs(tmp_path / "in", {"a.png": (40, 30), "b.png": (32, 32)})
    proc = run_predict(f"ckpt={checkpoint(task)}", f"input={images}", f"output={tmp_path / 'out'}",
                       "explain=gradcam", "num_workers=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("a.png", "b.png"):
        picture = np.asarray(Image.open(tmp_path / "out" / "explanations" / name))
        assert picture.ndim == 3 and max(picture.shape[:2]) == 256  # small inputs enlarged, as drawn predictions
    assert f"wrote {tmp_path / 'out' / 'explanations'}" in proc.stdout.replace("\n", "")


def test_explain_arguments_are_checked(checkpoint, tmp_path):
    images = write_inputs(tmp_path / "in", {"a.png": (40, 30)})
    proc = run_predict(f"ckpt={checkpoint('classification')}", f"input={images}", "explain=gradcam",
                       "explain_class=unicorn", cwd=tmp_path)
    assert proc.returncode == 2 and "explain_class=unicorn is not a class of this model" in proc.stderr
    proc = run_predict(f"ckpt={checkpoint('detection')}", f"input={images}", "explain=gradcam", cwd=tmp_path)
    assert proc.returncode == 2 and "explain=gradcam is built for classification and segmentation" in proc.stderr
    proc = run_predict(f"ckpt={checkpoint('classification')}", f"input={images}", "explain=lime", cwd=tmp_path)
    assert proc.returncode == 2 and "explain=lime: use explain=gradcam" in proc.stderr
