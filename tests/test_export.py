"""export.py: every task's checkpoint written as ONNX (and TorchScript / torch.export where they apply), the file
checked against the PyTorch model at several sizes and batch sizes (one input with no objects), the metadata that
makes the file enough to predict, and clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from omegaconf import OmegaConf
from test_predict import trained
from torch import nn

from tasks.export.formats import ExportError, export_onnx, onnx_runner
from tasks.export.graph import ExportGraph
from tasks.export.parity import compare, sample_inputs
from tasks.export.run import export
from tasks.restore import load_checkpoint

TASKS = ("classification", "segmentation", "detection", "instance_segmentation")
OUTPUTS = {"classification": ["logits"], "segmentation": ["logits"], "detection": ["boxes", "labels", "scores"],
           "instance_segmentation": ["boxes", "labels", "scores", "masks"]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return lambda task: trained(task, tmp_path_factory.getbasetemp() / "trained")


def options(ckpt: Path, out: Path, **kw) -> dict:
    return OmegaConf.create({"ckpt": str(ckpt), "format": "onnx", "output": str(out), "opset": 17, "check": True,
                             **kw})


def metadata_of(path: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["cerberus"])


@pytest.mark.parametrize("task", TASKS)
def test_onnx_export_matches_the_model_at_every_size(task, checkpoint, tmp_path):
    ckpt = checkpoint(task)
    result = export(options(ckpt, tmp_path / "model.onnx"))
    checks = result["checks"]
    shapes = {c.shape for c in checks}
    assert len(shapes) >= 3 and all(c.ok for c in checks), [(c.shape, c.output, c.note) for c in checks]
    # dynamic batch (classification, segmentation) and sizes: batches 1-3, several sides
    if task in ("classification", "segmentation"):
        assert {s[0] for s in shapes} >= {1, 2, 3} and len({s[2:] for s in shapes}) >= 2
    else:
        assert len({s[1:] for s in shapes}) >= 3
    loaded = load_checkpoint(ckpt)
    meta = metadata_of(tmp_path / "model.onnx")
    assert meta["task"] == task and meta["class_names"] == loaded.class_names
    assert meta["preprocessing"] == loaded.preprocessing.to_dict()
    assert meta["outputs"] == OUTPUTS[task] and meta["opset"] == 17
    assert {"cerberus", "torch", "torchvision"} <= set(meta["versions"])
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == OUTPUTS[task]
    assert session.get_inputs()[0].name == ("image" if task in ("detection", "instance_segmentation") else "images")
    if task in ("detection", "instance_segmentation"):
        assert meta["category_ids"] == (loaded.category_ids or None)


@pytest.mark.parametrize("task", ["detection", "instance_segmentation"])
def test_detection_with_no_detections_runs_in_onnxruntime(task, checkpoint, tmp_path):
    """Nothing above the score threshold on any input (torchvision's export crashed in onnxruntime there), in a
    graph traced through the path with detections."""
    loaded = load_checkpoint(checkpoint(task))
    model = loaded.module.model.eval()
    model.heads["detection"].roi_heads.score_thresh = 1.01  # no score reaches it
    graph = ExportGraph(model).eval()
    inputs = sample_inputs(graph, loaded.preprocessing)
    export_onnx(graph, inputs[0], tmp_path / "none.onnx", {"task": task})
    checks = compare(graph, onnx_runner(tmp_path / "none.onnx"), inputs)
    assert all(c.ok for c in checks) and {c.count for c in checks} == {0}
    boxes = onnx_runner(tmp_path / "none.onnx")(torch.rand(3, 70, 90))[0]
    assert boxes.shape == (0, 4)
    # the graph was traced with detections (not through NMS's early return on none): with the threshold in the file
    # set to 0, the same file detects, as the model does at 0
    from tasks.export.formats import _write_thresholds

    exported = onnx.load(str(tmp_path / "none.onnx"))
    _write_thresholds(exported, {"model.heads.detection.roi_heads.score_thresh": 0.0})
    onnx.save(exported, str(tmp_path / "open.onnx"))
    model.heads["detection"].roi_heads.score_thresh = 0.0
    checks = compare(graph, onnx_runner(tmp_path / "open.onnx"), inputs)
    assert all(c.ok for c in checks) and min(c.count for c in checks) > 0


@pytest.mark.parametrize("export_format", ["torchscript", "exported_program"])
@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_torchscript_and_torch_export(task, export_format, checkpoint, tmp_path):
    suffix = {"torchscript": ".torchscript.pt", "exported_program": ".pt2"}[export_format]
    result = export(options(checkpoint(task), tmp_path / f"model{suffix}", format=export_format))
    assert result["checks"] and all(c.ok for c in result["checks"])
    if export_format == "torchscript":
        files = {"cerberus.json": ""}
        torch.jit.load(str(result["path"]), _extra_files=files)
    else:
        files = {"cerberus.json": ""}
        torch.export.load(str(result["path"]), extra_files=files)
    assert json.loads(files["cerberus.json"])["task"] == task


def test_torchscript_detection_and_no_torch_export_for_rcnn(checkpoint, tmp_path):
    result = export(options(checkpoint("detection"), tmp_path / "det.torchscript.pt", format="torchscript"))
    assert all(c.ok for c in result["checks"])
    with pytest.raises(ExportError, match="torch.export cannot trace torchvision's R-CNN"):
        export(options(checkpoint("detection"), tmp_path / "det.pt2", format="exported_program"))


class _Spectrum(nn.Module):
    """A graph with an operator the ONNX exporter does not know (an FFT)."""

    input_name, output_names, rcnn = "images", ["logits"], False

    def forward(self, x):
        return (torch.fft.rfft2(x).abs().mean((2, 3)),)

    def dynamic_axes(self):
        return {"images": {0: "batch"}}


def test_bad_exports_fail_with_a_clear_message(checkpoint, tmp_path):
    with pytest.raises(ExportError, match=r"ONNX export at opset 17 failed: .*fft.*Try another opset"):
        export_onnx(_Spectrum(), torch.rand(1, 3, 8, 8), tmp_path / "fft.onnx", {})
    with pytest.raises(ExportError, match="opset=11 is too old"):
        export(options(checkpoint("classification"), tmp_path / "m.onnx", opset=11))


def test_a_file_that_disagrees_is_reported():
    """The parity check itself: a runner whose logits are off by 1e-3, or that finds one box less, fails."""
    torch.manual_seed(0)
    from backbones import build_body
    from data.preprocessing import Preprocessing
    from tasks.classification.model import ClassificationModel

    graph = ExportGraph(ClassificationModel(build_body({"name": "resnet18"}), 3)).eval()
    inputs = sample_inputs(graph, Preprocessing("classification", size=32))

    def off(x):
        with torch.no_grad():
            return tuple(t.numpy() + 1e-3 for t in graph(x))

    checks = compare(graph, off, inputs)
    assert checks and not any(c.ok for c in checks) and "differs by" in checks[0].note


def test_cli_summary_and_argument_errors(checkpoint, tmp_path):
    ckpt = checkpoint("classification")
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}

    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "export.py"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    proc = run(f"ckpt={ckpt}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = Path(ckpt).with_suffix(".onnx")
    assert written.is_file() and f"wrote {written}" in proc.stdout.replace("\n", "")
    assert "parity: all 4 checks within tolerance" in proc.stdout
    proc = run("--help")
    assert proc.returncode == 0 and "== Cerberus export ==" in proc.stdout and "opset: 17" in proc.stdout
    proc = run("format=tflite", f"ckpt={ckpt}")
    assert proc.returncode == 2 and "format=tflite: use one of onnx, torchscript, exported_program" in proc.stderr
    proc = run("ckpt=missing.ckpt")
    assert proc.returncode == 2 and "checkpoint missing.ckpt does not exist" in proc.stderr
    written.unlink()


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_int8_quantization_and_its_accuracy(task, checkpoint, tmp_path):
    result = export(options(checkpoint(task), tmp_path / "model.onnx", quantize="int8",
                            calibration={"num_images": 3, "method": "minmax"}, val_images=None))
    int8 = result["int8_path"]
    assert int8 == tmp_path / "model.int8.onnx" and int8.stat().st_size < 0.5 * (tmp_path / "model.onnx").stat().st_size
    assert result["calibration_images"] == 3  # of the 4 (segmentation) or 24 training images
    meta = metadata_of(int8)
    assert meta["task"] == task and meta["quantization"]["calibration_images"] == 3
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    accuracy = result["accuracy"]
    assert accuracy.metric == ("top-1" if task == "classification" else "mIoU") and accuracy.images > 0
    assert 0 <= accuracy.fp32 <= 1 and 0 <= accuracy.int8 <= 1
    # the FP32 file's figure is the checkpoint's own validation metric, measured through the ONNX file
    loaded = load_checkpoint(checkpoint(task))
    if task == "classification":
        from tasks.export.quantize import _datamodule

        dataset = _datamodule(loaded).dataset("val", train=False)
        with torch.no_grad():
            right = sum(int(loaded.module.model(dataset[i][0][None])["classification"].argmax() == dataset[i][1])
                        for i in range(len(dataset)))
        assert accuracy.fp32 == pytest.approx(right / len(dataset))


def test_int8_is_refused_where_it_does_not_apply(checkpoint, tmp_path):
    with pytest.raises(ExportError, match="quantize=int8 is built for classification and segmentation"):
        export(options(checkpoint("detection"), tmp_path / "d.onnx", quantize="int8",
                       calibration={"num_images": 2, "method": "minmax"}))
