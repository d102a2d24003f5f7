"""Detection and instance-segmentation predictions: a COCO results json (the dataset's own category ids, xywh boxes,
masks as compressed RLE), the image-id table beside it, and each image drawn with its boxes (and masks), class names
and scores."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from data.transforms import detection_transforms

from ..detection.evaluation import to_coco_results
from ..detection.visualize import draw_upscaled
from ..drawing import save_png
from .base import Predictor, prepare_image
from .inputs import output_names


class DetectionPredictor(Predictor):
    """Float images in [0, 1] at their own size (the detector resizes and normalizes them itself, as in eval);
    detections scoring at least `score_threshold` are written (with a Mask R-CNN checkpoint, each with its mask
    as "segmentation", a compressed RLE that pycocotools' `COCO.loadRes` reads) and drawn. Image ids are 1..N in
    file order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepare = partial(prepare_image, transform=detection_transforms(False), keep_original=False)
        names = self.loaded.class_names
        self.category_ids = self.loaded.category_ids or list(range(1, len(names) + 1))  # label l -> id [l - 1]
        self.drawn_names = output_names(self.files.names)
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[dict[str, Tensor]]:
        preds = self.loaded.module.predict_step([x["image"].to(device) for x in items], 0)
        return [{k: v.cpu() for k, v in p.items()} for p in preds]

    def write(self, item: dict[str, Any], pred: dict[str, Tensor]) -> None:
        image_id = item["index"] + 1
        h, w = item["size"]
        self.images.append({"id": image_id, "file_name": self.name(item), "height": h, "width": w})
        keep = pred["scores"] >= self.options.score_threshold
        for entry in to_coco_results([{k: v[keep] for k, v in pred.items()}], [image_id], self.category_ids):
            self.results.append({**entry, "bbox": [round(v, 2) for v in entry["bbox"]],
                                 "score": round(entry["score"], 5)})
        if self.options.overlay:
            # images under 256 px are drawn enlarged, so that the class names stay readable
            drawn = draw_upscaled(item["image"], pred, None, self.loaded.class_names, self.options.score_threshold)
            save_png(drawn, self.out_dir / "drawn" / self.drawn_names[item["index"]])

    def finish(self, console: Console) -> list[Path]:
        detections = self.out_dir / "detections.json"
        detections.write_text(json.dumps(self.results))
        # COCO's "images" and "categories" sections: file name <-> image_id, category_id <-> class name
        images = self.out_dir / "images.json"
        categories = [{"id": int(i), "name": n} for i, n in zip(self.category_ids, self.loaded.class_names)]
        images.write_text(json.dumps({"images": sorted(self.images, key=lambda x: x["id"]),
                                      "categories": categories}, indent=1))
        console.print(f"{len(self.results)} detection(s) scoring >= {self.options.score_threshold} "
                      f"on {len(self.images)} image(s)", highlight=False)
        return [detections, images] + ([self.out_dir / "drawn"] if self.options.overlay else [])
