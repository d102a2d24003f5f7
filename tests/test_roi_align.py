"""The sparse-matrix RoIAlign equals torchvision's, forward and gradient, on every edge case of its kernel."""

from __future__ import annotations

import torch
from torchvision.ops import MultiScaleRoIAlign

from tasks.detection.roi_align import SparseMultiScaleRoIAlign


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {f"p{k}": torch.randn(2, 8, 64 // 2**k, 48 // 2**k, generator=g, requires_grad=True) for k in (2, 3, 4)}
    boxes = []
    for _ in range(2):
        xy = torch.rand(20, 2, generator=g) * 60 - 10  # some start left of / above the image
        wh = torch.rand(20, 2, generator=g) * 70 + 0.2  # tiny (< 1 px) to larger than the image
        boxes.append(torch.cat([xy, xy + wh], 1))
    boxes[0][0] = torch.tensor([50.0, 60.0, 300.0, 400.0])  # far outside: samples beyond -1 / H are zero
    return feats, boxes, [(64, 48), (64, 48)]


def test_matches_torchvision_forward_and_gradient():
    feats, boxes, shapes = _inputs()
    ref = MultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)
    ours = SparseMultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)
    a, b = ref(feats, boxes, shapes), ours(feats, boxes, shapes)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(a)
    ga = torch.autograd.grad(a, list(feats.values()), grad)
    gb = torch.autograd.grad(b, list(feats.values()), grad)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-4)


def test_single_level_and_inference_path():
    feats, boxes, shapes = _inputs(1)
    one = {"p3": feats["p3"]}
    torch.testing.assert_close(SparseMultiScaleRoIAlign(["p3"], 5, 2)(one, boxes, shapes),
                               MultiScaleRoIAlign(["p3"], 5, 2)(one, boxes, shapes), rtol=1e-5, atol=1e-5)
    for context in (torch.no_grad, torch.inference_mode):  # inference builds M alone, without its transpose
        with context():
            ours = SparseMultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)(feats, boxes, shapes)
            ref = MultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)(feats, boxes, shapes)
        assert not ours.requires_grad
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_channels_last_features():
    """NHWC feature maps (task.module.channels_last) give the same pooled features."""
    feats, boxes, shapes = _inputs(2)
    nhwc = {k: v.detach().contiguous(memory_format=torch.channels_last) for k, v in feats.items()}
    with torch.no_grad():
        ref = MultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)(feats, boxes, shapes)
        torch.testing.assert_close(SparseMultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)(nhwc, boxes, shapes), ref,
                                   rtol=1e-5, atol=1e-5)


def test_zero_rois():
    """An early or diverging model can propose nothing: the output is (0, C, 7, 7) like torchvision's, on the
    training path (gradient to the features, zero) and the inference path."""
    feats, _, shapes = _inputs(3)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    ours = SparseMultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)(feats, empty, shapes)
    ref = MultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)(feats, empty, shapes)
    assert ours.shape == ref.shape == (0, 8, 7, 7)
    grads = torch.autograd.grad(ours.sum(), list(feats.values()), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    with torch.no_grad():
        assert SparseMultiScaleRoIAlign(["p2", "p3", "p4"], 7, 2)(feats, empty, shapes).shape == (0, 8, 7, 7)
