"""Grad-CAM: the map's shape and range, that it depends on the class (or detection) explained, and predict.py
explain=gradcam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_predict import run_predict, trained, write_inputs

from backbones import build_body
from tasks.classification.model import ClassificationModel
from tasks.detection.model import DetectionModel
from tasks.explain import default_level, detection_grad_cam, grad_cam
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


@pytest.mark.parametrize("neck", [None, "fpn"])
def test_a_detection_is_explained_on_its_roi_level_in_the_image_pixels(neck):
    torch.manual_seed(0)
    backbone = {"name": "resnet18", "norm": "frozen_bn", "freeze_at": 2, **({} if neck else {"out_levels": ["c5"]})}
    model = DetectionModel(build_body(backbone, {"name": "fpn"} if neck else None), 3, min_size=128,
                           max_size=192).eval()
    model.heads["detection"].roi_heads.score_thresh = 0.0  # random weights: keep every detection
    # spread the random class scores, so the detections carry more than one label
    torch.nn.init.normal_(model.heads["detection"].roi_heads.box_predictor.cls_score.weight, std=0.1)
    image = torch.rand(3, 90, 120)  # resized by the detector to 128 x 171 and padded to 128 x 192
    best = detection_grad_cam(model, image)
    assert best is not None and best.cam.shape == (90, 120)
    assert float(best.cam.min()) >= 0 and float(best.cam.max()) == pytest.approx(1.0) and not best.cam.requires_grad
    with torch.no_grad():
        detections = model([image])["detection"][0]
    assert best.score == pytest.approx(float(detections["scores"].max()), abs=1e-5)  # the highest-scoring one
    assert torch.allclose(best.box, detections["boxes"][detections["scores"].argmax()], atol=1e-3)
    other = next(k for k in (1, 2, 3) if k != best.label and (detections["labels"] == k).any())
    chosen = detection_grad_cam(model, image, class_index=other)
    assert chosen.label == other and float((chosen.cam - best.cam).abs().max()) > 0.05  # another box, another map
    if neck:  # the FPN level mapper's choice for the box in the resized image (k0 = 4 at 224 px)
        scale = 128 / 90
        side = float(((best.box[2] - best.box[0]) * (best.box[3] - best.box[1])).sqrt()) * scale
        expected = min(5, max(2, int(4 + np.floor(np.log2(side / 224) + 1e-6))))
        assert best.level == f"p{expected}"
        assert detection_grad_cam(model, image, level="p4").level == "p4"
    else:
        assert best.level == "c5"
    assert detection_grad_cam(model, torch.zeros(3, 64, 64), class_index=4) is None  # no such detection
    with pytest.raises(ValueError, match="explain level 'p9' is not among the body's levels"):
        detection_grad_cam(model, image, level="p9")


@pytest.mark.parametrize("task", ["classification", "segmentation", "detection"])
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
    proc = run_predict(f"ckpt={checkpoint('classification')}", f"input={images}", "explain=lime", cwd=tmp_path)
    assert proc.returncode == 2 and "explain=lime: use explain=gradcam" in proc.stderr
