"""`benchmark.py --step-cost`: what a config change costs per training step, measured side by side.

Each config (the task's defaults plus a few overrides: a wider box head, another loss weighting) builds its module
once on the same data and seed; then, round after round, each trains a few steps in its own short `Trainer.fit`, the
configs interleaved so that every one sees the same machine state (the ratio against the first config is what to
read on a shared machine). Steps are timed by `TrainStepTime`: forward, backward and optimizer step, no data loading;
the first step of each fit is left out (warm-up). Each fit then validates on as many batches, timed the same way
(eval-mode forward, post-processing, the metrics' update): the inference cost. `--multitask --step-cost --weightings
...` is this with one config per loss weighting: PCGrad and GradNorm take one backward pass per head through the
shared body where equal / uncertainty / DWA take one for the summed loss.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence

import lightning as L
import torch


class TrainStepTime(L.Callback):
    """Logs `time/train_steps_s` once per epoch: the seconds its training steps took (forward, backward, optimizer
    step), without data loading, validation or logging between steps; `steps` keeps every step's seconds,
    `eval_steps` every validation step's (forward in eval mode, post-processing and the metrics' update)."""

    def __init__(self) -> None:
        self.total, self.start = 0.0, 0.0
        self.steps: list[float] = []
        self.eval_steps: list[float] = []

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total = 0.0

    def on_train_batch_start(self, *args: object) -> None:
        self.start = self._now()

    def on_train_batch_end(self, *args: object) -> None:
        self.steps.append(self._now() - self.start)
        self.total += self.steps[-1]

    def on_validation_batch_start(self, *args: object) -> None:
        self.start = self._now()

    def on_validation_batch_end(self, *args: object) -> None:
        self.eval_steps.append(self._now() - self.start)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("time/train_steps_s", self.total, sync_dist=True, reduce_fx="max")


def step_seconds(configs: Mapping[str, Sequence[str]], base: Sequence[str], steps: int = 6, rounds: int = 3,
                 seed: int = 42) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per training step and per validation batch of each config (`base` + its overrides; `steps` - 1 timed
    steps of each x `rounds`, interleaved). The data module is the first config's, shared by all."""
    from hydra.utils import instantiate

    from backbones.hydra_configs import compose_config
    from data.splits import SplitDataModule

    from .build import build_task
    from .hardware import fit_to_hardware
    from .quiet import quiet_libraries

    if steps < 2:
        raise ValueError(f"--steps {steps}: the step cost needs at least 2 steps per round (the first is warm-up)")
    quiet_libraries()
    modules, datamodule, trainer_cfg = {}, None, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in configs.items():
            # BN calibration is the same one-off pass for every config: left out of a per-step timing
            cfg = compose_config([*base, "backbone.calibrate_bn=false", f"seed={seed}", *overrides], output_dir=tmp)
            fit_to_hardware(cfg.trainer)
            L.seed_everything(seed, verbose=False)
            if datamodule is None:
                datamodule, trainer_cfg = instantiate(cfg.data), cfg.trainer
                datamodule.prepare_data()
            modules[name] = build_task(cfg, datamodule.class_names, getattr(datamodule, "category_ids", None))
            if isinstance(datamodule, SplitDataModule):  # as train.py: the model's eval transforms and padding
                datamodule.use_preprocessing(modules[name].preprocessing)
        times: dict[str, list[float]] = {name: [] for name in configs}
        eval_times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(rounds):
            for name, module in modules.items():
                timer = TrainStepTime()
                trainer = L.Trainer(accelerator=trainer_cfg.accelerator, devices=1,
                                    precision=trainer_cfg.precision, max_epochs=1, limit_train_batches=steps,
                                    limit_val_batches=steps, num_sanity_val_steps=0, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, callbacks=[timer], default_root_dir=tmp)
                trainer.fit(module, datamodule=datamodule)
                if len(timer.steps) < steps:
                    raise ValueError(f"--steps {steps}: the training data gives only {len(timer.steps)} batch(es) "
                                     "per epoch; use more training images, a smaller batch or fewer --steps")
                times[name].extend(timer.steps[1:])
                eval_times[name].extend(timer.eval_steps[1:] or timer.eval_steps)  # the first is warm-up
    return times, eval_times


def report_step_cost(times: Mapping[str, Sequence[float]], eval_times: Mapping[str, Sequence[float]],
                     what: str = "config", base: str | None = None) -> str:
    """Markdown table: median ms per training step and per validation batch, each with its ratio to `base`'s
    (default: the first config's)."""
    train = {m: statistics.median(s) for m, s in times.items()}
    evals = {m: statistics.median(s) if s else float("nan") for m, s in eval_times.items()}
    base = base if base in train else next(iter(train))
    n, n_eval = len(next(iter(times.values()))), len(next(iter(eval_times.values())))
    lines = [f"| {what} | ms per training step (median of {n}) | x {base} | ms per validation batch (median of "
             f"{n_eval}) | x {base} |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {1000 * v:.0f} | {v / train[base]:.2f} | {1000 * evals[m]:.0f} | {evals[m] / evals[base]:.2f} |"
              for m, v in train.items()]
    return "\n".join(lines)


def parse_configs(configs: Sequence[str]) -> dict[str, list[str]]:
    """`--configs defaults "task.model.representation_size=256 ..."`: one config per argument, its overrides
    separated by spaces; `defaults` is the task's own config."""
    if len(configs) < 2:
        raise ValueError("--step-cost compares configs: give at least two with --configs, e.g. "
                         "--configs defaults task.model.representation_size=256")
    parsed = {c: ([] if c == "defaults" else c.split()) for c in configs}
    if len(parsed) < len(configs):
        raise ValueError(f"--configs {' '.join(configs)}: a config is given twice")
    return parsed


def main_step_cost(configs: Mapping[str, Sequence[str]], base: Sequence[str], steps: int, rounds: int, seed: int,
                   what: str = "config", model: str = "model", reference: str | None = None) -> str:
    """The table of `step_seconds`, ratios to `reference` (default: the first config)."""
    times, eval_times = step_seconds(configs, base, steps=steps, rounds=rounds, seed=seed)
    return (f"\n{model}, {torch.get_num_threads()} threads, torch {torch.__version__}: {rounds} rounds x "
            f"{steps - 1} timed training steps (and up to as many validation batches) per {what}, interleaved\n"
            + report_step_cost(times, eval_times, what, base=reference))
