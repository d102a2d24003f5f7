"""`benchmark.py --recipes`: a task's default recipe and its alternatives trained on each synthetic dataset kind
(`data/kinds.py`: shapes, thin strokes, class imbalance, similar classes, small objects, flip-sensitive glyphs), next
to a plain hand-written loop on the same files (`tasks/plain_loops.py`); one table of test metric and wall seconds.

Cerberus' recipes are `python train.py` runs (a subprocess each, CSV logger, the test split's metric after fitting);
the plain loops run in this process at the same number of epochs (and, for detection, also at equal wall time: the
`@...-time` recipes take their epochs from the measured seconds of the other side's run on the same kind).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .plain_loops import plain_detection, plain_segmentation
from .train_run import train

NO_AUGMENT = ["data.augment.enabled=false"]
PLAIN_SETTINGS = ["optim.lr=1e-3", "optim.weight_decay=1e-4", "scheduler=onecycle",  # the synthetic batch is 16
                  "task.module.loss.class_weights=null"]
# the segmentation defaults before issue 16 (on the synthetic sets): cosine with 5 % warm-up, scale jitter, colour
# jitter, flips whatever the classes, plain (unweighted) cross-entropy
PREVIOUS = ["scheduler=cosine", "data.augment.scale=[0.75,1.5]", "data.augment.photometric=0.5",
            "data.augment.flip_check=false", "task.module.loss.class_weights=null"]
# name -> train.py overrides on top of `task=<task> data.synthetic.kind=<kind> trainer.max_epochs=<epochs>`;
# "plain..." are the hand-written loops, "...@...-time" equal-wall-time runs (epochs from the other side's seconds)
SEGMENTATION_RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "previous-defaults": PREVIOUS,
    "cosine": ["scheduler=cosine"],
    "scale-jitter": ["data.augment.scale=[0.5,2.0]"],
    "photometric": ["data.augment.photometric=0.5"],
    "no-augment": NO_AUGMENT,
    "dice+ce": ["task.module.loss.dice_weight=1.0"],
    "no-class-weights": ["task.module.loss.class_weights=null"],  # plain CE (the default before the kinds table)
    "median-freq": ["task.module.loss.class_weights=median_freq"],
    "plain-settings": [*NO_AUGMENT, *PLAIN_SETTINGS],
    "plain": [],
}
DETECTION_RECIPES: dict[str, list[str]] = {
    "defaults": [],
    "no-augment": NO_AUGMENT,
    "no-flip": ["data.augment.hflip=0"],
    # from random init, everything trains with live BatchNorm (torchvision's own choice without pretrained weights)
    # instead of detectron2's pretrained recipe of frozen BatchNorm (calibrated) and a frozen stem and first stage
    "train-all": ["backbone.norm=bn", "backbone.freeze_at=0"],
    # the plain loop's optimizer and schedule (SGD 0.005, momentum 0.9, wd 1e-4, lr / 10 at 16/26 and 22/26) and no
    # augmentation, on Cerberus' detector
    "plain-settings": [*NO_AUGMENT, "optim=sgd", "optim.lr=0.005", "optim.nesterov=false", "scheduler=step",
                       "scheduler.milestones=[0.615,0.846]"],
    "plain": [],
    "plain-800": [],  # torchvision's literal 800 / 1333 px resize (6x the images' side: hours per kind on a CPU)
    "plain@defaults-time": [],  # the plain loop for as many epochs as fit in the defaults' wall time
    "defaults@plain-time": [],  # the defaults for as many epochs as fit in the plain loop's wall time
}
DEFAULT_DETECTION = ["defaults", "train-all", "no-augment", "plain", "plain@defaults-time"]


@dataclass
class RecipeResult:
    task: str
    kind: str
    recipe: str
    metric: float = float("nan")
    seconds: float = float("nan")
    error: str = ""
    epochs: int = 0


@dataclass(frozen=True)
class TaskRecipes:
    """What `--recipes` needs of a task: its recipes, the test metric, epochs, and the plain loop."""

    recipes: dict[str, list[str]]
    default: list[str]
    metric: str
    epochs: int
    plain: Callable[..., float]  # (root, epochs, backbone=..., seed=..., **options) -> test metric


TASKS: dict[str, TaskRecipes] = {
    "segmentation": TaskRecipes(SEGMENTATION_RECIPES, list(SEGMENTATION_RECIPES), "test/mIoU", 12,
                                lambda root, epochs, backbone, seed, **kw: plain_segmentation(
                                    root, epochs, encoder=backbone, seed=seed, **kw)),
    "detection": TaskRecipes(DETECTION_RECIPES, DEFAULT_DETECTION, "test/AP", 6, plain_detection),
}
# the options a plain variant passes to its loop
PLAIN_OPTIONS = {"plain-800": {"min_size": 800, "max_size": 1333}}


def kind_config(task: str, kind: str, extra: Sequence[str] = ()) -> tuple[Path, str]:
    """The folder `train.py task=<task> data.synthetic.kind=<kind> <extra>` reads (generated if needed, from its
    composed config's synthetic options) and the run's backbone name (the plain loop builds the same one)."""
    from omegaconf import OmegaConf

    from backbones.hydra_configs import compose_config
    from data.kinds import synthetic_detection_kind, synthetic_segmentation_kind

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config([f"task={task}", f"data.synthetic.kind={kind}", *extra], output_dir=tmp)
    make = synthetic_segmentation_kind if task == "segmentation" else synthetic_detection_kind
    return make(**OmegaConf.to_container(cfg.data.synthetic)), str(cfg.backbone.name)


def equal_time_epochs(recipe: str, epochs: int, done: dict[str, RecipeResult]) -> int:
    """`a@b-time`: `epochs` scaled by b's seconds over a's at `epochs` (both measured on this kind), at least 1."""
    side, other = recipe.split("@")[0], recipe.split("@")[1].removesuffix("-time")
    a, b = done.get(side), done.get(other)
    if a is None or b is None or a.error or b.error:
        raise ValueError(f"{recipe} needs the '{side}' and '{other}' runs on the same kind first (list them before it)")
    return max(1, round(a.epochs * b.seconds / a.seconds))


def run_recipe(task: str, kind: str, recipe: str, epochs: int, seed: int, extra: Sequence[str],
               done: dict[str, RecipeResult] | None = None) -> RecipeResult:
    """One recipe on one kind; `done`: this kind's earlier results (the equal-time recipes read their seconds)."""
    spec = TASKS[task]
    result = RecipeResult(task, kind, recipe, epochs=epochs)
    if "@" in recipe:
        try:
            result.epochs = equal_time_epochs(recipe, epochs, done or {})
        except ValueError as e:
            result.error = str(e)
            return result
    base = recipe.split("@")[0]
    if base.startswith("plain") and base != "plain-settings":
        root, backbone = kind_config(task, kind, extra)
        start = time.perf_counter()
        try:
            result.metric = spec.plain(root, result.epochs, backbone=backbone, seed=seed, **PLAIN_OPTIONS.get(base, {}))
        except FloatingPointError as e:
            result.error = str(e)
        result.seconds = time.perf_counter() - start
        return result
    overrides = [f"task={task}", f"data.synthetic.kind={kind}", f"trainer.max_epochs={result.epochs}", f"seed={seed}",
                 "callbacks=minimal", *spec.recipes[base], *extra]
    with tempfile.TemporaryDirectory() as tmp:
        run = train(overrides, Path(tmp) / "run")
    result.seconds, result.error = run.seconds, run.error
    result.metric = run.last(spec.metric)
    return result


def _cell(r: RecipeResult | None, epochs: int) -> str:
    if r is None:
        return "-"
    if r.error:
        return f"ERROR {r.error[:60]}"
    return f"{r.metric:.3f} ({r.seconds:.0f} s" + (f", {r.epochs} ep)" if r.epochs != epochs else ")")


def comparisons(task: str, by: dict[tuple[str, str], RecipeResult], kind: str) -> dict[str, str]:
    """The target columns: segmentation defaults / plain mIoU; detection defaults - plain AP at equal epochs and
    at equal wall time."""
    def get(recipe: str) -> RecipeResult | None:
        r = by.get((kind, recipe))
        return r if r is not None and not r.error else None

    d, p = get("defaults"), get("plain")
    if task == "segmentation":
        return {"defaults / plain": f"{d.metric / p.metric:.2f}x" if d and p and p.metric > 0 else "-"}
    out = {"defaults - plain": f"{d.metric - p.metric:+.3f}" if d and p else "-"}
    for fast, slow in (("defaults", "plain@defaults-time"), ("defaults@plain-time", "plain")):
        a, b = get(fast), get(slow)
        if a and b:
            out["equal time: defaults - plain"] = f"{a.metric - b.metric:+.3f}"
    out.setdefault("equal time: defaults - plain", "-")
    return out


def format_table(task: str, results: Sequence[RecipeResult], recipes: Sequence[str], kinds: Sequence[str],
                 epochs: int) -> str:
    """Markdown: one row per kind, a `metric (seconds[, epochs])` column per recipe, then the target columns."""
    by = {(r.kind, r.recipe): r for r in results}
    extra = list(comparisons(task, by, kinds[0])) if kinds else []
    head = ["kind", *recipes, *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind in kinds:
        cells = [kind, *(_cell(by.get((kind, recipe)), epochs) for recipe in recipes)]
        lines.append("| " + " | ".join(cells + list(comparisons(task, by, kind).values())) + " |")
    return "\n".join(lines)


def check_names(task: str, kinds: Sequence[str], recipes: Sequence[str]) -> None:
    """SystemExit naming the known task / recipes / kinds when one is not."""
    if task not in TASKS:
        raise SystemExit(f"--recipes covers {', '.join(TASKS)}, not task {task}")
    unknown = [r for r in recipes if r not in TASKS[task].recipes]
    if unknown:
        raise SystemExit(f"unknown {task} recipe(s) {unknown}; known: {', '.join(TASKS[task].recipes)}")
    from data.kinds import KINDS

    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SystemExit(f"unknown kind(s) {bad}; known: {', '.join(KINDS)}")


def main_recipes(kinds: Sequence[str], recipes: Sequence[str] | None, epochs: int | None, seed: int,
                 extra: Sequence[str], task: str = "segmentation") -> str:
    """Train every recipe (default: the task's default list) on every kind, print each result as it comes, and
    return the table."""
    check_names(task, kinds, recipes or [])
    spec = TASKS[task]
    recipes = list(recipes or spec.default)
    epochs = epochs or spec.epochs
    results = []
    for kind in kinds:
        done: dict[str, RecipeResult] = {}
        for recipe in recipes:
            r = done[recipe] = run_recipe(task, kind, recipe, epochs, seed, extra, done)
            results.append(r)
            print(f"{task} {kind} {recipe}: " + (r.error or f"{spec.metric} {r.metric:.3f} ({r.seconds:.0f} s, "
                                                 f"{r.epochs} epochs)"), flush=True)
    summary = ""
    if task == "segmentation":
        ratios = [d.metric / p.metric for d in results if d.recipe == "defaults" and not d.error
                  for p in results if p.recipe == "plain" and p.kind == d.kind and p.metric > 0]
        summary = (f"\ndefaults / plain mIoU: median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x "
                   f"(target >= 1.0x on every kind)" if ratios else "")
    else:
        summary = ("\ntargets: defaults - plain >= -0.02 AP at equal epochs, >= 0 at equal wall time "
                   "(`plain@defaults-time` / `defaults@plain-time`)")
    header = (f"\n{task}, {epochs} epochs, seed {seed}, torch {torch.__version__}, {torch.get_num_threads()} threads: "
              f"{spec.metric} (wall seconds)\n")
    return header + format_table(task, results, recipes, kinds, epochs) + summary
