"""Faster R-CNN over Cerberus bodies: shapes from output_shape(), torchvision compatibility, training step."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from backbones import build_body
from tasks.detection.model import DetectionModel, load_torchvision_detector


def detector(name="resnet18", neck=True, num_classes=3, **kw):
    body = build_body({"name": name, "norm": "frozen_bn", "freeze_at": 2}, {"name": "fpn", "out_channels": 64}
                      if neck else {"name": "none"})
    return DetectionModel(body, num_classes, min_size=96, max_size=128, **kw)


def against_torchvision(detector_cls: type, roi_align: str, path) -> tuple:
    """torchvision's `detector_cls` (FasterRCNN / MaskRCNN) on ResNet-50 + FPN with 4 classes, built exactly as its
    `*_resnet50_fpn(weights=COCO_V1)` builds itself (FrozenBatchNorm, three trainable stages), with random non-trivial
    BN statistics and biases (so a wrong mapping cannot pass by accident), saved to `path`; a Cerberus
    `DetectionModel` (masks for MaskRCNN) loads the file key for key. Returns (ours, images, torchvision's eval
    outputs, ours) on two random images."""
    torch.manual_seed(0)
    settings = dict(min_size=128, max_size=160, box_score_thresh=0.0)
    resnet = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    ref = detector_cls(_resnet_fpn_extractor(resnet, 3), num_classes=5, **settings)
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.2, 0.2)
    torch.save(ref.state_dict(), path)

    body = build_body({"name": "resnet50", "norm": "frozen_bn"}, {"name": "fpn"})
    ours = DetectionModel(body, num_classes=4, roi_align=roi_align, masks=detector_cls is not FasterRCNN, **settings)
    result = load_torchvision_detector(ours, torch.load(path, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys

    torch.manual_seed(1)  # the images do not depend on how much randomness building the models used
    images = [torch.rand(3, 128, 150), torch.rand(3, 140, 128)]
    ref.eval(), ours.eval()
    with torch.no_grad():
        return ours, images, ref(images), ours(images)["detection"]


def test_levels_and_anchors_come_from_output_shape():
    m = detector()
    gen = m.head.rpn.anchor_generator
    assert gen.sizes == ((32,), (64,), (128,), (256,), (512,))  # 8 x stride on p2..p6
    assert m.head.roi_heads.box_roi_pool.featmap_names == ["p2", "p3", "p4", "p5"]
    assert m.body.out_channels == 64


def test_single_level_backbone_without_neck():
    body = build_body({"name": "resnet18", "out_levels": ["c4"]}, {"name": "none"})
    m = DetectionModel(body, 2, min_size=64, max_size=64)
    # one level gets all five sizes (torchvision's single-feature-map example), not 8 x stride alone
    assert m.head.rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),)
    m.eval()
    with torch.no_grad():
        out = m([torch.rand(3, 64, 64)])["detection"]
    assert set(out[0]) == {"boxes", "scores", "labels"}


@pytest.mark.parametrize("masks, name", [(False, "Faster R-CNN"), (True, "Mask R-CNN")])
def test_mixed_widths_are_explained(masks, name):
    with pytest.raises(ValueError, match=f"^{name} needs feature maps of one width.*use neck=fpn"):
        DetectionModel(build_body({"name": "resnet18"}, {"name": "none"}), 2, masks=masks)


def test_training_step_returns_losses_and_eval_returns_boxes():
    torch.manual_seed(0)
    m = detector(rpn_batch_size_per_image=32, box_batch_size_per_image=32)
    images = [torch.rand(3, 96, 112), torch.rand(3, 100, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    m.train()
    losses = m(images, targets)["detection"]
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert m.head.roi_heads.box_predictor.cls_score.weight.grad is not None
    assert m.body.body.conv1.weight.grad is None  # frozen stem (freeze_at=2)
    m.eval()
    with torch.no_grad():
        out = m(images)["detection"]
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    assert (out[0]["labels"] >= 1).all() and (out[0]["labels"] <= 3).all()


@pytest.mark.parametrize("roi_align", ["torchvision", "sparse"])
def test_torchvision_fasterrcnn_state_dict_gives_same_detections(tmp_path, roi_align):
    """A users' COCO-trained torchvision checkpoint must load and behave identically (random weights here).
    With torchvision's RoIAlign kernel the detections match to float32 tolerance; with the default sparse one
    (another summation order) boxes match to 1e-3 px, scores to 1e-5, labels exactly."""
    _, images, expected, got = against_torchvision(FasterRCNN, roi_align, tmp_path / "fasterrcnn_resnet50_fpn.pth")
    exact = roi_align == "torchvision"
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 0
        torch.testing.assert_close(g["boxes"], e["boxes"], **({} if exact else {"rtol": 1e-5, "atol": 1e-3}))  # px
        torch.testing.assert_close(g["scores"], e["scores"], **({} if exact else {"rtol": 1e-5, "atol": 1e-5}))
        assert torch.equal(g["labels"], e["labels"])


@pytest.mark.parametrize("roi_align", ["sparse", "torchvision"])
def test_channels_last_gives_the_same_losses_and_detections(roi_align):
    """task.module.channels_last only changes the memory layout: same losses and detections."""
    torch.manual_seed(0)
    nchw = detector(roi_align=roi_align, rpn_batch_size_per_image=32, box_batch_size_per_image=32)
    nhwc = detector(roi_align=roi_align, rpn_batch_size_per_image=32, box_batch_size_per_image=32)
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    assert nhwc.body.body.layer2[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = [torch.rand(3, 96, 112), torch.rand(3, 100, 96)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [30.0, 5.0, 90.0, 40.0]]),
                "labels": torch.tensor([1, 2])}] * 2
    results = []
    for m in (nchw, nhwc):
        torch.manual_seed(1)  # the same RPN / RoI sampling
        losses = m.train()(images, targets)["detection"]
        with torch.no_grad():
            results.append((losses, m.eval()(images)["detection"]))
    (loss_a, out_a), (loss_b, out_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-4, atol=1e-5)
    for a, b in zip(out_a, out_b):
        torch.testing.assert_close(b["boxes"], a["boxes"], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(b["scores"], a["scores"], rtol=1e-4, atol=1e-5)


def test_channels_last_body_gradients_match():
    """The same layout check for gradients, on the body with a fixed loss (the whole detector's sampling of
    proposals can flip on float rounding, which would hide the comparison)."""
    torch.manual_seed(0)
    nchw = detector().body
    nhwc = detector().body
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 96, 96)
    weights = {k: torch.randn_like(v) for k, v in nchw(x).items()}
    for m in (nchw, nhwc):
        sum((f * weights[k]).sum() for k, f in m(x).items()).backward()
    for (name, a), b in zip(nchw.named_parameters(), nhwc.parameters()):
        if a.grad is not None:
            # float32 sums in another order: differences ~1e-6 of the gradient's scale
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5 * a.grad.abs().max().item(), msg=name)


@pytest.mark.parametrize("roi_align", ["torchvision", "sparse"])
def test_torchvision_maskrcnn_state_dict_gives_same_boxes_and_masks(tmp_path, roi_align):
    """Mask R-CNN is the detector with its mask branch (`masks=True`): a torchvision `maskrcnn_resnet50_fpn` state
    dict (random weights, saved to a file) loads key for key and gives the same boxes and masks."""
    from torchvision.models.detection import MaskRCNN

    ours, images, expected, got = against_torchvision(MaskRCNN, roi_align, tmp_path / "maskrcnn_resnet50_fpn.pth")
    exact = roi_align == "torchvision"
    for e, g, image in zip(expected, got, images):
        assert len(e["boxes"]) > 0 and g["masks"].shape == (len(g["boxes"]), 1, *image.shape[-2:])
        torch.testing.assert_close(g["boxes"], e["boxes"], **({} if exact else {"rtol": 1e-5, "atol": 1e-3}))
        assert torch.equal(g["labels"], e["labels"])
        # sparse: float32 sums in another order through RoIAlign, 4 convs, a deconv and the paste; a few of ~2M
        # pixels differ by ~1.5e-4 in probability
        torch.testing.assert_close(g["masks"], e["masks"], **({} if exact else {"rtol": 1e-3, "atol": 5e-4}))
    # training: the mask loss joins the detector's
    ours.train()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2]),
                "masks": torch.zeros(1, 128, 150, dtype=torch.uint8).index_fill_(1, torch.arange(10, 70), 1)}]
    losses = ours(images[:1], targets)["detection"]
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())


def test_instance_segmentation_preset_takes_torchvision_maskrcnn_weights(tmp_path):
    """`experiment=instance_segmentation_torchvision` builds the model a `maskrcnn_resnet50_fpn` state dict (random
    weights, saved to a file) loads into key for key, through the same config composition and builder as train.py."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from backbones.hydra_configs import compose_config
    from tasks.build import build_model

    path = tmp_path / "maskrcnn_resnet50_fpn.pth"
    torch.save(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict(), path)
    cfg = compose_config(["experiment=instance_segmentation_torchvision"], output_dir=tmp_path)
    model, _ = build_model(cfg, num_classes=90)  # COCO's 90 category slots besides background
    result = load_torchvision_detector(model, torch.load(path, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys


def test_random_init_mask_loss_starts_at_log_2():
    """The mask logits start near 0 (detectron2's init), so a random-init Mask R-CNN's first mask loss is log 2
    even on a random-init body's large features; torchvision's kaiming init starts far above it there."""
    torch.manual_seed(0)
    # an uncalibrated random-init frozen-BN ResNet-50: features far from unit scale (c5 std about 20)
    model = detector("resnet50", masks=True, mask_channels=32).train()
    images = [torch.rand(3, 96, 112), torch.rand(3, 100, 96)]
    targets = []
    for image, label in zip(images, (1, 2)):
        mask = torch.zeros(1, *image.shape[-2:], dtype=torch.uint8)
        mask[:, 20:70, 10:60] = 1
        targets.append({"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([label]),
                        "masks": mask})
    torch.manual_seed(1)  # the same proposal sampling for both inits
    ours = float(model(images, targets)["detection"]["loss_mask"])
    logits = model.head.roi_heads.mask_predictor.mask_fcn_logits
    torch.nn.init.kaiming_normal_(logits.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    torch.manual_seed(1)
    theirs = float(model(images, targets)["detection"]["loss_mask"])
    assert abs(ours - math.log(2)) < 0.05 and theirs > 2, (ours, theirs)
