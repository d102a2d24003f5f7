"""predict.py on an exported ONNX file: the checkpoint predictor's steps with onnxruntime, numpy and Pillow, and the
same output files and pictures (`tasks/prediction/outputs.py`, `tasks/pictures.py`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from rich.progress import Progress

from backbones.errors import UserError

from ..coco_results import MASK_THRESHOLD
from ..prediction.files import (
    Failure,
    ImageFiles,
    default_output,
    list_images,
    output_names,
    progress_columns,
    read_rgb,
    summarize,
)
from ..prediction.outputs import (
    DetectionFiles,
    draw_joint,
    finish_segmentation,
    save_picture,
    top_k,
    write_classification,
    write_labels,
    write_mask,
)
from .model import ExportedModel
from .preprocess import classification_input, pad_to_batch, segmentation_input, to_float

log = logging.getLogger(__name__)


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _source_index(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear (align_corners=False) source positions: lower index, upper index, upper weight."""
    scale = np.float32(size_in) / np.float32(size_out)
    src = np.maximum((np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    low = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (src - low).astype(np.float32)


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) -> (K, H, W) bilinear, as F.interpolate(mode="bilinear", align_corners=False)."""
    (r0, r1, rw), (c0, c1, cw) = _source_index(maps.shape[1], size[0]), _source_index(maps.shape[2], size[1])
    rows = maps[:, r0] * (1 - rw)[None, :, None] + maps[:, r1] * rw[None, :, None]
    return rows[:, :, c0] * (1 - cw)[None, None, :] + rows[:, :, c1] * cw[None, None, :]


class Handler:
    """One task's preprocessing, batching and outputs on the exported graph."""

    batched = True

    def __init__(self, model: ExportedModel, files: ImageFiles, out_dir: Path, cfg: DictConfig) -> None:
        self.model, self.files, self.out_dir, self.cfg = model, files, out_dir, cfg
        self.meta = model.metadata
        self.record = self.meta["preprocessing"]
        self.class_names: list[str] = list(self.meta["class_names"])

    def prepare(self, image: Image.Image) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, items: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def finish(self, console: Console) -> list[Path]:
        raise NotImplementedError


class Classification(Handler):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.k = max(1, min(int(self.cfg.topk), len(self.class_names)))
        self.rows: list[tuple[str, list[str], list[float]]] = []

    def prepare(self, image: Image.Image) -> dict[str, Any]:
        return {"input": classification_input(image, self.record)}

    def run(self, items: list[dict[str, Any]]) -> None:
        logits = self.model(np.stack([x["input"] for x in items]))["logits"]
        labels, scores = top_k(softmax(logits, 1), self.k)
        for item, lbl, sc in zip(items, labels.tolist(), scores.tolist()):
            self.rows.append((self.files.names[item["index"]], [self.class_names[i] for i in lbl], sc))

    def finish(self, console: Console) -> list[Path]:
        formats = [self.cfg.formats] if isinstance(self.cfg.formats, str) else list(self.cfg.formats)
        return write_classification(self.out_dir, self.rows, self.k, formats, console)


class Segmentation(Handler):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.png_names = output_names(self.files.names)
        self.count = 0

    def prepare(self, image: Image.Image) -> dict[str, Any]:
        item: dict[str, Any] = {"input": segmentation_input(image, self.record), "size": (image.height, image.width)}
        if self.cfg.overlay:
            item["original"] = np.asarray(image, dtype=np.uint8)
        return item

    def run(self, items: list[dict[str, Any]]) -> None:
        inputs = [x["input"] for x in items]
        batch = pad_to_batch(inputs, self.record["size_divisibility"], self.record["mean"])
        probs = softmax(self.model(batch)["logits"], 1)
        for p, x, item in zip(probs, inputs, items):
            p = p[:, : x.shape[-2], : x.shape[-1]]
            if tuple(p.shape[-2:]) != tuple(item["size"]):
                p = resize_bilinear(p, item["size"])
            write_mask(self.out_dir, self.png_names[item["index"]], p.argmax(0).astype(np.uint8),
                       item.get("original"), self.class_names)
            self.count += 1

    def finish(self, console: Console) -> list[Path]:
        return finish_segmentation(self.out_dir, self.count, self.class_names, bool(self.cfg.overlay), console)


class Detection(Handler):
    batched = False  # the exported R-CNN takes one image per call

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.drawn_names = output_names(self.files.names)
        self.out = DetectionFiles(self.out_dir, self.class_names, self.meta.get("category_ids"),
                                  float(self.cfg.score_threshold), bool(self.cfg.overlay))

    def prepare(self, image: Image.Image) -> dict[str, Any]:
        return {"input": to_float(image), "original": np.asarray(image, dtype=np.uint8)}

    def run(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            out = self.model(item["input"])
            masks = out["masks"][:, 0] > MASK_THRESHOLD if "masks" in out else None
            i = item["index"]
            self.out.add(i + 1, self.files.names[i], item["original"], out["boxes"], out["labels"], out["scores"],
                         masks, self.drawn_names[i])

    def finish(self, console: Console) -> list[Path]:
        return self.out.finish(console)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))


class Multitask(Handler):
    """A joint model's heads (the file's `heads`: name -> kind), each writing what its checkpoint predictor writes
    (`tasks/prediction/multitask.py`), and one picture with everything. One image per call: with an R-CNN head the
    graph takes one image; without one, an image padded alone is what the checkpoint predictor's per-size batches
    give each image."""

    batched = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        heads: dict[str, str] = dict(self.meta["heads"])
        several = len(heads) > 1
        self.names = {kind: name for name, kind in heads.items()}  # kind -> head name
        self.output = lambda kind, leaf: f"{self.names[kind]}.{leaf}" if several else leaf
        self.rcnn = next((k for k in ("detection", "instance_segmentation") if k in self.names), None)
        self.mask_names = ["background", *self.class_names]  # the joint segmentation head's classes
        self.png_names = output_names(self.files.names)
        self.seg_count = 0
        self.labels: list[tuple[str, list[float]]] = []
        self.detections = (DetectionFiles(self.out_dir, self.class_names, self.meta.get("category_ids"),
                                          float(self.cfg.score_threshold), False) if self.rcnn else None)

    def prepare(self, image: Image.Image) -> dict[str, Any]:
        return {"input": to_float(image), "original": np.asarray(image, dtype=np.uint8)}

    def run(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            x = item["input"]
            out = self.model(x if self.rcnn else pad_to_batch([x], self.record["size_divisibility"],
                                                             self.record["mean"]))
            i, (h, w) = item["index"], x.shape[-2:]
            detections, mask, probs = None, None, None
            if self.rcnn:
                detections = {k: out[self.output(self.rcnn, k)] for k in ("boxes", "labels", "scores")}
                if self.output(self.rcnn, "masks") in out:
                    detections["masks"] = out[self.output(self.rcnn, "masks")][:, 0] > MASK_THRESHOLD
                self.detections.add(i + 1, self.files.names[i], item["original"], detections["boxes"],
                                    detections["labels"], detections["scores"], detections.get("masks"), "")
            if "segmentation" in self.names:
                logits = out[self.output("segmentation", "logits")][0, :, :h, :w]  # the padding cropped
                mask = softmax(logits, 0).argmax(0).astype(np.uint8)
                write_mask(self.out_dir, self.png_names[i], mask, None, self.mask_names)
                self.seg_count += 1
            if "classification" in self.names:
                probs = sigmoid(out[self.output("classification", "logits")][0]).tolist()
                self.labels.append((self.files.names[i], probs))
            if self.cfg.overlay:
                drawn = draw_joint(item["original"], self.class_names, float(self.cfg.score_threshold), mask,
                                   self.mask_names, detections, probs)
                save_picture(drawn, self.out_dir / "drawn" / self.png_names[i])

    def finish(self, console: Console) -> list[Path]:
        written: list[Path] = []
        if self.detections is not None:
            written += self.detections.finish(console)
        if "segmentation" in self.names:
            written += finish_segmentation(self.out_dir, self.seg_count, self.mask_names, False, console)
        if "classification" in self.names:
            formats = [self.cfg.formats] if isinstance(self.cfg.formats, str) else list(self.cfg.formats)
            written += write_labels(self.out_dir, self.labels, self.class_names, formats, console)
        return written + ([self.out_dir / "drawn"] if self.cfg.overlay else [])


HANDLERS: dict[str, type[Handler]] = {"classification": Classification, "segmentation": Segmentation,
                                      "detection": Detection, "instance_segmentation": Detection,
                                      "multitask": Multitask}


def _batches(files: ImageFiles, prepare: Callable[[Image.Image], dict[str, Any]], size: int,
             ) -> Any:
    """(items, failures) per batch of `size` files; an unreadable file is a `Failure`, never dropped silently."""
    items: list[dict[str, Any]] = []
    failures: list[Failure] = []
    for i, path in enumerate(files.paths):
        try:
            items.append({"index": i, **prepare(read_rgb(path))})
        except Exception as err:  # noqa: BLE001 - any decoder error means "unreadable": report it, go on
            failures.append(Failure(i, files.names[i], f"{type(err).__name__}: {err}"))
        if len(items) + len(failures) == size:
            yield items, failures
            items, failures = [], []
    if items or failures:
        yield items, failures


def predict_exported(cfg: DictConfig) -> dict[str, int]:
    """Run the exported file `cfg.ckpt` on `cfg.input`; returns {"images": written, "failed": unreadable}."""
    files = list_images(cfg.input)
    model = ExportedModel(cfg.ckpt, str(cfg.device))
    if model.task not in HANDLERS:
        raise UserError(f"{model.path}: predict.py on an exported {model.task} model is not built yet (tasks: "
                        f"{', '.join(HANDLERS)}); predict with its checkpoint")
    base = default_output(model.path)
    out_dir = Path(cfg.output) if cfg.get("output") else base.with_name(base.name + "_onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = HANDLERS[model.task](model, files, out_dir, cfg)
    console = Console()
    versions = model.metadata.get("versions", {})
    console.print(f"{model.task} model {model.path} (exported from {model.metadata.get('source_checkpoint')} by "
                  f"Cerberus {versions.get('cerberus', '?')}, {len(handler.class_names)} classes) on "
                  f"{len(files.paths)} image(s), onnxruntime {', '.join(model.session.get_providers())}",
                  soft_wrap=True, highlight=False)
    done, failed = 0, []
    with Progress(*progress_columns(), console=console) as progress:
        bar = progress.add_task("predict", total=len(files.paths))
        for items, failures in _batches(files, handler.prepare, int(cfg.batch_size) if handler.batched else 1):
            for f in failures:
                log.warning("cannot read %s (skipped): %s", f.name, f.reason)
            failed += failures
            if items:
                handler.run(items)
                done += len(items)
            progress.advance(bar, len(items) + len(failures))
    written = handler.finish(console) if done else []
    return summarize(console, written, failed, done, len(files.paths), out_dir)


__all__: Sequence[str] = ["predict_exported", "resize_bilinear", "softmax"]
