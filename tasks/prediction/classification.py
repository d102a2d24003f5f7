"""Classification predictions: top-k labels and probabilities per image -> predictions.csv / .json and a table."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from .base import Predictor, prepare_image

SHOWN_ROWS, SHOWN_LABELS = 20, 3  # the printed table; the files have every row and all k labels


class ClassificationPredictor(Predictor):
    """The eval transform of the checkpoint's preprocessing record (resize to size / crop_pct, centre crop; the model
    normalises); softmax probabilities; the k best labels per image (k = `topk` capped at the class
    count)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepare = partial(prepare_image, transform=self.loaded.preprocessing.eval_transform(), keep_original=False)
        self.k = max(1, min(self.options.topk, len(self.loaded.class_names)))
        self.rows: list[tuple[str, list[str], list[float]]] = []

    def forward(self, items: list[dict[str, Any]], device: torch.device) -> list[tuple[list[int], list[float]]]:
        probs = self.loaded.module.predict_step(torch.stack([x["image"] for x in items]).to(device), 0)
        scores, labels = probs.topk(self.k, dim=1)
        return list(zip(labels.cpu().tolist(), scores.cpu().tolist()))

    def write(self, item: dict[str, Any], output: tuple[list[int], list[float]]) -> None:
        labels, scores = output
        self.rows.append((self.name(item), [self.loaded.class_names[i] for i in labels], scores))

    def finish(self, console: Console) -> list[Path]:
        written = []
        if "csv" in self.options.formats:
            path = self.out_dir / "predictions.csv"
            with path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["file", *(f"{c}{j}" for j in range(1, self.k + 1) for c in ("label", "score"))])
                for name, labels, scores in self.rows:
                    writer.writerow([name, *(v for pair in zip(labels, scores) for v in (pair[0], f"{pair[1]:.6f}"))])
            written.append(path)
        if "json" in self.options.formats:
            path = self.out_dir / "predictions.json"
            path.write_text(json.dumps([{"file": n, "labels": lb, "scores": [round(s, 6) for s in sc]}
                                        for n, lb, sc in self.rows], indent=1))
            written.append(path)
        console.print(self._table())
        return written

    def _table(self) -> Table:
        shown = min(self.k, SHOWN_LABELS)
        table = Table(title=f"Top-{shown} predictions" + (f" (first {SHOWN_ROWS})" if len(self.rows) > SHOWN_ROWS
                                                           else ""))
        table.add_column("file", overflow="fold")
        for j in range(1, shown + 1):
            table.add_column(f"#{j}")
        for name, labels, scores in self.rows[:SHOWN_ROWS]:
            table.add_row(name, *(f"{lbl} {s:.3f}" for lbl, s in zip(labels[:shown], scores[:shown])))
        return table
