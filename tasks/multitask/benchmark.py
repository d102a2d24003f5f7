"""`benchmark.py --multitask`: the joint model against one single-head model per head, on the same data, epochs and
seed, all through `train.py` (`task=multitask task.heads=[<head>]` is the single-task model of that head on the
joint data: the same pipeline, targets and metrics).

Per run: each head's test metric (`MAIN_METRIC`), the training time per epoch (the seconds spent in training steps,
`TrainStepTime`: forward, backward, optimizer; no data loading, no validation) and, measured afterwards in this
process with the runs' best checkpoints interleaved, the inference time per image (batch 1, eval mode, after warm-up).
Then Δ_MTL (Maninis et al. 2019; Vandenhende et al. 2021: the mean relative change of each head's metric against
its single-task model, in %), the largest drop in points, and the joint / summed-single time ratios.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..train_run import train

MAIN_METRIC = {"detection": "detection/AP", "instance_segmentation": "instance_segmentation/segm/AP",
               "segmentation": "segmentation/mIoU", "classification": "classification/mAP"}
TARGETS = {"delta": 0.0, "drop_points": 1.0, "inference_ratio": 0.5, "train_ratio": 0.6}


@dataclass
class Run:
    name: str
    heads: list[str]
    weighting: str
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)  # head -> test main metric
    epoch_seconds: float = float("nan")  # median over epochs after the first
    infer_seconds: float = float("nan")  # median per image
    wall_seconds: float = float("nan")
    error: str = ""


def train_run(run: Run, seed: int, overrides: Sequence[str]) -> Run:
    """`python train.py task=multitask task.heads=[...]` in a subprocess; reads the CSV log."""
    args = ["task=multitask", f"task.heads=[{','.join(run.heads)}]", f"task.module.weighting.method={run.weighting}",
            f"seed={seed}", "callbacks=minimal",
            "+callbacks.step_time._target_=tasks.step_cost.TrainStepTime", *overrides]
    result = train(args, run.run_dir)
    run.wall_seconds, run.error = result.seconds, result.error
    if run.error:
        return run
    for head in run.heads:
        run.metrics[head] = result.last(f"test/{MAIN_METRIC[head]}")
    epochs = result.series("time/train_steps_s")
    run.epoch_seconds = statistics.median(epochs[1:] or epochs) if epochs else float("nan")
    return run


def inference_seconds(runs: Sequence[Run], num_images: int, repeats: int) -> None:
    """Median eval seconds per image (batch 1) of each run's best checkpoint, the runs interleaved per repeat so that
    each sees the same machine state; the images are the val split's first `num_images`, at their own size."""
    from hydra.utils import instantiate

    from tasks.restore import load_checkpoint

    loaded = {}
    for run in runs:
        ckpts = sorted((run.run_dir / "checkpoints").glob("best-*.ckpt"))
        if ckpts and not run.error:
            loaded[run.name] = load_checkpoint(ckpts[-1])
    if not loaded:
        return
    modules = {name: item.module for name, item in loaded.items()}
    datamodule = instantiate(next(iter(loaded.values())).config.data)  # every run read the same data
    datamodule.prepare_data()
    datamodule.setup("validate")
    dataset = datamodule.dataset("val", train=False)
    images = [dataset[i][0] for i in range(min(num_images, len(dataset)))]
    times: dict[str, list[float]] = {name: [] for name in modules}
    with torch.inference_mode():
        for module in modules.values():  # warm-up
            module.predict_step([images[0]], 0)
        for _ in range(repeats):
            for name, module in modules.items():
                start = time.perf_counter()
                for image in images:
                    module.predict_step([image], 0)
                times[name].append((time.perf_counter() - start) / len(images))
    for run in runs:
        if run.name in times:
            run.infer_seconds = statistics.median(times[run.name])


def delta_mtl(joint: dict[str, float], single: dict[str, float]) -> float:
    """Mean over heads of (joint - single) / single, in %; every main metric is higher-is-better."""
    return 100.0 * statistics.mean((joint[h] - single[h]) / single[h] for h in single)


def report(singles: dict[str, Run], joints: Sequence[Run]) -> str:
    heads = list(singles)
    sum_train = sum(r.epoch_seconds for r in singles.values())
    sum_infer = sum(r.infer_seconds for r in singles.values())
    lines = ["| model | " + " | ".join(MAIN_METRIC.get(h, h) for h in heads)
             + " | Δ_MTL % | largest drop (points) | train s/epoch | x sum of singles | ms/image | x sum of singles |",
             "|---|" + "---|" * (len(heads) + 6)]
    for head, run in singles.items():
        cells = [f"{run.metrics.get(h, float('nan')):.3f}" if h == head else "" for h in heads]
        lines.append(f"| single: {head} | " + " | ".join(cells) + f" | | | {run.epoch_seconds:.1f} | | "
                     f"{1000 * run.infer_seconds:.1f} | |" + (f" {run.error}" if run.error else ""))
    for run in joints:
        if run.error:
            lines.append(f"| joint ({run.weighting}) | {run.error} |")
            continue
        single = {h: singles[h].metrics[h] for h in heads}
        delta = delta_mtl(run.metrics, single)
        drop = max(100.0 * (single[h] - run.metrics[h]) for h in heads)
        lines.append(f"| joint ({run.weighting}) | " + " | ".join(f"{run.metrics[h]:.3f}" for h in heads)
                     + f" | {delta:+.2f} | {drop:.1f} | {run.epoch_seconds:.1f} | "
                     f"{run.epoch_seconds / sum_train:.2f} | {1000 * run.infer_seconds:.1f} | "
                     f"{run.infer_seconds / sum_infer:.2f} |")
    return "\n".join(lines)


def main_multitask(heads: Sequence[str], weightings: Sequence[str], seed: int, overrides: Sequence[str],
                   num_images: int = 20, repeats: int = 3, keep: str | None = None) -> str:
    """Train the single-head runs and one joint run per weighting, time inference, return the Markdown table."""
    out = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="cerberus-mtl-"))
    singles = {h: Run(f"single-{h}", [h], "equal", out / f"single-{h}") for h in heads}
    joints = [Run(f"joint-{w}", list(heads), w, out / f"joint-{w}") for w in weightings]
    for run in [*singles.values(), *joints]:
        train_run(run, seed, overrides)
        state = run.error or ", ".join(f"{h} {v:.3f}" for h, v in run.metrics.items())
        print(f"{run.name}: {state} ({run.epoch_seconds:.1f} s/epoch in steps, {run.wall_seconds / 60:.1f} min)",
              flush=True)
    inference_seconds([*singles.values(), *joints], num_images, repeats)
    print(f"runs in {out}")
    return report(singles, joints)
