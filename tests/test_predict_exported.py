"""predict.py on an exported ONNX file: onnxruntime, numpy and Pillow only (no torch imported), and the same files
and pictures as predict.py on the checkpoint, for classification, segmentation, detection and instance
segmentation, on images of several sizes plus an unreadable file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from omegaconf import OmegaConf
from PIL import Image
from pycocotools import mask as mask_utils
from test_predict import run_predict, trained

from tasks.export.run import export

SIZES = {"a.png": (64, 64), "b.jpg": (80, 52), "sub/c.png": (47, 71)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return lambda task: trained(task, tmp_path_factory.getbasetemp() / "trained")


def inputs(folder: Path) -> Path:
    rng = np.random.default_rng(5)
    for name, (w, h) in SIZES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        # smooth shapes rather than noise: an untrained model's scores are far from ties
        y, x = np.mgrid[:h, :w]
        image = np.stack([(x * 255 // w), (y * 255 // h), rng.integers(0, 255) + 0 * x], -1).astype(np.uint8)
        Image.fromarray(image).save(folder / name)
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def exported(ckpt: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model.onnx"
    export(OmegaConf.create({"ckpt": str(ckpt), "format": "onnx", "output": str(out), "opset": 17, "check": True}))
    return out


def both(task: str, checkpoint, tmp_path: Path, *options: str) -> tuple[Path, Path, str]:
    """Predict with the checkpoint and with its ONNX export; (checkpoint output, ONNX output, ONNX stdout)."""
    ckpt = checkpoint(task)
    onnx_file = exported(ckpt, tmp_path)
    images = inputs(tmp_path / "in")
    for source, out in ((ckpt, "from_ckpt"), (onnx_file, "from_onnx")):
        proc = run_predict(f"ckpt={source}", f"input={images}", f"output={tmp_path / out}", "batch_size=2",
                           "num_workers=0", *options, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "1 unreadable file(s) skipped: broken.png" in proc.stdout
    return tmp_path / "from_ckpt", tmp_path / "from_onnx", proc.stdout


def pictures_agree(a: Path, b: Path) -> None:
    """The same picture: equal size, at least 99.9 % of the pixels identical (a box edge at a whole-pixel boundary
    may move by one pixel when coordinates differ by 1e-4 px)."""
    x, y = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    assert x.shape == y.shape, (a, x.shape, y.shape)
    assert (x == y).all(-1).mean() >= 0.999, a


def test_classification(checkpoint, tmp_path):
    ckpt_out, onnx_out, stdout = both("classification", checkpoint, tmp_path, "topk=2")
    assert "classification model" in stdout and "onnxruntime CPUExecutionProvider" in stdout
    a = json.loads((ckpt_out / "predictions.json").read_text())
    b = json.loads((onnx_out / "predictions.json").read_text())
    assert [r["file"] for r in a] == [r["file"] for r in b] == sorted(SIZES)
    for x, y in zip(a, b):
        assert x["labels"] == y["labels"] and np.allclose(x["scores"], y["scores"], atol=2e-6)
    assert (onnx_out / "predictions.csv").read_text().splitlines()[0] == "file,label1,score1,label2,score2"


def test_segmentation(checkpoint, tmp_path):
    ckpt_out, onnx_out, _ = both("segmentation", checkpoint, tmp_path)
    for name in SIZES:
        png = str(Path(name).with_suffix(".png"))
        a, b = np.asarray(Image.open(ckpt_out / "masks" / png)), np.asarray(Image.open(onnx_out / "masks" / png))
        assert a.shape == SIZES[name][::-1] and np.array_equal(a, b), name
        assert np.array_equal(np.asarray(Image.open(ckpt_out / "overlays" / png)),
                              np.asarray(Image.open(onnx_out / "overlays" / png)))


@pytest.mark.parametrize("task", ["detection", "instance_segmentation"])
def test_detection_and_instance_segmentation(task, checkpoint, tmp_path):
    ckpt_out, onnx_out, _ = both(task, checkpoint, tmp_path, "score_threshold=0.0")
    a = json.loads((ckpt_out / "detections.json").read_text())
    b = json.loads((onnx_out / "detections.json").read_text())
    assert a and len(a) == len(b)
    for x, y in zip(a, b):
        assert (x["image_id"], x["category_id"]) == (y["image_id"], y["category_id"])
        assert np.allclose(x["bbox"], y["bbox"], atol=0.011) and abs(x["score"] - y["score"]) <= 1e-4 + 1e-5
        if task == "instance_segmentation":
            iou = mask_utils.iou([x["segmentation"]], [y["segmentation"]], [0])[0][0]
            assert iou >= 0.99
    assert (ckpt_out / "images.json").read_text() == (onnx_out / "images.json").read_text()
    for name in SIZES:
        png = str(Path(name).with_suffix(".png"))
        pictures_agree(ckpt_out / "drawn" / png, onnx_out / "drawn" / png)


def test_no_torch_on_the_onnx_path(checkpoint, tmp_path):
    onnx_file = exported(checkpoint("segmentation"), tmp_path)
    images = inputs(tmp_path / "in")
    code = ("import runpy, sys\n"
            f"sys.argv = ['predict.py', 'ckpt={onnx_file}', 'input={images}', 'num_workers=0']\n"
            f"runpy.run_path({str(ROOT / 'predict.py')!r}, run_name='__main__')\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules)\n"
            "print('imported:', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported: []" in proc.stdout
    assert (tmp_path / "predictions" / "model_onnx" / "masks" / "a.png").is_file()  # the default output


def test_a_file_without_cerberus_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    images = inputs(tmp_path / "in")
    proc = run_predict(f"ckpt={tmp_path / 'plain.onnx'}", f"input={images}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "has no 'cerberus' metadata: it was not written by Cerberus' export.py" in proc.stderr
