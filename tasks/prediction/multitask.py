"""Joint (task=multitask) predictions: each head's files as its single-task predictor writes them, and one picture per
image with everything together.

    R-CNN head (detection / instance_segmentation)  detections.json + images.json (`DetectionPredictor`)
    segmentation                                    masks/*.png, class-index masks at each image's size
                                                    (`SegmentationPredictor`; value 0 is background)
    classification                                  predictions.csv / .json: the labels whose probability is at
                                                    least LABEL_THRESHOLD, and every class probability
    overlay=true                                    drawn/*.png: the class mask blended over the image, the boxes
                                                    (and instance masks) with names and scores, the labels on top

A head the checkpoint does not have writes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from ..detection.visualize import draw_upscaled
from ..drawing import save_png, to_uint8
from ..pictures import caption
from ..segmentation.visualize import overlay_mask
from .base import Predictor, prepare_image
from .detection import DetectionPredictor
from .files import output_names
from .outputs import SHOWN_ROWS, unpainted
from .segmentation import SegmentationPredictor

# classification: an image has every category whose sigmoid probability is at least this (predict.py has no option
# for it: its score_threshold is the boxes')
LABEL_THRESHOLD = 0.5


class _Computed:
    """Stands in for the task module inside `SegmentationPredictor.forward`: `predict_step` gives back the
    segmentation probabilities this batch's joint forward pass already computed, so that predictor's own
    post-processing (crop the padding, back to the size on disk, argmax) makes the masks."""

    output: Any = None

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self.output


class MultitaskPredictor(Predictor):
    """Images in [0, 1] at their own size (the checkpoint's eval transform). With an R-CNN head the model resizes
    and pads them itself and a batch is a list; without one, images of one size go through together, padded as
    `SegmentationPredictor` pads them (`Preprocessing.pad_images`), so that an image's prediction does not depend
    on the others in its batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        model = self.loaded.module.model
        self.prepare = partial(prepare_image, transform=self.loaded.preprocessing.eval_transform(),
                               keep_original=False)
        self.heads = list(model.heads)
        kinds = {head.kind: name for name, head in model.heads.items()}
        self.rcnn = model.rcnn_name
        self.segmentation_head = kinds.get("segmentation")
        self.classification_head = kinds.get("classification")
        quiet = dataclasses.replace(self.options, overlay=False)  # the one drawn picture is this predictor's
        self.detection = DetectionPredictor(self.loaded, self.files, self.out_dir, quiet) if self.rcnn else None
        self.segmentation = None
        if self.segmentation_head:
            self._computed = _Computed()
            seg_names = self.loaded.module.parts[self.segmentation_head].class_names  # background, *class_names
            loaded = dataclasses.replace(self.loaded, module=self._computed, class_names=list(seg_names))
            self.segmentation = SegmentationPredictor(loaded, self.files, self.out_dir, quiet)
        self.labels: list[tuple[str, list[float]]] = []  # classification: (file, probability per class)
        self.drawn_names = output_names(self.files.names)

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
        """-> per item {"detections": the R-CNN head's dict, "mask": (H, W) uint8, "probs": (K,)}, as present."""
        images = [x["image"] for x in items]
        if self.rcnn:
            outputs = [self._predict([image.to(device) for image in images])]
            order = list(range(len(items)))
        else:  # one forward pass per image size
            groups: dict[tuple[int, int], list[int]] = {}
            for i, image in enumerate(images):
                groups.setdefault(tuple(image.shape[-2:]), []).append(i)
            outputs = [self._predict(self.loaded.preprocessing.pad_images([images[i] for i in group]).to(device))
                       for group in groups.values()]
            order = [i for group in groups.values() for i in group]
        per_image: list[dict[str, Any]] = [{} for _ in items]
        joined = {name: [p for out in outputs for p in out[name]] for name in self.heads}  # in `order`
        for name, preds in joined.items():
            for i, pred in zip(order, preds):
                per_image[i][name] = pred
        results: list[dict[str, Any]] = [{} for _ in items]
        if self.rcnn:
            for result, out in zip(results, per_image):
                result["detections"] = {k: v.cpu() for k, v in out[self.rcnn].items()}
        if self.segmentation is not None:
            self._computed.output = [out[self.segmentation_head] for out in per_image]
            for result, mask in zip(results, self.segmentation.forward(items, device)):
                result["mask"] = mask
            self._computed.output = None
        if self.classification_head:
            for result, out in zip(results, per_image):
                result["probs"] = out[self.classification_head].float().cpu()
        return results

    def _predict(self, batch: Tensor | list[Tensor]) -> dict[str, Any]:
        """{head name: predictions} (a one-head model's predict_step gives its head's alone)."""
        out = self.loaded.module.predict_step(batch, 0)
        return out if len(self.heads) > 1 else {self.heads[0]: out}

    def write(self, item: dict[str, Any], output: dict[str, Any]) -> None:
        if self.detection is not None:
            self.detection.write(item, output["detections"])
        if self.segmentation is not None:
            self.segmentation.write(item, output["mask"])
        if "probs" in output:
            self.labels.append((self.name(item), output["probs"].tolist()))
        if self.options.overlay:
            save_png(self.draw(item["image"], output), self.out_dir / "drawn" / self.drawn_names[item["index"]])

    def draw(self, image: Tensor, output: dict[str, Any]) -> Tensor:
        """(3, H, W) image in [0, 1] -> (3, H', W') uint8: the class mask blended over it, enlarged as the detection
        predictor draws (under 256 px), the boxes (and instance masks), the labels at the top."""
        if "mask" in output:
            names = self.segmentation.loaded.class_names
            painted = overlay_mask(to_uint8(image), output["mask"].long(), len(names), unpainted(names))
            image = painted.float() / 255
        detections = output.get("detections") or {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                                                  "labels": torch.zeros(0, dtype=torch.int64)}
        drawn = draw_upscaled(image, detections, None, self.loaded.class_names, self.options.score_threshold)
        if "probs" in output:
            found = [f"{n} {p:.2f}" for n, p in zip(self.loaded.class_names, output["probs"].tolist())
                     if p >= LABEL_THRESHOLD]
            drawn = write_caption(drawn, ", ".join(found) if found else f"no label >= {LABEL_THRESHOLD}")
        return drawn

    def finish(self, console: Console) -> list[Path]:
        written: list[Path] = []
        if self.detection is not None:
            written += self.detection.finish(console)
        if self.segmentation is not None:
            written += self.segmentation.finish(console)
        if self.classification_head:
            written += self._write_labels(console)
        return written + ([self.out_dir / "drawn"] if self.options.overlay else [])

    def _write_labels(self, console: Console) -> list[Path]:
        names = self.loaded.class_names
        rows = [(file, [n for n, p in zip(names, probs) if p >= LABEL_THRESHOLD], probs) for file, probs in self.labels]
        written = []
        if "csv" in self.options.formats:  # labels joined by ";" (a class name may hold spaces), then each class
            path = self.out_dir / "predictions.csv"
            with path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["file", "labels", *names])
                for file, labels, probs in rows:
                    writer.writerow([file, ";".join(labels), *(f"{p:.6f}" for p in probs)])
            written.append(path)
        if "json" in self.options.formats:
            path = self.out_dir / "predictions.json"
            path.write_text(json.dumps([{"file": file, "labels": labels,
                                         "scores": {n: round(p, 6) for n, p in zip(names, probs)}}
                                        for file, labels, probs in rows], indent=1))
            written.append(path)
        table = Table(title=f"Labels (probability >= {LABEL_THRESHOLD})"
                      + (f" (first {SHOWN_ROWS})" if len(rows) > SHOWN_ROWS else ""))
        table.add_column("file", overflow="fold")
        table.add_column("labels")
        for file, labels, probs in rows[:SHOWN_ROWS]:
            table.add_row(file, ", ".join(f"{n} {p:.3f}" for n, p in zip(names, probs) if n in labels) or "-")
        console.print(table)
        return written


def write_caption(picture: Tensor, text: str) -> Tensor:
    """(3, H, W) uint8 -> a copy with `text` on a dark band at its top left (`pictures.caption`)."""
    out = caption(picture.permute(1, 2, 0).numpy(), text)
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()
