"""Detection and instance-segmentation predictions: a COCO results json (the dataset's own category ids, xywh boxes,
masks as compressed RLE), the image-id table beside it, and each image drawn with its boxes (and masks), class names
and scores."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from data.transforms import detection_transforms

from ..detection.evaluation import binary_masks
from ..drawing import to_uint8
from .base import Predictor, prepare_image
from .explanations import explained_class, write_detection_explanation
from .files import output_names
from .outputs import DetectionFiles


class DetectionPredictor(Predictor):
    """Float images in [0, 1] at their own size (the detector resizes and normalizes them itself, as in eval);
    detections scoring at least `score_threshold` are written (with a Mask R-CNN checkpoint, each with its mask
    as "segmentation", a compressed RLE that pycocotools' `COCO.loadRes` reads) and drawn. Image ids are 1..N in
    file order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepare = partial(prepare_image, transform=detection_transforms(False), keep_original=False)
        self.drawn_names = output_names(self.files.names)
        self.files_out = DetectionFiles(self.out_dir, self.loaded.class_names, self.loaded.category_ids,
                                        self.options.score_threshold, self.options.overlay)
        self.explained = explained_class(self.loaded.class_names, self.options.explain_class)

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[dict[str, Tensor]]:
        preds = self.loaded.module.predict_step([x["image"].to(device) for x in items], 0)
        if self.options.explain:  # one image at a time: each map is one detection's score's gradient
            for x in items:
                write_detection_explanation(self.loaded.module, x["image"].to(device), self.drawn_names[x["index"]],
                                            self.out_dir, self.loaded.class_names, self.explained,
                                            self.options.explain_level)
        return [{k: v.cpu() for k, v in p.items()} for p in preds]

    def write(self, item: dict[str, Any], pred: dict[str, Tensor]) -> None:
        masks = binary_masks(pred["masks"]).numpy() if "masks" in pred else None
        self.files_out.add(item["index"] + 1, self.name(item), to_uint8(item["image"]).permute(1, 2, 0).numpy(),
                           pred["boxes"].float().numpy(), pred["labels"].numpy(), pred["scores"].numpy(), masks,
                           self.drawn_names[item["index"]])

    def finish(self, console: Console) -> list[Path]:
        return self.files_out.finish(console) + ([self.out_dir / "explanations"] if self.options.explain else [])
