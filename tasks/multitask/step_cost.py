"""`benchmark.py --multitask --step-cost`: what each loss weighting costs per training step on the same joint model.

PCGrad and GradNorm take one backward pass per head through the shared body (PCGrad to project the heads' gradients,
GradNorm to measure their norms) where equal / uncertainty / DWA take one for the summed loss, so their steps are
dearer. Each weighting's module is built once on the same data and seed; then, round after round, each trains a few
steps in its own short `Trainer.fit`, the weightings interleaved so that every one sees the same machine state (the
ratio against `equal` is what to read on a shared machine). Steps are timed as `TrainStepTime` times them: forward,
backward and optimizer step, no data loading; the first step of each fit is left out (warm-up).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence

import lightning as L
import torch

from .benchmark import TrainStepTime


def step_seconds(weightings: Sequence[str], overrides: Sequence[str], steps: int = 6, rounds: int = 3,
                 seed: int = 42) -> dict[str, list[float]]:
    """Seconds per training step of each weighting (`steps` - 1 timed steps x `rounds`, interleaved)."""
    from hydra.utils import instantiate

    from backbones.hydra_configs import compose_config
    from data.splits import SplitDataModule

    from ..build import build_task
    from ..hardware import fit_to_hardware
    from ..quiet import quiet_libraries

    if steps < 2:
        raise ValueError(f"--steps {steps}: the step cost needs at least 2 steps per round (the first is warm-up)")
    quiet_libraries()
    modules, datamodule, trainer_cfg = {}, None, None
    with tempfile.TemporaryDirectory() as tmp:
        for method in weightings:
            # BN calibration is the same one-off pass for every weighting: left out of a per-step timing
            cfg = compose_config(["task=multitask", f"task.module.weighting.method={method}",
                                  "backbone.calibrate_bn=false", f"seed={seed}", *overrides], output_dir=tmp)
            fit_to_hardware(cfg.trainer)
            L.seed_everything(seed, verbose=False)
            if datamodule is None:
                datamodule, trainer_cfg = instantiate(cfg.data), cfg.trainer
                datamodule.prepare_data()
            modules[method] = build_task(cfg, datamodule.class_names, getattr(datamodule, "category_ids", None))
            if isinstance(datamodule, SplitDataModule):  # as train.py: the model's eval transforms and padding
                datamodule.use_preprocessing(modules[method].preprocessing)
        times: dict[str, list[float]] = {m: [] for m in weightings}
        for _ in range(rounds):
            for method, module in modules.items():
                timer = TrainStepTime()
                trainer = L.Trainer(accelerator=trainer_cfg.accelerator, devices=1,
                                    precision=trainer_cfg.precision, max_epochs=1, limit_train_batches=steps,
                                    limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, callbacks=[timer], default_root_dir=tmp)
                trainer.fit(module, datamodule=datamodule)
                times[method].extend(timer.steps[1:])
    return times


def report_step_cost(times: dict[str, list[float]]) -> str:
    """Markdown table: median ms per step and its ratio to `equal`'s (or the first weighting's)."""
    medians = {m: statistics.median(s) for m, s in times.items()}
    base = "equal" if "equal" in medians else next(iter(medians))
    lines = [f"| weighting | ms per training step (median of {len(next(iter(times.values())))}) | x {base} |",
             "|---|---|---|"]
    lines += [f"| {m} | {1000 * v:.0f} | {v / medians[base]:.2f} |" for m, v in medians.items()]
    return "\n".join(lines)


def main_step_cost(weightings: Sequence[str], overrides: Sequence[str], steps: int, rounds: int, seed: int) -> str:
    times = step_seconds(weightings, overrides, steps=steps, rounds=rounds, seed=seed)
    return (f"\njoint model, {torch.get_num_threads()} threads, torch {torch.__version__}: {rounds} rounds x "
            f"{steps - 1} timed steps per weighting, interleaved\n" + report_step_cost(times))
