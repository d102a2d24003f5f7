"""predict.py end to end, as a subprocess, on a 1-epoch checkpoint per task trained once per test process."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_SYNTHETIC, assert_ok, run_train, write_png
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from test_train import printed_checkpoint

# the training overrides of each task's checkpoint; evaluation (test_evaluate.py) needs the same data options
TRAIN = {
    "classification": ["experiment=smoke", *TINY_SYNTHETIC],
    "detection": [
        "task=detection", "callbacks=minimal", "logger=csv", "data.synthetic.num_classes=2",
        "data.synthetic.train_images=4", "data.synthetic.val_images=2", "data.synthetic.test_images=2",
        "data.synthetic.image_size=64", "data.num_workers=0", "data.batch_size=2", "task.model.min_size=[64]",
        "task.model.max_size=64", "neck.out_channels=32", "task.model.representation_size=64",
        "trainer.max_epochs=1", "trainer.limit_train_batches=1", "task.module.vis_images=0",
        # an untrained detector scores everything low: keep a few boxes per image so the json has entries
        "task.model.box_score_thresh=0.0", "task.model.box_detections_per_img=5",
    ],
    "instance_segmentation": [  # detection's settings, Mask R-CNN's head narrowed
        "task=instance_segmentation", "callbacks=minimal", "logger=csv", "data.synthetic.num_classes=2",
        "data.synthetic.train_images=4", "data.synthetic.val_images=2", "data.synthetic.test_images=2",
        "data.synthetic.image_size=64", "data.num_workers=0", "data.batch_size=2", "task.model.min_size=[64]",
        "task.model.max_size=64", "neck.out_channels=32", "task.model.representation_size=64",
        "task.model.mask_channels=16", "task.model.mask_layers=2",
        "trainer.max_epochs=1", "trainer.limit_train_batches=1", "task.module.vis_images=0",
        "task.model.box_score_thresh=0.0", "task.model.box_detections_per_img=5",
    ],
    "segmentation": [
        "task=segmentation", "callbacks=minimal", "logger=csv", "data.num_workers=0", "data.batch_size=4",
        "data.synthetic.train_images=4", "data.synthetic.val_images=4", "data.synthetic.test_images=4",
        "data.synthetic.image_size=48", "data.image_size=32", "task.model.decoder_channels=[32,16,16,8,8]",
        "trainer.max_epochs=1", "task.module.vis_images=0",
    ],
}
CLASSES = {"classification": ["circle", "square", "triangle"], "detection": ["circle", "triangle"],
           "segmentation": ["background", "circle", "triangle", "square"]}


@functools.cache
def trained(task: str, base: Path) -> Path:
    """The best checkpoint of a 1-epoch run of `task` under `base` (one per task and test process)."""
    cwd = base / task
    cwd.mkdir(parents=True, exist_ok=True)
    proc = run_train(*TRAIN[task], cwd=cwd)
    assert_ok(proc)
    return printed_checkpoint(proc.stdout)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return lambda task: trained(task, tmp_path_factory.getbasetemp() / "trained")


def run_predict(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def write_inputs(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """RGB images named by `sizes` ((width, height)), a corrupt .png and a text file that is no image."""
    rng = np.random.default_rng(0)
    for name, (w, h) in sizes.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 255, 200, dtype=np.uint8)))
    (folder / "notes.txt").write_text("not an image")
    return folder


def assert_reports_broken(proc: subprocess.CompletedProcess) -> None:
    assert "cannot read broken.png" in proc.stderr  # a warning naming the file
    assert "1 unreadable file(s) skipped: broken.png" in proc.stdout
    assert "notes.txt" in proc.stderr  # not an image: skipped and named, too


def test_classification_directory(checkpoint, tmp_path):
    ckpt = checkpoint("classification")
    inputs = write_inputs(tmp_path / "in", {"a.png": (32, 32), "sub/b.jpg": (50, 40), "c.png": (64, 20)})
    proc = run_predict(f"ckpt={ckpt}", f"input={inputs}", f"output={tmp_path}/out", "topk=2", "batch_size=2",
                       cwd=tmp_path)
    assert_ok(proc)
    assert_reports_broken(proc)
    assert "3 image(s) predicted, 1 unreadable" in proc.stdout and "Top-2 predictions" in proc.stdout
    with (tmp_path / "out" / "predictions.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "label1", "score1", "label2", "score2"]
    assert [r[0] for r in rows[1:]] == ["a.png", "c.png", "sub/b.jpg"]
    for row in rows[1:]:
        assert set(row[1::2]) <= set(CLASSES["classification"]) and row[1] != row[3]
        assert 1 >= float(row[2]) >= float(row[4]) >= 0
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [p["file"] for p in preds] == ["a.png", "c.png", "sub/b.jpg"] and all(len(p["labels"]) == 2 for p in preds)


def test_classification_single_file_default_output_and_topk_cap(checkpoint, tmp_path):
    ckpt = checkpoint("classification")
    image = write_png(tmp_path / "one.png", size=40)
    proc = run_predict(f"ckpt={ckpt}", f"input={image}", "formats=[json]", "device=cpu", "num_workers=0",
                       cwd=tmp_path)
    assert_ok(proc)
    out = tmp_path / "predictions" / f"{ckpt.parent.parent.name}_{ckpt.stem}"
    assert str(out) in proc.stdout.replace("\n", "")
    (pred,) = json.loads((out / "predictions.json").read_text())
    assert pred["file"] == "one.png" and sorted(pred["labels"]) == CLASSES["classification"]  # topk 5 -> 3 classes
    assert abs(sum(pred["scores"]) - 1) < 1e-4 and not (out / "predictions.csv").exists()


def test_detection_coco_results_and_drawings(checkpoint, tmp_path):
    ckpt = checkpoint("detection")
    inputs = write_inputs(tmp_path / "in", {"x.png": (64, 48), "y.png": (80, 64)})
    proc = run_predict(f"ckpt={ckpt}", f"input={inputs}", f"output={tmp_path}/out", "score_threshold=0",
                       "num_workers=1", cwd=tmp_path)  # one worker: failures come back from the worker process
    assert_ok(proc)
    assert_reports_broken(proc)
    out = tmp_path / "out"
    meta = json.loads((out / "images.json").read_text())
    ids = {im["file_name"]: im["id"] for im in meta["images"]}
    assert ids == {"x.png": 2, "y.png": 3}  # 1..N over the listed files, the unreadable one included
    assert {im["file_name"]: (im["width"], im["height"]) for im in meta["images"]} == {"x.png": (64, 48),
                                                                                       "y.png": (80, 64)}
    assert meta["categories"] == [{"id": 1, "name": "circle"}, {"id": 2, "name": "triangle"}]
    results = json.loads((out / "detections.json").read_text())
    assert results and {r["image_id"] for r in results} <= {2, 3}
    for r in results:
        assert r["category_id"] in (1, 2) and len(r["bbox"]) == 4 and 0 <= r["score"] <= 1
        x, y, w, h = r["bbox"]
        assert w >= 0 and h >= 0 and x + w <= 80.01 and y + h <= 64.01
    # images under 256 px are drawn enlarged to 256 on the longer side (readable labels)
    for name, size in (("x.png", (256, 192)), ("y.png", (256, 205))):
        assert Image.open(out / "drawn" / name).size == size


def test_instance_segmentation_writes_rle_masks_coco_reads(checkpoint, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    ckpt = checkpoint("instance_segmentation")
    inputs = write_inputs(tmp_path / "in", {"x.png": (64, 48), "y.png": (80, 64)})
    proc = run_predict(f"ckpt={ckpt}", f"input={inputs}", f"output={tmp_path}/out", "score_threshold=0",
                       "num_workers=0", cwd=tmp_path)
    assert_ok(proc)
    out = tmp_path / "out"
    results = json.loads((out / "detections.json").read_text())
    assert results and all(set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"} for r in results)
    meta = json.loads((out / "images.json").read_text())
    sizes = {im["id"]: [im["height"], im["width"]] for im in meta["images"]}
    for r in results:  # each mask at its image's size, and COCO's API reads the file as results of that json
        assert r["segmentation"]["size"] == sizes[r["image_id"]]
        assert mask_utils.area(r["segmentation"]) <= sizes[r["image_id"]][0] * sizes[r["image_id"]][1]
    (tmp_path / "gt.json").write_text(json.dumps({**meta, "annotations": []}))
    gt = COCO(str(tmp_path / "gt.json"))
    assert len(gt.loadRes(str(out / "detections.json")).getAnnIds()) == len(results)
    for name, size in (("x.png", (256, 192)), ("y.png", (256, 205))):
        assert Image.open(out / "drawn" / name).size == size


def test_detection_results_use_the_datasets_category_ids(tmp_path):
    """Contiguous label l is written as the checkpoint's category_ids[l - 1] (COCO ids need not be 1..K)."""
    from tasks.prediction.base import PredictOptions
    from tasks.prediction.detection import DetectionPredictor
    from tasks.prediction.inputs import ImageFiles

    loaded = SimpleNamespace(config=OmegaConf.create({"data": {}}), class_names=["cat", "dog"], category_ids=[17, 42])
    files = ImageFiles([tmp_path / "a.png"], ["a.png"], tmp_path)
    predictor = DetectionPredictor(loaded, files, tmp_path, PredictOptions(score_threshold=0.5, overlay=False))
    pred = {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.0, 0.0, 5.0, 5.0], [3.0, 3.0, 4.0, 4.0]]),
            "scores": torch.tensor([0.9, 0.6, 0.1]), "labels": torch.tensor([2, 1, 2])}
    predictor.write({"index": 0, "size": (30, 20), "image": torch.zeros(3, 30, 20)}, pred)
    predictor.finish(SimpleNamespace(print=lambda *a, **k: None))
    results = json.loads((tmp_path / "detections.json").read_text())
    assert results == [{"image_id": 1, "category_id": 42, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.9},
                       {"image_id": 1, "category_id": 17, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.6}]
    assert json.loads((tmp_path / "images.json").read_text())["categories"][1] == {"id": 42, "name": "dog"}


def test_segmentation_masks_and_overlays(checkpoint, tmp_path):
    ckpt = checkpoint("segmentation")
    sizes = {"p.png": (48, 48), "q.jpg": (50, 37), "deep/r.png": (70, 33)}
    inputs = write_inputs(tmp_path / "in", sizes)
    proc = run_predict(f"ckpt={ckpt}", f"input={inputs}", f"output={tmp_path}/out", "batch_size=3",
                       "num_workers=0", cwd=tmp_path)
    assert_ok(proc)
    assert_reports_broken(proc)
    for name, size in sizes.items():
        png = str(Path(name).with_suffix(".png"))
        mask = Image.open(tmp_path / "out" / "masks" / png)
        assert mask.mode == "L" and mask.size == size
        assert np.array(mask).max() < len(CLASSES["segmentation"])
        assert Image.open(tmp_path / "out" / "overlays" / png).size == size
    assert not (tmp_path / "out" / "masks" / "broken.png").exists()


def test_eval_preprocessing_matches_the_run(checkpoint, tmp_path):
    """The predictors' transforms give the tensors the run's own val/test datasets give, from the file alone."""
    from tasks.prediction.base import PredictOptions
    from tasks.prediction.inputs import list_images, read_rgb
    from tasks.prediction.run import build_predictor
    from tasks.restore import load_checkpoint

    for task in ("classification", "segmentation"):
        loaded = load_checkpoint(checkpoint(task))
        datamodule = instantiate(loaded.config.data)
        datamodule.prepare_data()
        dataset = datamodule.dataset("test", train=False)
        path = dataset.index.samples[0][0]
        predictor = build_predictor(loaded, list_images(path), tmp_path, PredictOptions())
        assert torch.equal(predictor.prepare(read_rgb(path))["image"], dataset[0][0]), task


def test_segmentation_eval_size_masks_keep_the_input_size(checkpoint, tmp_path):
    """With the run's data.eval_size (the record's size) the image is resized for the model and the mask resized
    back."""
    from tasks.prediction.base import PredictOptions
    from tasks.prediction.inputs import ImageFiles
    from tasks.prediction.segmentation import SegmentationPredictor
    from tasks.restore import load_checkpoint

    loaded = load_checkpoint(checkpoint("segmentation"))
    loaded.preprocessing = dataclasses.replace(loaded.preprocessing, size=40)  # as a run with data.eval_size=40
    files = ImageFiles([tmp_path / "a.png", tmp_path / "b.png"], ["a.png", "b.png"], tmp_path)
    predictor = SegmentationPredictor(loaded, files, tmp_path, PredictOptions())
    images = [Image.new("RGB", (90, 30)), Image.new("RGB", (31, 45))]
    items = [{"index": i, **predictor.prepare(im)} for i, im in enumerate(images)]
    assert items[0]["image"].shape[-2:] == (40, 120)
    with torch.inference_mode():
        masks = predictor.forward(items, torch.device("cpu"))
    assert [tuple(m.shape) for m in masks] == [(30, 90), (45, 31)] and all(m.dtype == torch.uint8 for m in masks)


def test_bad_arguments_fail_fast_and_clearly(tmp_path):
    proc = run_predict(f"input={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0 and "predict.py needs ckpt=<run .ckpt> and input=" in proc.stderr
    assert "(ckpt not set)" in proc.stderr
    proc = run_predict(f"ckpt={tmp_path}/nope.ckpt", f"input={tmp_path}/missing", cwd=tmp_path)
    assert proc.returncode != 0 and f"input {tmp_path}/missing does not exist" in proc.stderr


def test_no_readable_image_is_an_error(checkpoint, tmp_path, caplog):
    from tasks.prediction.run import predict

    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "bad.png").write_bytes(b"garbage")
    cfg = OmegaConf.load(ROOT / "conf" / "predict.yaml")
    cfg.pop("hydra"), cfg.pop("defaults")
    cfg.merge_with({"ckpt": str(checkpoint("classification")), "input": str(tmp_path / "only"),
                    "output": str(tmp_path / "out"), "num_workers": 0})
    with pytest.raises(RuntimeError, match="none of the 1 input file"):
        predict(cfg)
    assert "cannot read bad.png" in caplog.text


def test_the_preprocessing_record_travels_in_the_checkpoint(tmp_path_factory):
    """Every checkpoint carries the preprocessing record; predict.py reads it (not the data options)."""
    from data.preprocessing import Preprocessing
    from tasks.restore import load_checkpoint

    for task in ("classification", "segmentation"):
        ckpt = trained(task, tmp_path_factory.getbasetemp() / "trained")
        stored = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["preprocessing"]
        loaded = load_checkpoint(ckpt)
        assert loaded.preprocessing == Preprocessing.from_dict(stored)
        assert loaded.preprocessing == Preprocessing.from_config(loaded.config, 32)  # made from the same values
        assert loaded.preprocessing.task == task and loaded.preprocessing.mean == (0.485, 0.456, 0.406)
    assert loaded.preprocessing.mask_pad_value == 255 and loaded.preprocessing.size_divisibility == 32
