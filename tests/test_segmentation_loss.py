"""The segmentation loss's class-imbalance options against hand computations on tiny tensors: class weights from the
training masks' pixel frequencies (`class_weights: auto | inverse_sqrt | median_freq`), focal loss (`focal_gamma`),
hard-pixel mining (`ohem`), their config errors, and short fits with them."""

from __future__ import annotations

import logging
import math
from functools import partial
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from backbones import build_body
from backbones.errors import ConfigError
from data.mask_scan import class_counts
from data.segmentation import MaskDataModule
from tasks.segmentation import SegmentationModel, SegmentationPart, SegmentationTask
from tasks.segmentation.class_weights import MAX_RATIO, balanced_weights
from tasks.segmentation.hard_pixels import Ohem, pixel_cross_entropy
from tasks.segmentation.loss import SegmentationLoss

IGNORE = 255


def batch(seed: int = 0, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (2, K, 4, 5) and a target (2, 4, 5) with a row of ignored pixels."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 4, 5, generator=gen)
    target = torch.randint(0, classes, (2, 4, 5), generator=gen)
    target[:, 0] = IGNORE
    return logits, target


def test_defaults_are_todays_cross_entropy_exactly():
    logits, target = batch()
    terms = SegmentationLoss(3)(logits, target)
    assert torch.equal(terms["ce"], F.cross_entropy(logits, target, ignore_index=IGNORE))
    weights = [0.5, 1.0, 2.0]
    weighted = SegmentationLoss(3, class_weights=weights, label_smoothing=0.1)(logits, target)["loss"]
    assert torch.equal(weighted, F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=IGNORE,
                                                 label_smoothing=0.1))


@pytest.mark.parametrize("weights", [None, [0.2, 1.0, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_per_pixel_cross_entropy_with_gamma_0_is_cross_entropy(weights, smoothing):
    logits, target = batch(1)
    w = None if weights is None else torch.tensor(weights)
    torch.testing.assert_close(
        pixel_cross_entropy(logits, target, weight=w, ignore_index=IGNORE, label_smoothing=smoothing),
        F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, label_smoothing=smoothing))


def test_focal_loss_by_hand():
    """Each labelled pixel: -w_y (1 - p_y)^gamma log p_y; the sum over the sum of w_y (PyTorch's weighted mean)."""
    logits, target = batch(2)
    weights = [0.5, 1.0, 2.0]
    num = den = 0.0
    probs = logits.softmax(1)
    for b, i, j in np.ndindex(*target.shape):
        y = int(target[b, i, j])
        if y == IGNORE:
            continue
        p = float(probs[b, y, i, j])
        num += -weights[y] * (1 - p) ** 2 * math.log(p)
        den += weights[y]
    loss = SegmentationLoss(3, class_weights=weights, focal_gamma=2)(logits, target)
    assert loss["ce"].item() == pytest.approx(num / den, rel=1e-5)
    assert loss["ce"] < SegmentationLoss(3, class_weights=weights)(logits, target)["ce"]  # easy pixels count less


def test_ohem_keeps_the_pixels_below_the_threshold_and_at_least_min_kept():
    prob = torch.tensor([[[0.1, 0.9, 0.5], [0.8, 0.3, 0.95]]])  # (1, 2, 3): the true class's probability
    valid = torch.tensor([[[True, True, True], [True, False, True]]])  # the 0.3 pixel is unlabelled
    assert Ohem(0.6, 0).keep(prob, valid).tolist() == [[[True, False, True], [False, False, False]]]
    # the 4 hardest labelled pixels (0.1, 0.5, 0.8, 0.9) although only two are below 0.6
    assert Ohem(0.6, 4).keep(prob, valid).tolist() == [[[True, True, True], [True, False, False]]]
    assert Ohem(0.6, 100).keep(prob, valid).tolist() == valid.tolist()  # fewer pixels than min_kept: all
    assert Ohem(0.99, 1).keep(prob, valid).tolist() == valid.tolist()  # all below the threshold


def test_ohem_loss_is_the_cross_entropy_of_the_kept_pixels_in_training_only():
    logits, target = batch(3)
    weights = torch.tensor([0.5, 1.0, 2.0])
    loss = SegmentationLoss(3, class_weights=weights.tolist(), ohem={"thresh": 0.5, "min_kept": 3})
    p = logits.softmax(1).gather(1, target.clamp(max=2)[:, None]).squeeze(1)
    valid = target != IGNORE
    keep = Ohem(0.5, 3).keep(p, valid)
    assert 0 < keep.sum() < valid.sum()
    pixels, labels = logits.permute(0, 2, 3, 1)[keep], target[keep]
    torch.testing.assert_close(loss.train()(logits, target)["ce"], F.cross_entropy(pixels, labels, weight=weights))
    torch.testing.assert_close(loss.eval()(logits, target)["ce"],  # evaluation: every labelled pixel
                               F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE))
    assert Ohem.parse(True, "k") == Ohem(0.7, 100_000) and Ohem.parse({"thresh": 0.6}, "k") == Ohem(0.6, 100_000)


def test_balanced_weights_by_hand():
    pixels = np.array([800, 150, 50, 0])  # class 3 never occurs
    image_pixels = np.array([1000, 600, 200, 0])  # labelled pixels of the masks each class occurs in
    f = pixels[:3] / 1000
    median = np.median(f)
    np.testing.assert_allclose(balanced_weights("inverse_sqrt", pixels, image_pixels),
                               [*np.sqrt(median / f), 1.0])
    g = pixels[:3] / image_pixels[:3]
    np.testing.assert_allclose(balanced_weights("median_freq", pixels, image_pixels), [*(np.median(g) / g), 1.0])
    # a class of a handful of pixels does not get a weight of thousands
    extreme = balanced_weights("median_freq", np.array([10**6, 10**6, 1]), np.array([2 * 10**6, 2 * 10**6, 1000]))
    assert extreme.tolist() == [1.0, 1.0, MAX_RATIO]


def test_class_counts_leave_out_ignored_and_unknown_values():
    mask = np.array([[0, 1, 1, 255], [2, 2, 2, 255]], np.uint8)
    assert class_counts(mask, 3).tolist() == [1, 2, 3]
    assert class_counts(mask.astype(np.uint16), 3).tolist() == [1, 2, 3]
    wide = mask.astype(np.int32)
    wide[0, 3] = 2**31 - 1
    wide[1, 3] = -1
    assert class_counts(wide, 3).tolist() == [1, 2, 3]


def write_masks(root, masks):
    """A mask folder whose train split has `masks` (uint8 arrays) and a one-image val split."""
    for split, arrays in (("train", masks), ("val", masks[:1])):
        for i, mask in enumerate(arrays):
            for kind in ("images", "masks"):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("bg\nroad\ncar\n")
    return root


def tiny_masks() -> list[np.ndarray]:
    a = np.zeros((32, 32), np.uint8)  # 1024 px: 512 bg, 256 road, 256 ignored
    a[:8] = 1
    a[8:16] = IGNORE
    b = np.zeros((32, 32), np.uint8)  # 896 bg, 64 road, 64 car
    b[:2] = 1
    b[2:4] = 2
    return [a, b]


def test_auto_weights_from_a_mask_folder_equal_the_formula(tmp_path):
    dm = MaskDataModule(str(write_masks(tmp_path / "ds", tiny_masks())), num_workers=0)
    dm.setup("fit")
    counts = dm.class_pixel_counts()  # the scan's counts; ignored pixels in none
    assert counts.pixels.tolist() == [512 + 896, 256 + 64, 64] and counts.masks == 2
    assert counts.image_pixels.tolist() == [768 + 1024, 768 + 1024, 1024]
    f = np.array([1408, 320, 64]) / 1792
    expected = np.sqrt(np.median(f) / f)
    part = SegmentationPart("segmentation", 3, ["bg", "road", "car"], loss={"class_weights": "auto"})
    assert part.criterion.class_weights.tolist() == [1.0, 1.0, 1.0]  # until fitting starts
    part.setup(SimpleNamespace(trainer=SimpleNamespace(datamodule=dm)), "validate")
    assert part.criterion.weights_method == "auto"
    part.setup(SimpleNamespace(trainer=SimpleNamespace(datamodule=dm)), "fit")
    np.testing.assert_allclose(part.criterion.class_weights.numpy(), expected, rtol=1e-6)
    g = np.array([1408 / 1792, 320 / 1792, 64 / 1024])
    median = SegmentationPart("segmentation", 3, loss={"class_weights": "median_freq"})
    median.setup(SimpleNamespace(trainer=SimpleNamespace(datamodule=dm)), "fit")
    np.testing.assert_allclose(median.criterion.class_weights.numpy(), np.median(g) / g, rtol=1e-6)


@pytest.mark.parametrize("options,match", [
    ({"class_weights": "balanced"}, r"task.module.loss.class_weights='balanced' is not a choice: .*auto, "
                                    r"inverse_sqrt, median_freq"),
    ({"class_weights": [1.0, 2.0]}, "task.module.loss.class_weights has 2 entries but the dataset has 3 classes"),
    ({"class_weights": [1.0, "x", 2.0]}, r"task.module.loss.class_weights=.*must be a number >= 0"),
    ({"class_weights": [0, 0, 0]}, "at least one above 0"),
    ({"class_weights": 2.0}, r"task.module.loss.class_weights=2.0: use null"),
    ({"focal_gamma": -1}, r"task.module.loss.focal_gamma=-1 must be a number >= 0"),
    ({"ohem": {"thres": 0.7}}, r"task.module.loss.ohem has unknown option \['thres'\]"),
    ({"ohem": {"thresh": 1.5}}, r"task.module.loss.ohem.thresh=1.5 must be a probability"),
    ({"ohem": {"min_kept": -1}}, r"task.module.loss.ohem.min_kept=-1 must be a whole number"),
    ({"ohem": 0.7}, r"task.module.loss.ohem=0.7: use null"),
])
def test_config_mistakes_name_the_key_and_the_fix(options, match):
    with pytest.raises(ConfigError, match=match):
        SegmentationPart("segmentation", 3, loss=options)


def test_a_joint_run_names_its_own_key_and_data_without_counts_is_refused():
    with pytest.raises(ConfigError, match="task.module.segmentation.loss.class_weights='x'"):
        SegmentationPart("segmentation", 3, prefix="segmentation/", loss={"class_weights": "x"})
    part = SegmentationPart("segmentation", 3, prefix="segmentation/", loss={"class_weights": "auto"})
    joint_data = SimpleNamespace(trainer=SimpleNamespace(datamodule=object()))
    with pytest.raises(ConfigError, match=r"task.module.segmentation.loss.class_weights=auto counts the "
                                          r"training masks' pixels, which object does not do .* e.g. "
                                          r"task.module.segmentation.loss.class_weights=\[1.0, 1.0, 1.0\]"):
        part.setup(joint_data, "fit")
    # the default `auto` in `trainer.fit(module, train_dataloaders=...)`: no data module, nothing to count
    bare = SegmentationPart("segmentation", 3, loss={"class_weights": "auto"})
    bare.setup(SimpleNamespace(trainer=SimpleNamespace(datamodule=None)), "fit")
    assert bare.criterion.class_weights.tolist() == [1.0, 1.0, 1.0] and bare.criterion.weights_method is None
    with pytest.raises(ConfigError, match="median_freq counts the training masks' pixels"):
        SegmentationPart("segmentation", 3, loss={"class_weights": "median_freq"}).setup(
            SimpleNamespace(trainer=SimpleNamespace(datamodule=None)), "fit")


def test_a_short_fit_with_auto_weights_logs_them_and_its_checkpoint_loads(tmp_path, caplog):
    """Lightning's loop counts the weights when fitting starts, logs them per class name, trains with focal + OHEM,
    and a fresh `auto` module (as evaluation builds one) takes the trained weights from the state dict."""
    caplog.set_level(logging.INFO, logger="tasks.segmentation.class_weights")
    dm = MaskDataModule(str(write_masks(tmp_path / "ds", tiny_masks())), batch_size=2, num_workers=0,
                        image_size=32)
    loss = {"class_weights": "auto", "focal_gamma": 2.0, "ohem": {"thresh": 0.7, "min_kept": 64}}

    def task() -> L.LightningModule:
        model = SegmentationModel(build_body({"name": "resnet18"}), 3, decoder_channels=[16, 16, 8, 8, 8])
        return SegmentationTask(model, partial(torch.optim.SGD, lr=0.01), loss=loss, vis_images=0,
                                class_names=["bg", "road", "car"])

    module = task()
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    trainer.fit(module, datamodule=dm)
    weights = module.parts["segmentation"].criterion.class_weights
    f = np.array([1408, 320, 64]) / 1792
    np.testing.assert_allclose(weights.numpy(), np.sqrt(np.median(f) / f), rtol=1e-6)
    assert "task.module.loss.class_weights=auto (inverse_sqrt) from the pixels of 2 training masks" in caplog.text
    assert "bg 0.477 (79%), road 1 (18%), car 2.24 (3.6%)" in caplog.text
    fresh = task()
    fresh.load_state_dict(module.state_dict(), strict=True)
    torch.testing.assert_close(fresh.parts["segmentation"].criterion.class_weights, weights)


def test_the_default_config_trains_with_auto_weights_focal_and_ohem():
    """Through the yaml, Hydra's composition and build_task, as train.py (the registry matrix's cell)."""
    from tests.matrix import run_cell

    cell = run_cell("segmentation", "resnet18", "none", steps=2, extra=[
        "task.module.loss.class_weights=auto", "task.module.loss.focal_gamma=2",
        "task.module.loss.ohem={thresh:0.7,min_kept:1000}", "task.model.decoder_channels=[16,16,8,8,8]"])
    assert cell.ok, cell.error


def test_coco_masks_are_counted_as_they_are_painted(tmp_path):
    """data=coco: the training images' masks painted from polygons / RLE, crowd regions (ignored) in no count."""
    from test_segmentation_data import coco_dm, expected_masks, write_coco

    for split in ("train", "val"):
        write_coco(tmp_path / "coco", split)
    counts = coco_dm(tmp_path / "coco").class_pixel_counts()
    masks = list(expected_masks().values())  # the train json paints the same masks as the val one
    assert counts.pixels.tolist() == [sum(int((m == c).sum()) for m in masks) for c in range(4)]
    assert counts.image_pixels.tolist() == [sum(int((m != IGNORE).sum()) for m in masks if (m == c).any())
                                            for c in range(4)]
