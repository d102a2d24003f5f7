"""predict.py's output files, written from numpy arrays and plain values: the predictors of checkpoints
(tasks/prediction/) and of exported models (tasks/runtime/) call these, so both write the same files and pictures.
No torch here."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from data.class_names import background_classes

from .. import pictures
from ..coco_results import coco_entries

SHOWN_ROWS, SHOWN_LABELS = 20, 3  # the printed table; the files have every row and all k labels
# a joint model's classification head: an image has every category whose sigmoid probability is at least this
# (predict.py has no option for it: its score_threshold is the boxes')
LABEL_THRESHOLD = 0.5

Row = tuple[str, list[str], list[float]]  # file, its k labels, their probabilities


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) probabilities -> (labels (N, k), scores (N, k)), best first (ties: the lower index first)."""
    labels = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return labels, np.take_along_axis(probs, labels, axis=1)


def write_classification(out_dir: Path, rows: Sequence[Row], k: int, formats: Sequence[str],
                         console: Console) -> list[Path]:
    """predictions.csv (file, label1, score1, ...) and / or predictions.json; prints the first rows as a table."""
    written = []
    if "csv" in formats:
        path = out_dir / "predictions.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", *(f"{c}{j}" for j in range(1, k + 1) for c in ("label", "score"))])
            for name, labels, scores in rows:
                writer.writerow([name, *(v for pair in zip(labels, scores) for v in (pair[0], f"{pair[1]:.6f}"))])
        written.append(path)
    if "json" in formats:
        path = out_dir / "predictions.json"
        path.write_text(json.dumps([{"file": n, "labels": lb, "scores": [round(s, 6) for s in sc]}
                                    for n, lb, sc in rows], indent=1))
        written.append(path)
    console.print(_classification_table(rows, k))
    return written


def _classification_table(rows: Sequence[Row], k: int) -> Table:
    shown = min(k, SHOWN_LABELS)
    table = Table(title=f"Top-{shown} predictions" + (f" (first {SHOWN_ROWS})" if len(rows) > SHOWN_ROWS else ""))
    table.add_column("file", overflow="fold")
    for j in range(1, shown + 1):
        table.add_column(f"#{j}")
    for name, labels, scores in rows[:SHOWN_ROWS]:
        table.add_row(name, *(f"{lbl} {s:.3f}" for lbl, s in zip(labels[:shown], scores[:shown])))
    return table


def save_picture(image: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 (or (H, W) uint8 mask) PNG, parent folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def unpainted(class_names: Sequence[str]) -> list[int]:
    """The classes named like background: not painted in overlays."""
    return background_classes(class_names)


def write_mask(out_dir: Path, name: str, mask: np.ndarray, original: np.ndarray | None,
               class_names: Sequence[str]) -> None:
    """masks/<name> (pixel value k is class k) and, with the (H, W, 3) uint8 `original`, overlays/<name>."""
    save_picture(mask.astype(np.uint8), out_dir / "masks" / name)
    if original is not None:
        overlay = pictures.overlay_classes(original, mask, len(class_names), unpainted(class_names))
        save_picture(overlay, out_dir / "overlays" / name)


def finish_segmentation(out_dir: Path, count: int, class_names: Sequence[str], overlay: bool,
                        console: Console) -> list[Path]:
    legend = ", ".join(f"{k} {n}" for k, n in enumerate(class_names))
    console.print(f"{count} mask(s): pixel value k is class k ({legend})", highlight=False, soft_wrap=True)
    return [out_dir / "masks"] + ([out_dir / "overlays"] if overlay else [])


class DetectionFiles:
    """detections.json (COCO results: the dataset's category ids, xywh boxes rounded to 0.01 px, scores to 1e-5,
    masks as compressed RLE), images.json (image ids and categories) and drawn/<name> pictures."""

    def __init__(self, out_dir: Path, class_names: Sequence[str], category_ids: Sequence[int] | None,
                 score_threshold: float, draw: bool) -> None:
        self.out_dir, self.class_names = out_dir, list(class_names)
        self.category_ids = list(category_ids or range(1, len(class_names) + 1))  # label l -> id [l - 1]
        self.score_threshold, self.draw = score_threshold, draw
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def add(self, image_id: int, file_name: str, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
            scores: np.ndarray, masks: np.ndarray | None, drawn_name: str) -> None:
        """One image ((H, W, 3) uint8) and its detections (masks (M, H, W) bool or None)."""
        h, w = image.shape[:2]
        self.images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        keep = np.asarray(scores) >= self.score_threshold
        kept_masks = None if masks is None else masks[keep]
        for entry in coco_entries(boxes[keep], labels[keep], scores[keep], image_id, self.category_ids, kept_masks):
            self.results.append({**entry, "bbox": [round(v, 2) for v in entry["bbox"]],
                                 "score": round(entry["score"], 5)})
        if self.draw:  # images under 256 px are drawn enlarged, so that the class names stay readable
            drawn = pictures.draw_upscaled(image, boxes, labels, scores, self.class_names, masks,
                                           self.score_threshold)
            save_picture(drawn, self.out_dir / "drawn" / drawn_name)

    def finish(self, console: Console) -> list[Path]:
        detections = self.out_dir / "detections.json"
        detections.write_text(json.dumps(self.results))
        images = self.out_dir / "images.json"
        categories = [{"id": int(i), "name": n} for i, n in zip(self.category_ids, self.class_names)]
        images.write_text(json.dumps({"images": sorted(self.images, key=lambda x: x["id"]),
                                      "categories": categories}, indent=1))
        console.print(f"{len(self.results)} detection(s) scoring >= {self.score_threshold} "
                      f"on {len(self.images)} image(s)", highlight=False)
        return [detections, images] + ([self.out_dir / "drawn"] if self.draw else [])


def draw_joint(image: np.ndarray, class_names: Sequence[str], score_threshold: float, mask: np.ndarray | None = None,
               mask_names: Sequence[str] = (), detections: dict[str, np.ndarray] | None = None,
               probs: Sequence[float] | None = None) -> np.ndarray:
    """A joint model's one picture of an (H, W, 3) uint8 image: the (H, W) class `mask` (values index `mask_names`)
    blended over it, then enlarged as detections are drawn (under 256 px), the `detections` ("boxes", "labels",
    "scores"[, "masks" (M, H, W) bool]) with names and scores, and the labels whose `probs` reach LABEL_THRESHOLD on
    top."""
    if mask is not None:
        image = pictures.overlay_classes(image, mask, len(mask_names), unpainted(mask_names))
    d = detections or {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                       "scores": np.zeros(0, np.float32)}
    drawn = pictures.draw_upscaled(image, d["boxes"], d["labels"], d["scores"], class_names, d.get("masks"),
                                   score_threshold)
    if probs is not None:
        found = [f"{n} {p:.2f}" for n, p in zip(class_names, probs) if p >= LABEL_THRESHOLD]
        drawn = pictures.caption(drawn, ", ".join(found) if found else f"no label >= {LABEL_THRESHOLD}")
    return drawn


def write_labels(out_dir: Path, rows: Sequence[tuple[str, Sequence[float]]], class_names: Sequence[str],
                 formats: Sequence[str], console: Console) -> list[Path]:
    """A joint model's multi-label classification: predictions.csv (file, the labels reaching LABEL_THRESHOLD
    joined by ";", every class probability) and / or predictions.json, and a printed table."""
    names = list(class_names)
    labelled = [(file, [n for n, p in zip(names, probs) if p >= LABEL_THRESHOLD], list(probs)) for file, probs in rows]
    written = []
    if "csv" in formats:  # labels joined by ";" (a class name may hold spaces), then each class
        path = out_dir / "predictions.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "labels", *names])
            for file, labels, probs in labelled:
                writer.writerow([file, ";".join(labels), *(f"{p:.6f}" for p in probs)])
        written.append(path)
    if "json" in formats:
        path = out_dir / "predictions.json"
        path.write_text(json.dumps([{"file": file, "labels": labels,
                                     "scores": {n: round(p, 6) for n, p in zip(names, probs)}}
                                    for file, labels, probs in labelled], indent=1))
        written.append(path)
    table = Table(title=f"Labels (probability >= {LABEL_THRESHOLD})"
                  + (f" (first {SHOWN_ROWS})" if len(labelled) > SHOWN_ROWS else ""))
    table.add_column("file", overflow="fold")
    table.add_column("labels")
    for file, labels, probs in labelled[:SHOWN_ROWS]:
        table.add_row(file, ", ".join(f"{n} {p:.3f}" for n, p in zip(names, probs) if n in labels) or "-")
    console.print(table)
    return written
