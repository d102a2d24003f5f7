"""Segmentation model, loss, metrics and drawings: shapes, smp equivalence, hand-computed scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from torchmetrics import MetricCollection  # noqa: F401  (torchmetrics must import cleanly with smp)

from backbones import build_body
from tasks.segmentation import SegmentationModel
from tasks.segmentation.loss import SegmentationLoss
from tasks.segmentation.metrics import SegmentationMetrics, confusion_scores
from tasks.segmentation.visualize import class_colors, overlay_mask, segmentation_grid


@pytest.mark.parametrize("neck, decoder", [(None, "unet"), ({"name": "fpn", "out_channels": 32}, "semantic_fpn")])
@pytest.mark.parametrize("size", [(64, 64), (70, 45)])  # 70 x 45 is not a multiple of 32: sizes must still match
def test_logits_at_input_resolution(neck, decoder, size):
    model = SegmentationModel(build_body({"name": "resnet18"}, neck), 4, decoder_channels=[64, 32, 16, 16, 8],
                              fpn_channels=32).eval()
    assert model.head.decoder_name == decoder
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))["segmentation"]
    assert out.shape == (2, 4, *size)


def test_unet_on_fpn_levels_and_fpn_head_chosen_explicitly():
    body = build_body({"name": "resnet18"}, {"name": "fpn", "out_channels": 32})
    unet = SegmentationModel(body, 3, decoder="unet", decoder_channels=[32, 16, 16, 8])
    assert unet.head.in_features == ["p2", "p3", "p4", "p5"]
    assert unet(torch.randn(1, 3, 64, 64))["segmentation"].shape == (1, 3, 64, 64)
    fpn = SegmentationModel(build_body({"name": "resnet18"}, None), 3, decoder="semantic_fpn", fpn_channels=16,
                            fpn_features=["c2", "c3", "c4", "c5"])
    assert fpn(torch.randn(1, 3, 64, 64))["segmentation"].shape == (1, 3, 64, 64)


def test_depth_follows_decoder_channels_and_bad_values_are_explained(caplog):
    model = SegmentationModel(build_body({"name": "resnet18"}), 3, decoder_channels=[64, 32, 16])
    assert model.head.in_features == ["c1", "c2", "c3"]
    assert "backbone.out_levels=[c1,c2,c3]" in caplog.text
    assert len(model.head.decoder.blocks) == 3
    with pytest.raises(ValueError, match="decoder_channels has 5 entries .* returns 2 levels"):
        SegmentationModel(build_body({"name": "resnet18", "out_levels": ["c4", "c5"]}), 3)
    with pytest.raises(ValueError, match="unknown segmentation decoder 'deeplab'"):
        SegmentationModel(build_body({"name": "resnet18"}), 3, decoder="deeplab")
    with pytest.raises(ValueError, match=r"fpn_features \['p9'\]"):
        SegmentationModel(build_body({"name": "resnet18"}, {"name": "fpn"}), 3, fpn_features=["p9"])


def test_same_network_as_smp_unet():
    """With the same weights, Cerberus' U-Net on resnet34 is smp.Unet("resnet34"): smp's state dict loads by
    renaming `encoder.` to `body.`, and the outputs are equal: ours on RGB in [0, 1] (it normalises its input with the
    record's statistics), smp's on the same images normalised by hand as its users' pipelines do."""
    torch.manual_seed(0)
    reference = smp.Unet("resnet34", encoder_weights=None, classes=5).eval()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ours = SegmentationModel(build_body({"name": "resnet34"}), 5, mean=mean, std=std).eval()
    state = {k.replace("encoder.", "body.", 1): v for k, v in reference.state_dict().items()}
    missing, unexpected = ours.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    x = torch.rand(2, 3, 64, 96)
    normalized = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["segmentation"], reference(normalized))


def hand_scores(pred: np.ndarray, target: np.ndarray, k: int, ignore: int) -> dict:
    keep = target != ignore
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(target[keep], pred[keep]):
        cm[t, p] += 1
    iou, dice = [], []
    for c in range(k):
        tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], cm[c, :].sum() - cm[c, c]
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    return {"iou": iou, "dice": dice, "mIoU": np.nanmean(iou), "mDice": np.nanmean(dice),
            "acc": np.trace(cm) / cm.sum()}


def test_metrics_equal_a_confusion_matrix_by_hand():
    g = torch.Generator().manual_seed(0)
    k, ignore = 5, 255
    metric = SegmentationMetrics(k, ignore)
    preds, targets = [], []
    for _ in range(3):  # several batches: the state accumulates
        logits = torch.randn(2, k, 9, 7, generator=g)
        target = torch.randint(0, k - 1, (2, 9, 7), generator=g)  # class 4 never in the truth ...
        target[torch.rand(2, 9, 7, generator=g) < 0.2] = ignore
        logits[:, 3] -= 100  # ... and class 3 never predicted
        metric.update(logits, target)
        preds.append(logits.argmax(1))
        targets.append(target)
    logits_free = torch.cat(preds).numpy(), torch.cat(targets).numpy()
    expected = hand_scores(*logits_free, k, ignore)
    got = metric.compute()
    for key in ("mIoU", "mDice", "acc"):
        assert got[key].item() == pytest.approx(expected[key], abs=1e-12)
    np.testing.assert_allclose(got["iou"].numpy(), expected["iou"], atol=1e-12)
    np.testing.assert_allclose(got["dice"].numpy(), expected["dice"], atol=1e-12)
    assert got["iou"][3].item() == 0.0 and not math.isnan(got["iou"][4].item())  # 4 is predicted: IoU 0
    # a class absent from truth and prediction has no score and does not pull the mean down
    scores = confusion_scores(torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]]))
    assert math.isnan(scores["iou"][2].item())
    assert scores["mIoU"].item() == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_loss_ignores_label_and_weights_classes():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = 255
    plain = SegmentationLoss(3)(logits, target)
    keep = target != 255
    manual = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    torch.testing.assert_close(plain["loss"], manual)
    weighted = SegmentationLoss(3, class_weights=[0.0, 1.0, 1.0])(logits, target)["loss"]
    mask = keep & (target != 0)
    torch.testing.assert_close(weighted, torch.nn.functional.cross_entropy(
        logits.permute(0, 2, 3, 1)[mask], target[mask]))
    with_dice = SegmentationLoss(3, dice_weight=0.5)(logits, target)
    assert set(with_dice) == {"loss", "ce", "dice"}
    torch.testing.assert_close(with_dice["loss"], with_dice["ce"] + 0.5 * with_dice["dice"])
    with_dice["loss"].backward()
    assert logits.grad[:, :, :4].abs().max() == 0  # ignored pixels get no gradient from either term
    with pytest.raises(ValueError, match="class_weights has 2 entries but the dataset has 3 classes"):
        SegmentationLoss(3, class_weights=[1.0, 1.0])


def test_overlay_and_grid_paint_classes_not_background_or_ignore():
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    mask = torch.tensor([[0, 1, 2, 255]] * 4)
    out = overlay_mask(image, mask, 3, skip=[0], alpha=1.0)
    colors = class_colors(3)
    assert tuple(out[:, 0, 0].tolist()) == (0, 0, 0)  # background: unpainted
    assert tuple(out[:, 0, 1].tolist()) == colors[1]
    assert tuple(out[:, 0, 2].tolist()) == colors[2]
    assert tuple(out[:, 0, 3].tolist()) == (0, 0, 0)  # ignore label: unpainted
    images = torch.zeros(2, 3, 16, 16)
    grid = segmentation_grid(images, torch.ones(2, 16, 16, dtype=torch.long), torch.zeros(2, 16, 16, dtype=torch.long),
                             ["background", "circle"], upscale_to=32)
    assert grid.dtype == torch.uint8 and grid.shape == (3, 2 * 32 + 3 * 2, 3 * 32 + 4 * 2)
    pred_tile = grid[:, 2:34, 2 * 34 + 2:3 * 34]
    truth_tile = grid[:, 2:34, 34 + 2:2 * 34]
    assert (truth_tile == 0).all()  # truth is all background
    assert (pred_tile.float().mean((1, 2)) > 0).any()  # prediction (class 1) is painted


def test_channels_last_gives_the_same_logits_and_gradients():
    """task.module.channels_last (on by default for segmentation) changes the memory layout, not the numbers. In
    float64: in float32 train-mode BatchNorm on the 2x2 maps of a 64 px input sums ill-conditioned terms in another
    order per layout (and per thread count), up to ~10% of a gradient's scale; in float64 the layouts agree to
    ~1e-13, where a layout bug is ~1."""
    torch.manual_seed(0)
    nchw = SegmentationModel(build_body({"name": "resnet18"}), 3, decoder_channels=[32, 16, 16, 8, 8]).double()
    nhwc = SegmentationModel(build_body({"name": "resnet18"}), 3, decoder_channels=[32, 16, 16, 8, 8]).double()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outs = []
    for m in (nchw, nhwc):
        out = m(x)["segmentation"]
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outs.append(out.detach())
    assert outs[1].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-9, atol=1e-9)
    for (name, a), b in zip(nchw.named_parameters(), nhwc.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-9 * a.grad.abs().max().item(), msg=name)


def test_one_head_class_per_decoder_and_checkpoints_of_the_single_task_model_load():
    """SegmentationModel picks the head class; each model is also selectable by task.model._target_; a state dict
    of the single-task model before the multi-head one (`decoder.*`, `segmentation_head.*`) loads into it."""
    from tasks.segmentation import FPNSemanticHead, SemanticFPNModel, UnetHead, UnetModel

    unet = SegmentationModel(build_body({"name": "resnet18"}), 3, fpn_channels=16, decoder_channels=[32, 16, 16, 8, 8])
    fpn = SegmentationModel(build_body({"name": "resnet18"}, {"name": "fpn"}), 3, fpn_channels=16,
                            decoder_channels=[32, 16, 16, 8, 8])
    assert type(unet.head) is UnetHead and type(fpn.head) is FPNSemanticHead
    assert {k.split(".", 2)[-1].split(".")[0] for k in unet.state_dict() if k.startswith("heads.")} == {
        "decoder", "segmentation_head"}
    assert type(SemanticFPNModel(build_body({"name": "resnet18"}, {"name": "fpn"}), 3).head) is FPNSemanticHead
    direct = UnetModel(build_body({"name": "resnet18"}), 3, decoder_channels=[32, 16, 16, 8, 8])
    legacy = {k.removeprefix("heads.segmentation."): v for k, v in unet.state_dict().items()}
    assert "decoder.blocks.0.conv1.0.weight" in legacy
    direct.load_state_dict(legacy)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(direct.eval()(x), unet.eval()(x))
    with pytest.raises(TypeError, match="unknown options"):
        SegmentationModel(build_body({"name": "resnet18"}), 3, decoder_chanels=[8])
