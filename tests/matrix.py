"""The registry as a matrix: every registered backbone x {classification, detection, segmentation, instance
segmentation} x {no neck, FPN},
a few real optimizer steps each through the same config composition, model building, BatchNorm policy and
Lightning loop as `train.py`, on tiny synthetic data.

    python -m tests.matrix                                   # every cell, a table at the end
    python -m tests.matrix --tasks detection --backbones resnet50 resnet101 --necks fpn --steps 5
    python -m tests.matrix --markdown                        # the README's table
    python -m tests.matrix --fit --tasks detection --backbones resnet50   # the task's whole default run per cell

Each cell takes the first `--steps` optimizer steps of a run `--horizon` steps long, with the task's default
optimizer and schedule (its warm-up included). Prints per cell the first and last training loss, whether every
loss was finite, the median seconds per step (after the first) and the peak memory (CUDA: max allocated; CPU:
the process's resident-set growth during the cell, after returning freed memory to the system). Exits 1 if any
cell fails or diverges.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("classification", "detection", "segmentation", "instance_segmentation")
RCNN_TASKS = ("detection", "instance_segmentation")  # without FPN, the R-CNNs run on the single deepest level
NECKS = ("none", "fpn")
# the generic `timm` entry needs a model name: a small ResNet-D stands for any timm ResNet-family model
GENERIC_TIMM = ["backbone.model_name=resnet26d"]

# tiny synthetic sets and input sizes, per task (the synthetic generators cache each set once)
TASK_OVERRIDES: dict[str, list[str]] = {
    "classification": ["data.synthetic.num_classes=3", "data.synthetic.train_per_class=4",
                       "data.synthetic.val_per_class=1", "data.synthetic.test_per_class=1",
                       "data.synthetic.image_size=32", "data.image_size=32"],
    "detection": ["data.synthetic.train_images=8", "data.synthetic.val_images=2", "data.synthetic.test_images=2",
                  "data.synthetic.image_size=64", "task.model.min_size=[64]", "task.model.max_size=96"],
    "segmentation": ["data.synthetic.train_images=8", "data.synthetic.val_images=2", "data.synthetic.test_images=2",
                     "data.synthetic.image_size=64", "data.image_size=64"],
}
TASK_OVERRIDES["instance_segmentation"] = TASK_OVERRIDES["detection"]
HORIZON = 100  # cells run the first steps of a run this long: 5 warm-up steps with the default cosine schedule
COMMON = ["logger=none", "data.batch_size=2", "data.num_workers=0"]


@dataclass
class Cell:
    task: str
    backbone: str
    neck: str
    losses: list[float] = field(default_factory=list)
    terms: list[dict[str, float]] = field(default_factory=list)  # per step, each loss term
    step_seconds: list[float] = field(default_factory=list)
    peak_mb: float = float("nan")
    error: str = ""
    note: str = ""

    @property
    def finite(self) -> bool:
        return bool(self.losses) and all(math.isfinite(x) for x in self.losses)

    @property
    def ok(self) -> bool:
        return not self.error and self.finite

    @property
    def seconds_per_step(self) -> float:
        timed = self.step_seconds[1:] or self.step_seconds
        return statistics.median(timed) if timed else float("nan")


def cells(tasks: Sequence[str] = TASKS, backbones: Sequence[str] | None = None,
          necks: Sequence[str] = NECKS) -> list[tuple[str, str, str]]:
    """(task, backbone, neck) for every registered backbone (or the given ones)."""
    from backbones.registry import BACKBONES

    names = list(backbones) if backbones else BACKBONES.names()
    return [(t, b, n) for t in tasks for b in names for n in necks]


def overrides(task: str, backbone: str, neck: str) -> list[str]:
    """The command-line overrides of one cell, as a user would type them after `python train.py`."""
    out = [f"task={task}", f"backbone={backbone}", f"neck={neck}", *COMMON, *TASK_OVERRIDES[task]]
    if backbone == "timm":
        out += GENERIC_TIMM
    if task in RCNN_TASKS and neck == "none":  # Faster / Mask R-CNN without FPN run on the single deepest level
        out.append("backbone.out_levels=[c5]")
    if task == "classification" and neck == "fpn":  # pool every FPN level, as experiment=cls_fpn
        out.append("task.model.in_features=[p2,p3,p4,p5]")
    return out


@contextmanager
def peak_memory() -> Iterator[list[float]]:
    """Yields a one-item list that holds, on exit, the peak memory in MB (see the module docstring)."""
    import torch

    result = [float("nan")]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        yield result
        result[0] = torch.cuda.max_memory_allocated() / 2**20
        return
    statm = Path("/proc/self/statm")
    try:  # hand freed heap back to the system, so the growth below is this cell's
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    if not statm.exists():
        yield result
        return
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        return int(statm.read_text().split()[1]) * page

    start, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result[0] = max(0, max(peak[0], rss()) - start) / 2**20


def run_cell(task: str, backbone: str, neck: str, steps: int = 3, extra: Sequence[str] = (),
             horizon: int = HORIZON) -> Cell:
    """Compose the cell's config as train.py does, build data and model, and fit the first `steps` optimizer steps
    of a run `horizon` steps long (so the LR schedule, warm-up included, is where a real run's would be)."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from backbones.hydra_configs import register_configs
    from tasks.bn_calibration import resolve_norm_policy
    from tasks.build import build_task
    from tasks.run_dir import register_resolvers

    cell = Cell(task, backbone, neck)
    register_configs()
    register_resolvers()

    class Recorder(L.Callback):
        def on_train_batch_start(self, *args) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            cell.step_seconds.append(time.perf_counter() - self.t0)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            cell.losses.append(float(loss))
            cell.terms.append({k: round(float(v), 3) for k, v in outputs.items()} if isinstance(outputs, dict) else {})

    try:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides(task, backbone, neck), *extra], return_hydra_config=True)
        # `${hydra:runtime.output_dir}` resolves as in a train.py run; nothing is written there
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = tempfile.gettempdir()
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        L.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        with peak_memory() as peak:
            callbacks = resolve_norm_policy(cfg)
            cell.note = "calibrated frozen BN" if cfg.backbone.calibrate_bn else f"norm={cfg.backbone.norm}"
            module = build_task(cfg, datamodule.class_names, getattr(datamodule, "category_ids", None))
            datamodule.use_preprocessing(module.preprocessing)  # as train.py: the model's record
            if module.scheduler_factory is not None:
                schedule = module.scheduler_factory
                module.scheduler_factory = lambda optimizer, total_steps: schedule(optimizer, total_steps=horizon)
            trainer = L.Trainer(accelerator="auto", devices=1, max_steps=steps, limit_val_batches=0,
                                num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                callbacks=[*callbacks, Recorder()])
            trainer.fit(module, datamodule=datamodule)
        cell.peak_mb = peak[0]
    except Exception as err:  # a failing cell is a row of the table, not the end of the run
        cell.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if os.environ.get("MATRIX_TRACEBACK"):
            traceback.print_exc()
    finally:
        gc.collect()
        if "torch" in sys.modules and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return cell


TEST_METRIC = {"classification": "test/acc1", "detection": "test/AP", "segmentation": "test/mIoU",
               "instance_segmentation": "test/segm/AP"}


@dataclass
class FitCell:
    task: str
    backbone: str
    neck: str
    metric: float = float("nan")
    seconds: float = float("nan")
    error: str = ""


def fit_cell(task: str, backbone: str, neck: str, extra: Sequence[str] = (), cwd: str | None = None) -> FitCell:
    """The task's whole default run on the cell, as a user types it (`python train.py task=... backbone=... neck=...`,
    plus `extra`), in a subprocess with a CSV logger; its test metric (`TEST_METRIC`) and wall time."""
    from tasks.train_run import train

    cell = FitCell(task, backbone, neck)
    args = [f"task={task}", f"backbone={backbone}", f"neck={neck}", *extra]
    if backbone == "timm":
        args += GENERIC_TIMM
    if task in RCNN_TASKS and neck == "none":
        args.append("backbone.out_levels=[c5]")
    with tempfile.TemporaryDirectory() as tmp:
        result = train(args, Path(tmp) / "run", cwd=cwd or tmp)
    cell.seconds, cell.error = result.seconds, result.error
    if not cell.error:
        cell.metric = result.last(TEST_METRIC[task])
        if math.isnan(cell.metric):
            cell.error = f"no {TEST_METRIC[task]} in metrics.csv"
    return cell


def format_table(rows: Sequence[Cell], markdown: bool = False) -> str:
    head = ["task", "backbone", "neck", "BN", "first loss", "last loss", "finite", "s/step", "peak MB", "error"]
    lines = []
    for c in rows:
        first = f"{c.losses[0]:.3f}" if c.losses else "-"
        last = f"{c.losses[-1]:.3f}" if c.losses else "-"
        lines.append([c.task, c.backbone, c.neck, c.note, first, last, "yes" if c.finite else "NO",
                      f"{c.seconds_per_step:.2f}", f"{c.peak_mb:.0f}", c.error[:80]])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in lines])
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*r) for r in lines])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--backbones", nargs="+", default=None, help="registry names (default: all)")
    parser.add_argument("--necks", nargs="+", default=list(NECKS), choices=NECKS)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per cell")
    parser.add_argument("--horizon", type=int, default=HORIZON, help="length of the run whose first steps are taken")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--fit", action="store_true",
                        help="run each cell's whole default training (minutes to an hour each on a CPU) and report "
                             "its test metric instead of a few steps")
    parser.add_argument("--extra", nargs="*", default=[],
                        help="more train.py overrides for every cell, e.g. task.model.representation_size=256")
    args = parser.parse_args(argv)
    if args.fit:
        return main_fit(cells(args.tasks, args.backbones, args.necks), args.extra)

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    todo = cells(args.tasks, args.backbones, args.necks)
    rows = []
    for i, (task, backbone, neck) in enumerate(todo, 1):
        cell = run_cell(task, backbone, neck, steps=args.steps, extra=args.extra, horizon=args.horizon)
        rows.append(cell)
        status = "ok" if cell.ok else f"FAILED {cell.error or 'non-finite loss'}"
        print(f"[{i}/{len(todo)}] {task} {backbone} {neck}: {status} ({cell.seconds_per_step:.2f} s/step)",
              flush=True)
    print(format_table(rows, markdown=args.markdown))
    failed = [c for c in rows if not c.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} cells passed")
    return 1 if failed else 0


def main_fit(todo: Sequence[tuple[str, str, str]], extra: Sequence[str]) -> int:
    rows = []
    for i, (task, backbone, neck) in enumerate(todo, 1):
        cell = fit_cell(task, backbone, neck, extra)
        rows.append(cell)
        result = cell.error or f"{TEST_METRIC[task]} {cell.metric:.3f}"
        print(f"[{i}/{len(todo)}] {task} {backbone} {neck}: {result} ({cell.seconds / 60:.1f} min)", flush=True)
    print("| task | backbone | neck | test metric | value | minutes |\n|---|---|---|---|---|---|")
    for c in rows:
        value = c.error or f"{c.metric:.3f}"
        print(f"| {c.task} | {c.backbone} | {c.neck} | {TEST_METRIC[c.task]} | {value} | {c.seconds / 60:.1f} |")
    failed = [c for c in rows if c.error or not c.metric > 0]
    print(f"{len(rows) - len(failed)} of {len(rows)} runs ended with a non-zero test metric")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
