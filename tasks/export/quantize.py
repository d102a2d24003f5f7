"""INT8 post-training static quantization of an exported ONNX classifier or segmenter with onnxruntime's quantizer,
calibrated on training images, and its accuracy against the FP32 file on the validation set.

Calibration and evaluation read the run's own data (the config stored in the checkpoint) through the checkpoint's
eval preprocessing: the images the model would see at prediction time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from rich.progress import Progress

from .formats import ExportError, onnx_runner
from .metadata import KEY, dumps

log = logging.getLogger(__name__)
QUANTIZABLE = ("classification", "segmentation")


@dataclass
class Accuracy:
    metric: str  # "top-1" or "mIoU"
    fp32: float
    int8: float
    images: int

    @property
    def change_points(self) -> float:
        return 100.0 * (self.int8 - self.fp32)


def _datamodule(loaded: Any) -> Any:
    """The run's data module, set up once per loaded checkpoint (calibration and validation share it)."""
    from hydra.utils import instantiate

    if getattr(loaded, "datamodule", None) is None:
        datamodule = instantiate(loaded.config.data)
        datamodule.use_preprocessing(loaded.preprocessing)
        datamodule.prepare_data()
        datamodule.setup("fit")
        loaded.datamodule = datamodule
    return loaded.datamodule


def _batch(images: list[torch.Tensor], loaded: Any) -> np.ndarray:
    """The model input of eval-transformed images: stacked (classification) or padded (segmentation)."""
    if loaded.task == "classification":
        return torch.stack(images).numpy()
    return loaded.preprocessing.pad_images(images).numpy()


def calibration_batches(loaded: Any, num_images: int, seed: int = 0) -> Iterator[np.ndarray]:
    """`num_images` training images (a seeded sample, eval preprocessing), one per batch."""
    dataset = _datamodule(loaded).dataset("train", train=False)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_images].tolist()
    for i in order:
        yield _batch([dataset[i][0]], loaded)


def quantize_static_int8(fp32: Path, out: Path, batches: Iterator[np.ndarray], method: str = "minmax") -> int:
    """onnxruntime's static INT8 of `fp32` written to `out`: QDQ, per-channel int8 weights, uint8 activations whose
    ranges `method` calibrates on `batches` (the graph's one input each); returns how many batches it used."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ExportError(f"calibration.method={method}: use one of {', '.join(methods)}")
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.seen = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            self.seen += 1
            return {name: batch}

    reader = Reader()
    prepared = out.with_name(out.stem + ".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared))  # shape inference + graph optimisation, as onnxruntime advises
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=methods[method])
    finally:
        prepared.unlink(missing_ok=True)
    return reader.seen


def quantize_int8(fp32: Path, out: Path, loaded: Any, num_images: int, metadata: dict[str, Any],
                  method: str = "minmax") -> tuple[float, int]:
    """Write the static-INT8 model of `fp32` to `out` (`quantize_static_int8`) calibrated on `num_images` training
    images, with the metadata; returns (seconds it took, images calibrated on)."""
    if loaded.task not in QUANTIZABLE:
        raise ExportError(f"quantize=int8 is built for {' and '.join(QUANTIZABLE)} models, not {loaded.task}: "
                          "onnxruntime's static quantizer does not cover the R-CNN's NMS and RoIAlign graph; export "
                          "FP32 (quantize=null)")
    start = time.perf_counter()
    seen = quantize_static_int8(fp32, out, calibration_batches(loaded, num_images), method)
    if seen == 0:
        raise ExportError("quantize=int8 found no training images to calibrate on; check the run's data options")
    model = onnx.load(str(out))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = KEY
    entry.value = dumps({**metadata, "quantization": {"type": "int8-static-qdq", "calibration_images": seen,
                                                     "calibration_method": method}})
    onnx.save(model, str(out))
    return time.perf_counter() - start, seen


def validation_accuracy(fp32: Path, int8: Path, loaded: Any, max_images: int | None = None) -> Accuracy:
    """Top-1 (classification) or mIoU (segmentation, classes present in the labels or predictions) of both files on
    the validation split, one image per call."""
    dataset = _datamodule(loaded).dataset("val", train=False)
    runners = {"fp32": onnx_runner(fp32), "int8": onnx_runner(int8)}
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    classes = len(loaded.class_names)
    correct = dict.fromkeys(runners, 0)
    confusion = {k: np.zeros((classes, classes), np.int64) for k in runners}
    with Progress(transient=True) as progress:
        bar = progress.add_task("validation: FP32 and INT8", total=n)
        for i in range(n):
            image, target = dataset[i]
            x = torch.from_numpy(_batch([image], loaded))
            for key, run in runners.items():
                logits = run(x)[0]
                if loaded.task == "classification":
                    correct[key] += int(logits[0].argmax() == int(target))
                else:
                    pred = logits[0, :, : image.shape[-2], : image.shape[-1]].argmax(0)
                    truth = np.asarray(target)
                    valid = truth < classes  # the ignore label is left out
                    np.add.at(confusion[key], (truth[valid], pred[valid]), 1)
            progress.advance(bar)
    if loaded.task == "classification":
        return Accuracy("top-1", correct["fp32"] / n, correct["int8"] / n, n)
    return Accuracy("mIoU", _miou(confusion["fp32"]), _miou(confusion["int8"]), n)


def _miou(confusion: np.ndarray) -> float:
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")
