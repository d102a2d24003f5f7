"""predict.py on joint (task=multitask) checkpoints: with an R-CNN head and without one, as subprocesses on 1-epoch
runs; the predictor's handling of an image where nothing is found, in-process with a stand-in model."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_ok, run_train
from omegaconf import OmegaConf
from PIL import Image
from test_predict import run_predict, write_inputs
from test_train import printed_checkpoint

TRAIN = [
    "task=multitask", "logger=csv", "callbacks=minimal", "data.synthetic.train_images=8",
    "data.synthetic.val_images=2", "data.synthetic.test_images=2", "data.synthetic.image_size=64",
    "data.num_workers=0", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "test_after_fit=false",
    "neck.out_channels=32", "task.module.vis_images=0",
]
RCNN = [  # an untrained detector scores everything low: keep a few boxes per image so the json has entries
    "task.detection.model.min_size=[64]", "task.detection.model.max_size=96",
    "task.detection.model.representation_size=64", "task.detection.model.box_score_thresh=0.0",
    "task.detection.model.box_detections_per_img=5",
]
HEADS = {"rcnn": RCNN, "dense": ["task.heads=[segmentation,classification]"]}
# (width, height); the black one is the image without objects. Three sizes: one batch without an R-CNN head too
SIZES = {"x.png": (64, 48), "y.png": (80, 64), "blank.png": (50, 40)}
READ = ["blank.png", "x.png", "y.png"]  # sorted; broken.png (between blank and x) is reported, not predicted
DRAWN = {"x.png": (256, 192), "y.png": (256, 205), "blank.png": (256, 205)}  # enlarged to 256 on the long side


@functools.cache
def trained(kind: str, base: Path) -> Path:
    cwd = base / kind
    cwd.mkdir(parents=True, exist_ok=True)
    proc = run_train(*TRAIN, *HEADS[kind], cwd=cwd)
    assert_ok(proc)
    return printed_checkpoint(proc.stdout)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """kind -> the output folder of predict.py on the inputs (overlay on, every box kept) and its process."""

    @functools.cache
    def run(kind: str) -> tuple[Path, object, Path]:
        base = tmp_path_factory.getbasetemp() / "multitask"
        ckpt = trained(kind, base)
        inputs = write_inputs(base / kind / "in", SIZES)
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(inputs / "blank.png")
        out = base / kind / "out"
        proc = run_predict(f"ckpt={ckpt}", f"input={inputs}", f"output={out}", "score_threshold=0", "batch_size=4",
                           "num_workers=0", cwd=base / kind)
        assert_ok(proc)
        return out, proc, inputs

    return run


def assert_masks_labels_and_drawings(out: Path, inputs: Path) -> None:
    for name in READ:
        mask = Image.open(out / "masks" / name)
        assert mask.mode == "L" and mask.size == SIZES[name]
        assert np.asarray(mask).max() <= 3  # background + the 3 synthetic shapes
    with (out / "predictions.csv").open() as f:
        rows = list(csv.reader(f))
    classes = rows[0][2:]
    assert rows[0][:2] == ["file", "labels"] and len(classes) == 3
    assert [r[0] for r in rows[1:]] == READ
    for row in rows[1:]:
        probs = [float(p) for p in row[2:]]
        assert all(0 <= p <= 1 for p in probs)
        assert (row[1].split(";") if row[1] else []) == [c for c, p in zip(classes, probs) if p >= 0.5]
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["file"] for p in preds] == READ
    for pred in preds:
        assert list(pred["scores"]) == classes
        assert pred["labels"] == [c for c in classes if pred["scores"][c] >= 0.5]
    for name in READ:
        drawn = Image.open(out / "drawn" / name)
        assert drawn.size == DRAWN[name]
        image = torch.from_numpy(np.array(Image.open(inputs / name).convert("RGB"))).permute(2, 0, 1)
        plain = F.interpolate(image[None], size=drawn.size[::-1], mode="nearest")[0].permute(1, 2, 0).numpy()
        assert (np.asarray(drawn.convert("RGB")) != plain).any()  # at least the labels are written on it


def test_detection_segmentation_classification(predicted):
    from pycocotools.coco import COCO

    out, proc, inputs = predicted("rcnn")
    assert "3 image(s) predicted, 1 unreadable" in proc.stdout
    meta = json.loads((out / "images.json").read_text())
    assert {im["file_name"]: im["id"] for im in meta["images"]} == {"blank.png": 1, "x.png": 3, "y.png": 4}
    assert {im["file_name"]: (im["width"], im["height"]) for im in meta["images"]} == {n: SIZES[n] for n in READ}
    assert [c["id"] for c in meta["categories"]] == [1, 2, 3]
    results = json.loads((out / "detections.json").read_text())
    assert results and {r["image_id"] for r in results} <= {1, 3, 4}
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    (out / "gt.json").write_text(json.dumps({**meta, "annotations": []}))
    gt = COCO(str(out / "gt.json"))
    assert len(gt.loadRes(str(out / "detections.json")).getAnnIds()) == len(results)
    assert_masks_labels_and_drawings(out, inputs)


# the quick tests sit between the two runs: pytest-xdist hands out consecutive pairs of tests, so the two runs go
# to two workers
def test_nothing_found_with_rcnn_head(tmp_path):
    check_nothing_found(tmp_path, rcnn=True)


def test_without_rcnn_head_images_of_several_sizes(predicted):
    out, proc, inputs = predicted("dense")
    assert "3 image(s) predicted, 1 unreadable" in proc.stdout
    assert not (out / "detections.json").exists() and not (out / "images.json").exists()
    assert_masks_labels_and_drawings(out, inputs)


def test_nothing_found_without_rcnn_head(tmp_path):
    check_nothing_found(tmp_path, rcnn=False)


def check_nothing_found(tmp_path: Path, rcnn: bool) -> None:
    """No boxes, an all-background mask, no label: empty results, a zero mask, a drawn picture (its caption says
    so), by a stand-in model (the same with an R-CNN head or without)."""
    from data.preprocessing import Preprocessing
    from tasks.prediction.base import PredictOptions
    from tasks.prediction.inputs import ImageFiles
    from tasks.prediction.multitask import MultitaskPredictor
    from tasks.restore import LoadedCheckpoint

    names = ["detection", "segmentation", "classification"] if rcnn else ["segmentation", "classification"]
    batches = []

    def predict_step(batch, batch_idx):
        batches.append(batch)
        sizes = [tuple(i.shape[-2:]) for i in batch]
        out = {"segmentation": [torch.eye(3)[0].view(3, 1, 1).expand(3, *s) for s in sizes],
               "classification": torch.full((len(batch), 2), 0.1)}
        if rcnn:
            out["detection"] = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                 "labels": torch.zeros(0, dtype=torch.int64)} for _ in batch]
        return out

    heads = {n: SimpleNamespace(kind=n) for n in names}
    module = SimpleNamespace(model=SimpleNamespace(heads=heads, rcnn_name="detection" if rcnn else None),
                             parts={"segmentation": SimpleNamespace(class_names=["background", "cat", "dog"])},
                             predict_step=predict_step)
    loaded = LoadedCheckpoint(module, OmegaConf.create({}), ["cat", "dog"], None, tmp_path / "x.ckpt",
                              Preprocessing("multitask"))
    files = ImageFiles([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"], ["a.png", "b.png", "c.png"],
                       tmp_path)
    predictor = MultitaskPredictor(loaded, files, tmp_path / "out", PredictOptions())
    items = [{"index": i, "image": torch.zeros(3, h, w), "size": (h, w)}
             for i, (h, w) in enumerate([(20, 30), (40, 36), (20, 30)])]
    for item, output in zip(items, predictor.forward(items, torch.device("cpu"))):
        predictor.write(item, output)
    predictor.finish(SimpleNamespace(print=lambda *a, **k: None))
    if rcnn:
        assert len(batches) == 1 and isinstance(batches[0], list)
        assert json.loads((tmp_path / "out" / "detections.json").read_text()) == []
    else:  # one pass per image size, padded to a multiple of 32
        assert [tuple(b.shape) for b in batches] == [(2, 3, 32, 32), (1, 3, 64, 64)]
        assert not (tmp_path / "out" / "detections.json").exists()
    for name, (h, w), drawn in zip(files.names, [(20, 30), (40, 36), (20, 30)], [(256, 171), (230, 256), (256, 171)]):
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / name))
        assert mask.shape == (h, w) and not mask.any()
        assert Image.open(tmp_path / "out" / "drawn" / name).size == drawn
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [r["labels"] for r in rows] == [[], [], []] and rows[0]["scores"] == {"cat": 0.1, "dog": 0.1}


@pytest.mark.parametrize("kind", ["rcnn", "dense"])
def test_the_exported_joint_model_predicts_the_same_files(kind, predicted, tmp_path):
    """predict.py on the ONNX export of a joint checkpoint writes what predict.py on the checkpoint wrote."""
    from test_predict_exported import exported, pictures_agree

    from_ckpt, _, inputs = predicted(kind)
    onnx_file = exported(trained(kind, from_ckpt.parents[1]), tmp_path)
    out = tmp_path / "from_onnx"
    proc = run_predict(f"ckpt={onnx_file}", f"input={inputs}", f"output={out}", "score_threshold=0",
                       "num_workers=0", cwd=tmp_path)
    assert_ok(proc)
    assert "multitask model" in proc.stdout and "3 image(s) predicted, 1 unreadable" in proc.stdout
    assert_masks_labels_and_drawings(out, inputs)
    for name in READ:
        assert np.array_equal(np.asarray(Image.open(from_ckpt / "masks" / name)),
                              np.asarray(Image.open(out / "masks" / name))), name
        pictures_agree(from_ckpt / "drawn" / name, out / "drawn" / name)
    a, b = (json.loads((d / "predictions.json").read_text()) for d in (from_ckpt, out))
    assert [r["labels"] for r in a] == [r["labels"] for r in b]
    for x, y in zip(a, b):
        assert np.allclose(list(x["scores"].values()), list(y["scores"].values()), atol=2e-6)
    if kind == "rcnn":
        a, b = (json.loads((d / "detections.json").read_text()) for d in (from_ckpt, out))
        assert a and len(a) == len(b)
        for x, y in zip(a, b):
            assert (x["image_id"], x["category_id"]) == (y["image_id"], y["category_id"])
            assert np.allclose(x["bbox"], y["bbox"], atol=0.011) and abs(x["score"] - y["score"]) <= 1e-4 + 1e-5
        assert (from_ckpt / "images.json").read_text() == (out / "images.json").read_text()
    else:
        assert not (out / "detections.json").exists()
