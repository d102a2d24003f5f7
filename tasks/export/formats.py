"""Writing an `ExportGraph` to a file (ONNX, TorchScript, ExportedProgram) with its metadata, and running the written
file again for the parity check: `runner(path)(input) -> tuple of numpy arrays` in the graph's output order."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbones.errors import UserError

from .graph import ExportGraph, open_thresholds
from .metadata import FILE, KEY, dumps

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported_program": ".pt2"}
DEFAULT_OPSET = 17
MIN_OPSET = 16  # torchvision's RoiAlign symbolic with aligned=True (half_pixel) needs 16


class ExportError(UserError):
    """The model cannot be written in the asked format, or the written file disagrees with the model (export.py
    prints it as one line and exits 2)."""


Runner = Callable[[Tensor], tuple[np.ndarray, ...]]


def export_onnx(graph: ExportGraph, example: Tensor, path: Path, metadata: dict[str, Any],
                opset: int = DEFAULT_OPSET) -> None:
    """torch's TorchScript-based ONNX exporter (`dynamo=False`): it traces torchvision's R-CNNs with dynamic image
    sizes and NMS in the graph, where the dynamo exporter stops at their data-dependent shapes."""
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset={opset} is too old: Cerberus exports with ONNX opset {MIN_OPSET} or newer (RoIAlign "
                          f"with half-pixel alignment), e.g. opset={DEFAULT_OPSET}")
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), open_thresholds(graph) as thresholds:
            warnings.simplefilter("ignore")  # tracer and deprecation notices of the legacy exporter: nothing to act on
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[graph.input_name], output_names=graph.output_names,
                              dynamic_axes=graph.dynamic_axes(), do_constant_folding=True,
                              keep_initializers_as_inputs=False)
    except Exception as err:  # noqa: BLE001 - the exporter raises many kinds; each means "this cannot be exported"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"ONNX export at opset {opset} failed: {type(err).__name__}: {first[:400]}. Try another "
                          f"opset (opset=18) or format=torchscript") from err
    model = onnx.load_from_string(buffer.getvalue())
    _write_thresholds(model, thresholds)
    entry = model.metadata_props.add()
    entry.key, entry.value = KEY, dumps(metadata)
    onnx.save(model, str(path))


def _write_thresholds(model: Any, thresholds: dict[str, float]) -> None:
    """Set the R-CNN score-threshold initializers (traced at -1, `open_thresholds`) to their real values."""
    from onnx import numpy_helper

    found = {init.name: init for init in model.graph.initializer}
    for name, value in thresholds.items():
        if name not in found:
            raise ExportError(f"internal: the traced graph has no initializer {name}; the score threshold cannot be "
                              "set (please report this with the torch version)")
        found[name].CopyFrom(numpy_helper.from_array(np.array(value, dtype=np.float32), name))


def export_torchscript(graph: ExportGraph, example: Tensor, path: Path, metadata: dict[str, Any]) -> None:
    """`torch.jit.trace` (as the ONNX export; shapes stay symbolic), the metadata as an extra file."""
    try:
        with warnings.catch_warnings(), torch.no_grad(), open_thresholds(graph) as thresholds:
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(graph, (example,), check_trace=False)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"TorchScript tracing failed: {type(err).__name__}: {str(err)[:400]}") from err
    state = traced.state_dict()
    for name, value in thresholds.items():
        state[name].fill_(value)  # the traced module's own buffer: the real threshold from here on
    torch.jit.save(traced, str(path), _extra_files={FILE: dumps(metadata)})


def export_program(graph: ExportGraph, example: Tensor, path: Path, metadata: dict[str, Any]) -> None:
    """`torch.export` with dynamic batch (and, for segmentation, sides in multiples of 32; a classifier keeps the
    example's size, its preprocessing crop); models without an R-CNN head only."""
    if graph.rcnn:
        raise ExportError("format=exported_program: torch.export cannot trace torchvision's R-CNN heads (their "
                          "number of boxes depends on the data, pytorch/pytorch#118884); use format=onnx or "
                          "format=torchscript for detection")
    from torch.export import Dim

    if any(h.kind == "segmentation" for h in graph.model.heads.values()):  # sides: multiples of the padding
        h, w = (32 * Dim(n, min=1, max=128) for n in ("h32", "w32"))
    else:  # the crop size the predictor feeds: torch.export specialises a classifier's small sizes apart anyway
        h, w = None, None
    shapes = ({0: Dim("batch", min=1, max=1024), 2: h, 3: w},)
    example = torch.cat([example, example]) if len(example) == 1 else example  # batch 1 would be specialised
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(graph, (example,), dynamic_shapes=shapes)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"torch.export failed: {type(err).__name__}: {str(err).strip()[:400]}; use format=onnx "
                          "or format=torchscript") from err
    torch.export.save(program, str(path), extra_files={FILE: dumps(metadata)})


def onnx_runner(path: Path, threads: int | None = None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: tuple(session.run(None, {name: x.numpy()}))


def torchscript_runner(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.10+ deprecates TorchScript; it still loads and runs
        module = torch.jit.load(str(path), map_location="cpu")

    def run(x: Tensor) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            return tuple(t.numpy() for t in module(x))

    return run


def program_runner(path: Path) -> Runner:
    module = torch.export.load(str(path)).module()

    def run(x: Tensor) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            return tuple(t.numpy() for t in module(x))

    return run


WRITERS = {"onnx": export_onnx, "torchscript": export_torchscript, "exported_program": export_program}
RUNNERS = {"onnx": onnx_runner, "torchscript": torchscript_runner, "exported_program": program_runner}
