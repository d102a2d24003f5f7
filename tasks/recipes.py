"""`benchmark.py --recipes`: a task's default recipe and its alternatives trained on each synthetic dataset kind
(`data/kinds.py`: shapes, thin strokes, class imbalance, similar classes, small objects, flip-sensitive glyphs), next
to a plain hand-written loop on the same files, at equal epochs; one table of test metric and wall seconds.

Cerberus' recipes are `python train.py` runs (a subprocess each, CSV logger, the test split's metric after fitting);
the plain loop is written the way a practitioner writes one without a framework (segmentation-models-pytorch's
`Unet` on the same encoder, inputs in [0, 1], cross-entropy, AdamW lr 1e-3 wd 1e-4, one-cycle, batch 16, no
augmentation) and scored with the same confusion-matrix mIoU on the same test images.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .train_run import train

NO_AUGMENT = ["data.augment.enabled=false"]
PLAIN_SETTINGS = ["optim.lr=1e-3", "optim.weight_decay=1e-4", "scheduler=onecycle"]  # the synthetic batch is 16
# the segmentation defaults before issue 16 (on the synthetic sets): cosine with 5 % warm-up, scale jitter, colour
# jitter, flips whatever the classes
PREVIOUS = ["scheduler=cosine", "data.augment.scale=[0.75,1.5]", "data.augment.photometric=0.5",
            "data.augment.flip_check=false"]
# name -> train.py overrides on top of `task=segmentation data.synthetic.kind=<kind> trainer.max_epochs=<epochs>`;
# "plain" is the hand-written loop
SEGMENTATION_RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "previous-defaults": PREVIOUS,
    "cosine": ["scheduler=cosine"],
    "scale-jitter": ["data.augment.scale=[0.5,2.0]"],
    "photometric": ["data.augment.photometric=0.5"],
    "no-augment": NO_AUGMENT,
    "dice+ce": ["task.module.loss.dice_weight=1.0"],
    "class-weights": ["task.module.loss.class_weights=auto"],
    "plain-settings": [*NO_AUGMENT, *PLAIN_SETTINGS],
    "plain": [],
}


@dataclass
class RecipeResult:
    task: str
    kind: str
    recipe: str
    metric: float = float("nan")
    seconds: float = float("nan")
    error: str = ""


def read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask-folder split in memory: images (N, 3, H, W) float in [0, 1], masks (N, H, W) int64 (one size: the
    synthetic kinds' images all have the set's size)."""
    names = sorted((root / split / "images").glob("*.png"))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in names])
    masks = np.stack([np.asarray(Image.open(root / split / "masks" / p.name)) for p in names])
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
            torch.from_numpy(masks.astype(np.int64)))


def plain_segmentation(root: Path, epochs: int, encoder: str = "resnet18", batch_size: int = 16, lr: float = 1e-3,
                       weight_decay: float = 1e-4, seed: int = 42) -> float:
    """The plain loop's test mIoU (the same `SegmentationMetrics` as Cerberus' `test/mIoU`)."""
    import segmentation_models_pytorch as smp

    from .segmentation.metrics import SegmentationMetrics

    torch.manual_seed(seed)
    classes = (root / "classes.txt").read_text().split()
    images, masks = read_split(root, "train")
    model = smp.Unet(encoder, encoder_weights=None, classes=len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = -(-len(images) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for i in range(steps):
            index = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(images[index]), masks[index], ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    metric = SegmentationMetrics(len(classes))
    test_images, test_masks = read_split(root, "test")
    with torch.inference_mode():
        for i in range(0, len(test_images), batch_size):
            metric.update(model(test_images[i:i + batch_size]), test_masks[i:i + batch_size])
    return float(metric.compute()["mIoU"])


def kind_root(kind: str, extra: Sequence[str] = ()) -> Path:
    """The folder `train.py task=segmentation data.synthetic.kind=<kind> <extra>` reads (its composed config's
    synthetic options), generated if needed."""
    from omegaconf import OmegaConf

    from backbones.hydra_configs import compose_config
    from data.kinds import synthetic_segmentation_kind

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(["task=segmentation", f"data.synthetic.kind={kind}", *extra], output_dir=tmp)
    return synthetic_segmentation_kind(**OmegaConf.to_container(cfg.data.synthetic))


def run_recipe(task: str, kind: str, recipe: str, epochs: int, seed: int, extra: Sequence[str]) -> RecipeResult:
    result = RecipeResult(task, kind, recipe)
    if recipe == "plain":
        start = time.perf_counter()
        result.metric = plain_segmentation(kind_root(kind, extra), epochs, seed=seed)
        result.seconds = time.perf_counter() - start
        return result
    overrides = [f"task={task}", f"data.synthetic.kind={kind}", f"trainer.max_epochs={epochs}", f"seed={seed}",
                 "callbacks=minimal", *SEGMENTATION_RECIPES[recipe], *extra]
    with tempfile.TemporaryDirectory() as tmp:
        run = train(overrides, Path(tmp) / "run")
    result.seconds, result.error = run.seconds, run.error
    result.metric = run.last("test/mIoU")
    return result


def format_table(results: Sequence[RecipeResult], recipes: Sequence[str], kinds: Sequence[str]) -> str:
    """Markdown: one row per kind, a `metric (seconds)` column per recipe, then the defaults / plain ratio."""
    by = {(r.kind, r.recipe): r for r in results}
    head = ["kind", *recipes] + (["defaults / plain"] if {"defaults", "plain"} <= set(recipes) else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind in kinds:
        cells = [kind]
        for recipe in recipes:
            r = by.get((kind, recipe))
            cells.append("-" if r is None else f"ERROR {r.error[:40]}" if r.error
                         else f"{r.metric:.3f} ({r.seconds:.0f} s)")
        if len(head) > len(recipes) + 1:
            d, p = by.get((kind, "defaults")), by.get((kind, "plain"))
            ok = d and p and not d.error and not p.error and p.metric > 0
            cells.append(f"{d.metric / p.metric:.2f}x" if ok else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_recipes(kinds: Sequence[str], recipes: Sequence[str], epochs: int, seed: int, extra: Sequence[str],
                 task: str = "segmentation") -> str:
    if task != "segmentation":
        raise SystemExit(f"--recipes covers task=segmentation so far, not {task}")
    unknown = [r for r in recipes if r not in SEGMENTATION_RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; known: {', '.join(SEGMENTATION_RECIPES)}")
    from data.kinds import KINDS

    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SystemExit(f"unknown kind(s) {bad}; known: {', '.join(KINDS)}")
    results = []
    for kind in kinds:
        for recipe in recipes:
            r = run_recipe(task, kind, recipe, epochs, seed, extra)
            results.append(r)
            print(f"{task} {kind} {recipe}: " + (r.error or f"test mIoU {r.metric:.3f} ({r.seconds:.0f} s)"),
                  flush=True)
    ratios = [d.metric / p.metric for d in results if d.recipe == "defaults" and not d.error
              for p in results if p.recipe == "plain" and p.kind == d.kind and p.metric > 0]
    summary = (f"\ndefaults / plain mIoU: median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x "
               f"(target >= 1.0x on every kind)" if ratios else "")
    header = (f"\n{task}, {epochs} epochs, seed {seed}, torch {torch.__version__}, {torch.get_num_threads()} threads: "
              "test mIoU (wall seconds)\n")
    return header + format_table(results, recipes, kinds) + summary
