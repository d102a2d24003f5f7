"""Training throughput: Cerberus (Hydra config -> registry -> LightningModule -> Trainer) against a plain
hand-written PyTorch loop, same torchvision ResNet, same in-memory data and batch size, in one process.

    uv run python benchmark.py                       # resnet18, 64 px, batch 32
    uv run python benchmark.py --backbone resnet50 --image-size 128 --repeats 5

Two measurements, both printed:
- paired: inside one Cerberus run, a callback runs one plain-loop step (its own model and optimizer) on
  the same batch right after each Cerberus step, so both see the same machine state step by step; all of
  Lightning's per-step work stays inside Cerberus' interval. This is the figure to quote on a noisy machine.
- sequential: whole runs of each, alternating which goes first.
images/s counts steps after `--warmup`; medians over `--repeats`. Cerberus' side carries everything a
real run has per step: torchmetrics accuracy, `self.log`, the LR scheduler, LR monitor, Rich progress bar.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import lightning as L
import torch
import torchvision
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tasks.build import build_task
from tasks.config import compose_config


OVERRIDES = ["optim=sgd", "optim.lr=0.01", "logger=csv", "data.num_workers=0"]


class PlainStep:
    """What a user would write by hand: torchvision model, cross-entropy, and the same optimizer
    (built from the same `optim` config partial: SGD, momentum 0.9, Nesterov, weight decay 1e-4)."""

    def __init__(self, arch: str, num_classes: int, optimizer) -> None:
        self.model = getattr(torchvision.models, arch)(num_classes=num_classes).train()
        self.opt = optimizer(self.model.parameters())
        self.criterion = nn.CrossEntropyLoss()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        loss = self.criterion(self.model(images), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class StepTimer(L.Callback):
    """Timestamps every Cerberus step; with `paired`, also runs and times one plain step after each."""

    def __init__(self, paired: PlainStep | None = None) -> None:
        self.paired = paired
        self.times: list[float] = []
        self.cerberus_s: list[float] = []
        self.plain_s: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.times:
            self.cerberus_s.append(now - self.times[-1])
        if self.paired is not None:
            self.paired(*batch)
            self.plain_s.append(time.perf_counter() - now)
        self.times.append(time.perf_counter())


def images_per_second(seconds: list[float], warmup: int, batch: int) -> float:
    steady = seconds[warmup:]
    return batch * len(steady) / sum(steady)


def plain_loop(args, loader: DataLoader, num_classes: int, run_dir: str) -> float:
    step = PlainStep(args.backbone, num_classes, instantiate(compose_config(OVERRIDES, run_dir).optim))
    seconds, last = [], time.perf_counter()
    for images, labels in loader:
        step(images, labels)
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
    return images_per_second(seconds[1:], args.warmup, args.batch_size)


def cerberus(args, loader: DataLoader, num_classes: int, run_dir: str, paired: bool = False) -> StepTimer:
    cfg = compose_config([f"backbone={args.backbone}", *OVERRIDES], output_dir=run_dir)
    module = build_task(cfg, [str(i) for i in range(num_classes)])
    timer = StepTimer(PlainStep(args.backbone, num_classes, instantiate(cfg.optim)) if paired else None)
    callbacks = [instantiate(c) for name, c in cfg.callbacks.items() if name != "model_checkpoint"]
    trainer = instantiate(cfg.trainer, max_epochs=1, limit_val_batches=0, enable_checkpointing=False,
                          num_sanity_val_steps=0, callbacks=[*callbacks, timer], logger=instantiate(cfg.logger))
    trainer.fit(module, train_dataloaders=loader)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18", help="a torchvision ResNet-family name")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    g = torch.Generator().manual_seed(0)
    n = args.batch_size * args.steps
    data = TensorDataset(torch.randn(n, 3, args.image_size, args.image_size, generator=g),
                         torch.randint(0, args.classes, (n,), generator=g))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, drop_last=True)

    ips = lambda seconds: images_per_second(seconds, args.warmup, args.batch_size)  # noqa: E731
    results: dict[str, dict[str, list[float]]] = {m: {"plain": [], "cerberus": []} for m in ("paired", "sequential")}
    with tempfile.TemporaryDirectory() as run_dir:
        for r in range(args.repeats):
            torch.manual_seed(r)
            timer = cerberus(args, loader, args.classes, run_dir, paired=True)
            results["paired"]["cerberus"].append(ips(timer.cerberus_s))
            results["paired"]["plain"].append(ips(timer.plain_s[1:]))
            order = ["plain", "cerberus"] if r % 2 == 0 else ["cerberus", "plain"]
            for name in order:
                value = plain_loop(args, loader, args.classes, run_dir) if name == "plain" else \
                    ips(cerberus(args, loader, args.classes, run_dir).cerberus_s)
                results["sequential"][name].append(value)
            print(f"repeat {r}: " + "; ".join(
                f"{m} plain {v['plain'][-1]:.1f} / cerberus {v['cerberus'][-1]:.1f} images/s"
                for m, v in results.items()), flush=True)

    print(f"\n{args.backbone}, {args.image_size}px, batch {args.batch_size}, {args.steps} steps "
          f"({args.warmup} warmup), {args.repeats} repeats, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device cpu")
    for mode, v in results.items():
        plain, ours = statistics.median(v["plain"]), statistics.median(v["cerberus"])
        ratios = sorted(c / p for c, p in zip(v["cerberus"], v["plain"]))
        print(f"{mode:10s}: plain {plain:7.1f} images/s, Cerberus {ours:7.1f} images/s (medians); "
              f"ratio {statistics.median(ratios):.3f} (median of per-repeat ratios "
              f"{', '.join(f'{x:.3f}' for x in ratios)}); target >= 0.97")


if __name__ == "__main__":
    main()
