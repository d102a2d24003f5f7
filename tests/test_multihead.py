"""The multi-head model and task module: single-task runs are its one-head case, with the same numbers as the
single-task models before it, and their checkpoints load."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch

from backbones import build_body
from tasks.classification import ClassificationModel, ClassificationTask
from tasks.detection import DetectionModel, torchvision_state_dict
from tasks.multihead import MultiHeadModel, migrate_keys
from tasks.segmentation import SegmentationModel, SegmentationTask

REFERENCE = Path(__file__).parent / "data" / "single_task_losses.json"


@pytest.mark.parametrize("cell", [k for k in json.loads(REFERENCE.read_text()) if not k.startswith("_")])
def test_single_task_losses_equal_the_single_task_models_before(cell):
    """The first 3 optimizer steps of each task's default config (the registry matrix's cell: same composition,
    data, BatchNorm policy and Lightning loop as train.py) give the losses the single-task models gave at 3a37455,
    before the multi-head model (same seed): the refactor changed no number. Both with one intra-op thread, whose
    float sums do not depend on the machine's core count. They do depend on the CPU's kernels: on an AMD EPYC VM the
    classification cells' first loss differs from the recording machine's by 2e-4 (relative) and AdamW, which turns
    float-level differences in near-zero gradients into full-size steps, widens that to 5-9 % by the third step
    (the detection and segmentation cells still agree to 1e-5). So the first loss, which pins the init, the data
    and the forward, is checked to 1e-3, and the two trained steps only to 15 % (a weaker check than the recorded
    machine allowed, kept so that a training step that goes elsewhere still fails)."""
    from tasks.recipes import PREVIOUS
    from tests.matrix import run_cell

    task, backbone, neck = cell.split("/")
    expected = json.loads(REFERENCE.read_text())[cell]["losses"]
    # defaults changed since (issue 16): segmentation's schedule, scale and colour jitter; the R-CNNs' box head
    # width, their residual branches' gain at random init and their lr. The recorded ones, pinned
    rcnn = ["backbone.scale_residuals=false", "task.model.representation_size=256", "optim.lr=2e-4"]
    extra = {"segmentation": PREVIOUS, "detection": rcnn, "instance_segmentation": rcnn}.get(task, [])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = run_cell(task, backbone, neck, steps=3, extra=extra)
    finally:
        torch.set_num_threads(threads)
    assert got.ok, got.error
    assert got.losses[0] == pytest.approx(expected[0], rel=1e-3)
    assert got.losses[1:] == pytest.approx(expected[1:], rel=0.15)


def test_one_head_models_are_multi_head_models():
    body = lambda neck=None: build_body({"name": "resnet18"}, neck)  # noqa: E731
    cls = ClassificationModel(body(), 3)
    seg = SegmentationModel(body(), 3, decoder_channels=[32, 16, 16, 8, 8])
    det = DetectionModel(body({"name": "fpn", "out_channels": 16}), 2, min_size=64, max_size=64,
                         representation_size=16)
    for model, head in ((cls, "classification"), (seg, "segmentation"), (det, "detection")):
        assert isinstance(model, MultiHeadModel) and list(model.heads) == [head]
        assert model.head.kind == head
        assert {k.split(".")[0] for k in model.state_dict()} == {"body", "heads"}
    assert det.rcnn_name == "detection" and cls.rcnn_name is None


def test_legacy_keys_are_renamed_and_torchvision_names_round_trip():
    state = {"model.fc.weight": 1, "model.body.conv1.weight": 2, "model.detector.backbone.fpn.x": 3,
             "model.detector.rpn.head.conv": 4, "model.detector.roi_heads.box_head.fc6.weight": 5,
             "model.decoder.blocks.0": 6, "model.segmentation_head.0.weight": 7, "other.fc.weight": 8}
    assert migrate_keys(dict(state), "model.") == {
        "model.heads.classification.fc.weight": 1, "model.body.conv1.weight": 2, "model.body.fpn.x": 3,
        "model.heads.detection.rpn.head.conv": 4, "model.heads.detection.roi_heads.box_head.fc6.weight": 5,
        "model.heads.segmentation.decoder.blocks.0": 6, "model.heads.segmentation.segmentation_head.0.weight": 7,
        "other.fc.weight": 8}
    det = DetectionModel(build_body({"name": "resnet18"}, {"name": "fpn", "out_channels": 16}), 2,
                         representation_size=16)
    tv = torchvision_state_dict(det)
    assert "backbone.body.conv1.weight" in tv and "roi_heads.box_predictor.cls_score.weight" in tv
    assert "rpn.head.conv.0.0.weight" in tv
    fresh = DetectionModel(build_body({"name": "resnet18"}, {"name": "fpn", "out_channels": 16}), 2,
                           representation_size=16)
    from tasks.detection import load_torchvision_detector

    assert not load_torchvision_detector(fresh, tv).missing_keys
    for k, v in det.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


def test_a_checkpoint_of_the_single_task_modules_loads(tmp_path):
    """A Lightning state dict written by the single-task modules (model.fc.*, the segmentation loss's class weights
    under criterion.) loads strictly into today's module."""
    opt = partial(torch.optim.SGD, lr=0.1)
    cls = ClassificationTask(ClassificationModel(build_body({"name": "resnet18"}), 3), opt)
    legacy = {k.replace("model.heads.classification.", "model."): v for k, v in cls.state_dict().items()}
    assert "model.fc.weight" in legacy
    again = ClassificationTask(ClassificationModel(build_body({"name": "resnet18"}), 3), opt)
    again.load_state_dict(legacy, strict=True)
    torch.testing.assert_close(again.model.head.fc.weight, cls.model.head.fc.weight)

    seg = SegmentationTask(SegmentationModel(build_body({"name": "resnet18"}), 3, decoder_channels=[32, 16, 16, 8, 8]),
                           opt, loss={"class_weights": [0.2, 1.0, 3.0]})
    legacy = {k.replace("model.heads.segmentation.", "model.").replace("parts.segmentation.criterion.", "criterion."): v
              for k, v in seg.state_dict().items()}
    assert "criterion.class_weights" in legacy and "model.decoder.blocks.0.conv1.0.weight" in legacy
    other = SegmentationTask(SegmentationModel(build_body({"name": "resnet18"}), 3,
                                               decoder_channels=[32, 16, 16, 8, 8]), opt,
                             loss={"class_weights": [1.0, 1.0, 1.0]})
    other.load_state_dict(legacy, strict=True)
    assert other.parts["segmentation"].criterion.class_weights.tolist() == pytest.approx([0.2, 1.0, 3.0])
    assert math.isclose(float(other.model.head.segmentation_head[0].weight.sum()),
                        float(seg.model.head.segmentation_head[0].weight.sum()), rel_tol=1e-6)
