"""Joint (task=multitask) predictions: each head's files as its single-task predictor writes them, and one picture per
image with everything together.

    R-CNN head (detection / instance_segmentation)  detections.json + images.json (`DetectionPredictor`)
    segmentation                                    masks/*.png, class-index masks at each image's size
                                                    (`SegmentationPredictor`; value 0 is background)
    classification                                  predictions.csv / .json: the labels whose probability is at
                                                    least outputs.LABEL_THRESHOLD, and every class probability
    overlay=true                                    drawn/*.png: the class mask blended over the image, the boxes
                                                    (and instance masks) with names and scores, the labels on top

A head the checkpoint does not have writes nothing.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from ..detection.evaluation import binary_masks
from ..drawing import to_uint8
from .base import Predictor, prepare_image
from .detection import DetectionPredictor
from .files import output_names
from .outputs import draw_joint, save_picture, write_labels
from .segmentation import SegmentationPredictor


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
            save_picture(self.draw(item["image"], output), self.out_dir / "drawn" / self.drawn_names[item["index"]])

    def draw(self, image: Tensor, output: dict[str, Any]) -> Any:
        """(3, H, W) image in [0, 1] -> (H', W', 3) uint8 (`outputs.draw_joint`)."""
        detections = None
        if "detections" in output:
            d = output["detections"]
            detections = {k: d[k].numpy() for k in ("labels", "scores")} | {"boxes": d["boxes"].float().numpy()}
            if "masks" in d:
                detections["masks"] = binary_masks(d["masks"]).numpy()
        return draw_joint(to_uint8(image).permute(1, 2, 0).numpy(), self.loaded.class_names,
                          self.options.score_threshold,
                          output["mask"].numpy() if "mask" in output else None,
                          self.segmentation.loaded.class_names if self.segmentation is not None else (),
                          detections, output["probs"].tolist() if "probs" in output else None)

    def finish(self, console: Console) -> list[Path]:
        written: list[Path] = []
        if self.detection is not None:
            written += self.detection.finish(console)
        if self.segmentation is not None:
            written += self.segmentation.finish(console)
        if self.classification_head:
            written += write_labels(self.out_dir, self.labels, self.loaded.class_names, self.options.formats, console)
        return written + ([self.out_dir / "drawn"] if self.options.overlay else [])
