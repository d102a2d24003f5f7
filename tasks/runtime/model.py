"""An exported ONNX file and the metadata that `export.py` put in it, run with onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backbones.errors import UserError

from ..export.metadata import KEY, loads


class ExportedModel:
    """`model(x)` -> {output name: array} for the graph's one input `x` (float32); `metadata` is the file's Cerberus
    record (task, class names, preprocessing, ...)."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers(device))
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for every kind of bad file
            raise UserError(f"{self.path} cannot be read by onnxruntime: {str(err).strip()[:300]}; pass an ONNX "
                            "file written by `python export.py ckpt=...`") from None
        stored = self.session.get_modelmeta().custom_metadata_map.get(KEY)
        if stored is None:
            raise UserError(f"{self.path} has no '{KEY}' metadata: it was not written by Cerberus' export.py, which "
                            "stores the classes and preprocessing predict.py needs; export the checkpoint with "
                            "`python export.py ckpt=<run .ckpt>`")
        try:
            self.metadata: dict[str, Any] = loads(stored, str(self.path))
        except ValueError as err:
            raise UserError(str(err)) from None
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def task(self) -> str:
        return str(self.metadata["task"])

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})))


def providers(device: str) -> list[str]:
    """onnxruntime's execution providers for predict.py's `device`: auto (CUDA when this onnxruntime has it, else
    the CPU), cpu, cuda / cuda:N."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
        raise UserError(f"device={device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu), or use "
                        "device=cpu")
    if device != "auto" and not device.startswith("cuda"):
        raise UserError(f"device={device}: an exported model runs on auto, cpu or cuda")
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
