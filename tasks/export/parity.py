"""The exported file against the PyTorch model on the same inputs, at several sizes (one image with no objects: the
mean colour): logits within `LOGITS_TOL` (relative to the larger of 1 and the logits' own scale) with identical
argmax (top-1 classes, class masks), detections the same count, labels equal, boxes within `BOX_TOL` px, scores
within `SCORE_TOL`, mask probabilities within `LOGITS_TOL`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from data.preprocessing import Preprocessing

from .formats import Runner
from .graph import ExportGraph

LOGITS_TOL, BOX_TOL, SCORE_TOL = 1e-4, 0.01, 1e-4


@dataclass
class Check:
    shape: tuple[int, ...]
    output: str
    difference: float  # max |exported - PyTorch|
    tolerance: float
    note: str = ""  # "" when it passes, else what differs
    count: int | None = None  # detections (the same on both sides when it passes)

    @property
    def ok(self) -> bool:
        return not self.note


def sample_inputs(graph: ExportGraph, record: Preprocessing, seed: int = 0, fixed_size: bool = False) -> list[Tensor]:
    """Deterministic inputs at three sizes and batch sizes (batch 1 for R-CNN heads) and one with no objects (the
    mean colour), sized as the predictor feeds the model: classification at the record's crop (and others: the
    classifier pools any size; `fixed_size`: only that one), segmentation at multiples of `size_divisibility`, R-CNN
    around `min_size`."""
    generator = torch.Generator().manual_seed(seed)
    if graph.rcnn:
        m = int(record.min_size or 128)
        shapes = [(3, m, m), (3, m * 3 // 4, m * 3 // 2), (3, m * 5 // 4, m * 4 // 5)]
    elif any(h.kind == "segmentation" for h in graph.model.heads.values()):
        d = max(record.size_divisibility, 1)
        base = max(2, round((record.size or 4 * d) / d))
        shapes = [(1, 3, base * d, base * d), (2, 3, (base + 1) * d, (base - 1) * d), (3, 3, base * d, (base + 2) * d)]
    else:
        s = int(record.size or 224)
        shapes = [(1, 3, s, s), (2, 3, s, s), (3, 3, s, s) if fixed_size else (3, 3, s + 16, s - 8)]
    inputs = [torch.rand(shape, generator=generator) for shape in shapes]
    blank = torch.tensor(record.mean, dtype=torch.float32).view(3, 1, 1).expand(shapes[0][-3:]).clone()
    inputs.append(blank if graph.rcnn else blank[None])
    return inputs


def compare(graph: ExportGraph, runner: Runner, inputs: list[Tensor]) -> list[Check]:
    """One `Check` per input and output."""
    checks = []
    for x in inputs:
        with torch.no_grad():
            expected = [t.numpy() for t in graph(x)]
        got = runner(x)
        shape = tuple(x.shape)
        heads = _by_head(graph.output_names, expected, got)
        for name, (exp, out) in heads.items():
            checks += _compare_head(shape, name, exp, out)
    return checks


def _by_head(names: list[str], expected: list[np.ndarray], got: tuple[np.ndarray, ...],
             ) -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """{head prefix ("" for one head): ({output leaf: expected}, {output leaf: exported})}."""
    out: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    for name, e, g in zip(names, expected, got):
        prefix, _, leaf = name.rpartition(".")
        pair = out.setdefault(prefix, ({}, {}))
        pair[0][leaf], pair[1][leaf] = e, g
    return out


def _compare_head(shape: tuple[int, ...], head: str, exp: dict[str, np.ndarray], got: dict[str, np.ndarray],
                  ) -> list[Check]:
    label = f"{head}." if head else ""
    if "logits" in exp:
        e, g = exp["logits"], got["logits"]
        if e.shape != g.shape:
            return [Check(shape, label + "logits", float("inf"), LOGITS_TOL, f"shape {g.shape}, PyTorch {e.shape}")]
        diff = float(np.abs(e - g).max()) if e.size else 0.0
        tol = LOGITS_TOL * max(1.0, float(np.abs(e).max()) if e.size else 1.0)
        note = f"differs by {diff:.2e} > {tol:.1e}" if diff > tol else ""
        if not note and not np.array_equal(e.argmax(1), g.argmax(1)):
            changed = int((e.argmax(1) != g.argmax(1)).sum())
            note = f"argmax differs at {changed} place(s)"
        return [Check(shape, label + "logits", diff, tol, note)]
    n_exp, n_got = len(exp["boxes"]), len(got["boxes"])
    if n_exp != n_got:
        return [Check(shape, label + "boxes", float("inf"), BOX_TOL, f"{n_got} detections, PyTorch {n_exp}", n_exp)]
    checks = [Check(shape, label + "labels", float((exp["labels"] != got["labels"]).sum()), 0.0,
                    "" if np.array_equal(exp["labels"], got["labels"]) else "labels differ", n_exp)]
    for leaf, tol in (("boxes", BOX_TOL), ("scores", SCORE_TOL), ("masks", LOGITS_TOL)):
        if leaf in exp:
            diff = float(np.abs(exp[leaf] - got[leaf]).max()) if n_exp else 0.0
            checks.append(Check(shape, label + leaf, diff, tol, f"differs by {diff:.2e} > {tol:.0e}" if diff > tol
                                else "", n_exp))
    return checks
