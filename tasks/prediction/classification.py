"""Classification predictions: top-k labels and probabilities per image -> predictions.csv / .json and a table."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from .base import Predictor, prepare_image
from .explanations import explained_class, write_explanations
from .files import output_names
from .outputs import Row, top_k, write_classification


class ClassificationPredictor(Predictor):
    """The eval transform of the checkpoint's preprocessing record (resize to size / crop_pct, centre crop; the model
    normalises); softmax probabilities; the k best labels per image (k = `topk` capped at the class
    count)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepare = partial(prepare_image, transform=self.loaded.preprocessing.eval_transform(), keep_original=False)
        self.k = max(1, min(self.options.topk, len(self.loaded.class_names)))
        self.rows: list[Row] = []
        self.explained = explained_class(self.loaded.class_names, self.options.explain_class)
        self.png_names = output_names(self.files.names)

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[tuple[list[int], list[float]]]:
        images = torch.stack([x["image"] for x in items]).to(device)
        probs = self.loaded.module.predict_step(images, 0)
        labels, scores = top_k(probs.float().cpu().numpy(), self.k)
        if self.options.explain:
            write_explanations(self.loaded.module, images, labels[:, 0].tolist(), [images.shape[-2:]] * len(items),
                               [self.png_names[x["index"]] for x in items], self.out_dir, self.loaded.class_names,
                               self.explained, self.options.explain_level)
        return list(zip(labels.tolist(), scores.tolist()))

    def write(self, item: dict[str, Any], output: tuple[list[int], list[float]]) -> None:
        labels, scores = output
        self.rows.append((self.name(item), [self.loaded.class_names[i] for i in labels], scores))

    def finish(self, console: Console) -> list[Path]:
        written = write_classification(self.out_dir, self.rows, self.k, self.options.formats, console)
        return written + ([self.out_dir / "explanations"] if self.options.explain else [])
