"""Throughput of Cerberus (Hydra config -> registry -> LightningModule -> Trainer) against plain loops over the
same torchvision models, same in-memory data and batch size, in one process.

    uv run python benchmark.py                                  # classification: resnet18, 64 px, batch 32
    uv run python benchmark.py --task detection                 # Faster R-CNN: resnet50 + FPN, 128 px, batch 4
    uv run python benchmark.py --task segmentation              # U-Net: resnet34, 128 px, batch 8
    uv run python benchmark.py --multitask                      # joint model vs one single-head model per head
    uv run python benchmark.py --multitask --step-cost --weightings equal pcgrad gradnorm   # ms per step, x equal
    uv run python benchmark.py --step-cost --task detection --configs defaults task.model.representation_size=1024
    uv run python benchmark.py --latency                        # ResNet-50 classifier: eager vs onnxruntime FP32 / INT8
    uv run python benchmark.py --latency --task segmentation    # P50/P95/P99, throughput, peak memory
    uv run python benchmark.py --recipes defaults plain --kinds thin glyphs   # recipes x dataset kinds, mIoU
    uv run python benchmark.py --recipes --task detection --kinds glyphs       # detection recipes vs torchvision, AP

classification: Cerberus' training against a hand-written loop over the same torchvision ResNet.
detection: Cerberus' training and inference against torchvision's own `fasterrcnn_resnet50_fpn` construction
(`_resnet_fpn_extractor`, FrozenBatchNorm, same trainable stages) with the task's detector settings. Both start
from the same weights: a backbone with BatchNorm statistics measured on the benchmark images (standing in for
pretrained weights, loaded through `backbone.weights`) and Cerberus' initial heads copied into torchvision's
model; both train with SGD lr 0.002 on the same schedule, and a run whose loss is not finite is refused.
segmentation: Cerberus' U-Net training against segmentation-models-pytorch's `Unet` on the same encoder.

Two measurements:
- paired: inside one Cerberus run, a callback runs one plain step (its own model and optimizer) on the same
  batch next to each Cerberus step, alternately after and before it, so both see the same machine state
  step by step; all of Lightning's per-step work stays inside Cerberus' interval. The figure to quote on a
  noisy machine.
- sequential (classification): whole runs of each, alternating which goes first.
images/s counts steps after `--warmup`; medians over `--repeats`. Cerberus carries everything a real run has
per step: its metrics, `self.log`, the LR scheduler, LR monitor and the Rich progress bar.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import lightning as L
import torch
import torchvision
from hydra.utils import instantiate
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from backbones.catalog import IMAGENET_MEAN, IMAGENET_STD
from backbones.hydra_configs import compose_config
from tasks.build import build_task
from tasks.detection import torchvision_state_dict
from tasks.hardware import fit_to_hardware

OVERRIDES = ["optim=sgd", "optim.lr=0.01", "logger=csv", "data.num_workers=0"]


class StepTimer(L.Callback):
    """Times every Cerberus train / predict step; with `paired`, also runs and times one plain step on the same
    batch, after the Cerberus step on even steps and before it on odd ones: whichever runs second finds warm
    caches and just-freed buffers of the right sizes, so the order alternates. Both steps of a pair start from
    the same torch seed, so they draw the same random values (the detector's training scale, its RPN and RoI
    samples) and do the same work."""

    def __init__(self, paired: Callable | None = None) -> None:
        self.paired = paired
        self.last: float | None = None
        self.plain_first = 0.0  # plain time spent inside the current Cerberus interval
        self.cerberus_s: list[float] = []
        self.plain_s: list[float] = []
        self.first_s = math.nan  # the first Cerberus step (with task.module.compile=true: the compilation)
        self._first_start = 0.0

    def _plain(self, batch, batch_idx: int) -> float:
        torch.manual_seed(batch_idx)
        synchronize()
        start = time.perf_counter()
        self.paired(batch)
        synchronize()
        self.plain_s.append(time.perf_counter() - start)
        return self.plain_s[-1]

    def _before_step(self, batch, batch_idx: int) -> None:
        if self.paired is not None and batch_idx % 2 == 1:
            self.plain_first = self._plain(batch, batch_idx)
        torch.manual_seed(batch_idx)
        if self.last is None:
            self._first_start = time.perf_counter()

    def _after_step(self, batch, batch_idx: int) -> None:
        synchronize()
        now = time.perf_counter()
        if self.last is None:
            self.first_s = now - self._first_start
        else:
            self.cerberus_s.append(now - self.last - self.plain_first)
        self.plain_first = 0.0
        if self.paired is not None and batch_idx % 2 == 0:
            self._plain(batch, batch_idx)
        synchronize()
        self.last = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._before_step(batch, batch_idx)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._after_step(batch, batch_idx)

    def on_predict_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self._before_step(batch, batch_idx)

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._after_step(batch, batch_idx)


def images_per_second(seconds: list[float], warmup: int, batch: int) -> float:
    steady = seconds[warmup:]
    return batch * len(steady) / sum(steady)


TIMERS: list[StepTimer] = []  # every Cerberus run's, for the first-step (compilation) figure


def make_trainer(cfg, timer: StepTimer) -> L.Trainer:
    TIMERS.append(timer)
    callbacks = [instantiate(c) for name, c in cfg.callbacks.items() if name != "model_checkpoint"]
    fit_to_hardware(cfg.trainer)
    return instantiate(cfg.trainer, max_epochs=1, limit_val_batches=0, enable_checkpointing=False,
                       num_sanity_val_steps=0, callbacks=[*callbacks, timer], logger=instantiate(cfg.logger))


def check_finite(what: str, loss) -> None:
    if loss is None or not bool(torch.isfinite(torch.as_tensor(loss))):
        raise SystemExit(f"{what} training diverged (last loss {loss}); its step times would be of NaN work, not "
                         "training. Lower the learning rate, e.g. --override optim.lr=0.002")


# --- classification ---------------------------------------------------------------------------------------

def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of (B, 3, H, W) RGB in [0, 1]: in the plain steps, as Cerberus' models do it in their
    first layer (timed in both)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class Placement:
    """Where and in which precision the plain loops run: Cerberus' device (Lightning's `accelerator=auto`: the GPU
    when there is one) under the autocast of its resolved `trainer.precision`, so both sides do the same work."""

    def __init__(self, precision: str = "32-true") -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype is torch.float16 else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def put(self, batch):
        return move_data_to_device(batch, self.device)

    def step(self, loss: torch.Tensor, opt) -> None:
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:  # float16: loss scaling, as Lightning's 16-mixed
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()


def synchronize() -> None:
    """GPU kernels run asynchronously: wait for them before reading the clock."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PlainDenseStep:
    """A hand-written step of a model with one logit tensor: subclasses set `place`, `model`, `opt` (None: inference)
    and `criterion`; batches are (images in [0, 1], labels), normalised in the step as Cerberus' models do."""

    place: Placement
    model: nn.Module
    opt: torch.optim.Optimizer | None
    criterion: nn.Module

    def __call__(self, batch) -> None:
        images, labels = self.place.put(batch)
        if self.opt is None:  # inference
            self.model.eval()
            with torch.inference_mode(), self.place.autocast():
                self.model(normalize(images)).softmax(dim=1)
            return
        with self.place.autocast():
            loss = self.criterion(self.model(normalize(images)), labels)
        self.place.step(loss, self.opt)


class PlainClassifierStep(PlainDenseStep):
    """What a user would write by hand: torchvision model, cross-entropy, and the same optimizer
    (built from the same `optim` config partial: SGD, momentum 0.9, Nesterov, weight decay 1e-4); the input normalised
    in the step, as Cerberus' model normalises it."""

    def __init__(self, arch: str, num_classes: int, optimizer, place: Placement | None = None) -> None:
        self.place = place or Placement()
        self.model = getattr(torchvision.models, arch)(num_classes=num_classes).to(self.place.device).train()
        self.opt = optimizer(self.model.parameters()) if optimizer else None
        self.criterion = nn.CrossEntropyLoss()


def classification(args, run_dir: str) -> dict[str, dict[str, list[float]]]:
    g = torch.Generator().manual_seed(0)
    n = args.batch_size * args.steps
    data = TensorDataset(torch.rand(n, 3, args.image_size, args.image_size, generator=g),
                         torch.randint(0, args.classes, (n,), generator=g))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, drop_last=True)
    cfg = compose_config([f"backbone={args.backbone}", *OVERRIDES, *args.override], output_dir=run_dir)
    fit_to_hardware(cfg.trainer)
    place = Placement(cfg.trainer.precision)
    ips = lambda seconds: images_per_second(seconds, args.warmup, args.batch_size)  # noqa: E731
    inference: dict[str, list[float]] = {"plain": [], "cerberus": []}

    def cerberus(paired: bool) -> StepTimer:
        module = build_task(cfg, [str(i) for i in range(args.classes)])
        step = PlainClassifierStep(args.backbone, args.classes, instantiate(cfg.optim), place) if paired else None
        timer = StepTimer(step)
        trainer = make_trainer(cfg, timer)
        trainer.fit(module, train_dataloaders=loader)
        check_finite("Cerberus", trainer.callback_metrics.get("train/loss"))
        if paired:
            step.opt = None  # the same plain model, now inference only
            infer = StepTimer(step)
            make_trainer(cfg, infer).predict(module, dataloaders=loader, return_predictions=False)
            inference["cerberus"].append(ips(infer.cerberus_s))
            inference["plain"].append(ips(infer.plain_s[1:]))
        return timer

    def plain() -> float:
        step, seconds, last = PlainClassifierStep(args.backbone, args.classes, instantiate(cfg.optim), place), [], None
        for batch in loader:
            step(batch)
            synchronize()
            now = time.perf_counter()
            if last is not None:
                seconds.append(now - last)
            last = now
        return ips(seconds)

    results = {m: {"plain": [], "cerberus": []} for m in ("paired training", "sequential training")}
    results["paired inference"] = inference
    for r in range(args.repeats):
        torch.manual_seed(r)
        timer = cerberus(paired=True)
        results["paired training"]["cerberus"].append(ips(timer.cerberus_s))
        results["paired training"]["plain"].append(ips(timer.plain_s[1:]))
        for name in (["plain", "cerberus"] if r % 2 == 0 else ["cerberus", "plain"]):
            value = plain() if name == "plain" else ips(cerberus(paired=False).cerberus_s)
            results["sequential training"][name].append(value)
        report_repeat(r, results)
    return results


# --- detection --------------------------------------------------------------------------------------------

def torchvision_detector(cfg, num_classes: int) -> nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn(weights=...) construction on `cfg.backbone.name`, with the task's
    detector settings: FrozenBatchNorm trunk, the same trainable stages, FPN 256, TwoMLPHead."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import FrozenBatchNorm2d

    settings = {k: v for k, v in cfg.task.model.items()
                if k not in ("_target_", "anchor_sizes", "aspect_ratios", "roi_levels", "roi_output_size",
                             "roi_sampling_ratio", "representation_size")}
    if not isinstance(settings["min_size"], int):
        settings["min_size"] = tuple(settings["min_size"])
    resnet = getattr(torchvision.models, cfg.backbone.name)(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(resnet, trainable_layers=5 - cfg.backbone.freeze_at)
    rep = cfg.task.model.representation_size
    return FasterRCNN(backbone, box_head=TwoMLPHead(256 * 7 * 7, rep),
                      box_predictor=FastRCNNPredictor(rep, num_classes + 1), **settings)


class PlainDetectorStep:
    """torchvision's detector in a hand-written loop: `train` steps with the same optimizer and LR schedule, or
    eval inference. `last_loss` is the latest training loss."""

    def __init__(self, model: nn.Module, optimizer=None, scheduler=None, total_steps: int = 0,
                 place: Placement | None = None) -> None:
        self.place = place or Placement()
        self.model = model.to(self.place.device)
        self.opt = optimizer([p for p in model.parameters() if p.requires_grad]) if optimizer else None
        self.scheduler = scheduler(self.opt, total_steps=total_steps) if scheduler and self.opt else None
        self.last_loss = torch.tensor(0.0)

    def __call__(self, batch) -> None:
        images, targets = self.place.put(batch)
        if self.opt is None:
            self.model.eval()
            with torch.inference_mode(), self.place.autocast():
                self.model(list(images))
            return
        self.model.train()
        with self.place.autocast():
            loss = sum(self.model(list(images), list(targets)).values())
        self.place.step(loss, self.opt)
        if self.scheduler is not None:
            self.scheduler.step()
        self.last_loss = loss.detach()


def calibrated_backbone(arch: str, samples: list, path: str) -> str:
    """Save a stand-in for pretrained weights to `path`: torchvision's `arch` at random init, with the BatchNorm
    statistics measured on the benchmark's images (ImageNet-normalised, as the detector feeds them).

    Detection trains on FrozenBatchNorm. With its default statistics (mean 0, variance 1) it normalises nothing,
    activations grow through a random ResNet-50, and SGD at any usable lr reaches NaN within a few steps; a
    diverged detector does different (and less) work than a training one, so its steps are no benchmark."""
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    images = torch.stack([image for image, _ in samples[:32]])
    net.train()
    with torch.no_grad():
        for chunk in images.split(8):
            net(normalize(chunk))
    torch.save(net.state_dict(), path)
    return path


# `cerberus`: the task's CPU-sized detector settings. `torchvision`: experiment=detection_torchvision (2000 / 1000
# proposals, 512 sampled RoIs per image, 1024-wide box head) with the short side kept at the benchmark's image size.
RECIPES: dict[str, Callable[[int], list[str]]] = {
    "cerberus": lambda size: [],
    "torchvision": lambda size: ["experiment=detection_torchvision", f"task.model.min_size={size}",
                                 f"task.model.max_size={size * 3 // 2}"],
}


def detection_batches(args) -> list:
    g = torch.Generator().manual_seed(0)
    s = args.image_size
    samples = []
    for _ in range(args.batch_size * args.steps):
        k = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * s * 0.6
        wh = torch.rand(k, 2, generator=g) * s * 0.3 + s * 0.1
        samples.append((torch.rand(3, s, s, generator=g),
                        {"boxes": torch.cat([xy, xy + wh], 1),
                         "labels": torch.randint(1, args.classes + 1, (k,), generator=g),
                         "iscrowd": torch.zeros(k, dtype=torch.int64)}))
    return samples


def detection(args, run_dir: str) -> dict[str, dict[str, list[float]]]:
    samples = detection_batches(args)
    loader = DataLoader(samples, batch_size=args.batch_size, collate_fn=lambda b: tuple(zip(*b)))
    recipe = RECIPES[args.recipe](args.image_size)
    weights = calibrated_backbone(args.backbone, samples, f"{run_dir}/{args.backbone}_calibrated.pth")
    # SGD at 0.002: torchvision's reference lr scaled to batch 4 (0.005) still diverges here, where random heads
    # meet noise images with no warmup. Both loops get the same lr schedule.
    cfg = compose_config(["task=detection", f"backbone={args.backbone}", *recipe, *OVERRIDES, "optim.lr=0.002",
                          f"backbone.weights={weights}", *args.override],
                         output_dir=run_dir)
    fit_to_hardware(cfg.trainer)
    place = Placement(cfg.trainer.precision)
    ips = lambda seconds: images_per_second(seconds, args.warmup, args.batch_size)  # noqa: E731
    results = {m: {"plain": [], "cerberus": []} for m in ("paired training", "paired inference")}
    for r in range(args.repeats):
        torch.manual_seed(r)
        module = build_task(cfg, [str(i) for i in range(args.classes)])
        plain = torchvision_detector(cfg, args.classes)
        # the same starting weights (under torchvision's key names), so both train alike step by step
        plain.load_state_dict(torchvision_state_dict(module.model))
        plain_step = PlainDetectorStep(plain, instantiate(cfg.optim), instantiate(cfg.scheduler), len(loader), place)
        timer = StepTimer(plain_step)
        trainer = make_trainer(cfg, timer)
        trainer.fit(module, train_dataloaders=loader)
        check_finite("Cerberus", trainer.callback_metrics.get("train/loss"))
        check_finite("The plain loop's", plain_step.last_loss)
        results["paired training"]["cerberus"].append(ips(timer.cerberus_s))
        results["paired training"]["plain"].append(ips(timer.plain_s[1:]))
        timer = StepTimer(PlainDetectorStep(plain, place=place))
        make_trainer(cfg, timer).predict(module, dataloaders=loader, return_predictions=False)
        results["paired inference"]["cerberus"].append(ips(timer.cerberus_s))
        results["paired inference"]["plain"].append(ips(timer.plain_s[1:]))
        report_repeat(r, results)
    return results


# --- segmentation -----------------------------------------------------------------------------------------

class PlainUnetStep(PlainDenseStep):
    """segmentation-models-pytorch's Unet on the same encoder in a hand-written loop: cross-entropy with the
    ignore label, the same optimizer, the input normalised in the step as Cerberus' model normalises it."""

    def __init__(self, encoder: str, num_classes: int, optimizer, channels_last: bool = False,
                 place: Placement | None = None) -> None:
        import segmentation_models_pytorch as smp

        self.place = place or Placement()
        self.model = smp.Unet(encoder, encoder_weights=None, classes=num_classes).to(self.place.device).train()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = optimizer(self.model.parameters()) if optimizer else None
        self.criterion = nn.CrossEntropyLoss(ignore_index=255)


def segmentation(args, run_dir: str) -> dict[str, dict[str, list[float]]]:
    g = torch.Generator().manual_seed(0)
    n, s = args.batch_size * args.steps, args.image_size
    masks = torch.randint(0, args.classes, (n, s, s), generator=g)
    masks[:, : s // 8] = 255  # some ignored pixels, as real masks have
    loader = DataLoader(TensorDataset(torch.rand(n, 3, s, s, generator=g), masks), batch_size=args.batch_size)
    # plain cross-entropy as the smp loop's (the in-memory loader has no data module to count class weights from)
    cfg = compose_config(["task=segmentation", f"backbone={args.backbone}", *OVERRIDES,
                          "task.module.loss.class_weights=null", *args.override],
                         output_dir=run_dir)
    fit_to_hardware(cfg.trainer)
    place = Placement(cfg.trainer.precision)
    ips = lambda seconds: images_per_second(seconds, args.warmup, args.batch_size)  # noqa: E731
    results = {m: {"plain": [], "cerberus": []} for m in ("paired training", "paired inference")}
    for r in range(args.repeats):
        torch.manual_seed(r)
        module = build_task(cfg, [str(i) for i in range(args.classes)])
        step = PlainUnetStep(args.backbone, args.classes, instantiate(cfg.optim),
                             channels_last=args.plain_channels_last, place=place)
        timer = StepTimer(step)
        trainer = make_trainer(cfg, timer)
        trainer.fit(module, train_dataloaders=loader)
        check_finite("Cerberus", trainer.callback_metrics.get("train/loss"))
        results["paired training"]["cerberus"].append(ips(timer.cerberus_s))
        results["paired training"]["plain"].append(ips(timer.plain_s[1:]))
        step.opt = None  # the same plain model, now inference only
        timer = StepTimer(step)
        make_trainer(cfg, timer).predict(module, dataloaders=loader, return_predictions=False)
        results["paired inference"]["cerberus"].append(ips(timer.cerberus_s))
        results["paired inference"]["plain"].append(ips(timer.plain_s[1:]))
        report_repeat(r, results)
    return results


# --- report -----------------------------------------------------------------------------------------------

def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def report_repeat(r: int, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"repeat {r}: " + "; ".join(f"{m} plain {v['plain'][-1]:.1f} / cerberus {v['cerberus'][-1]:.1f} images/s"
                                      for m, v in results.items()), flush=True)


TASKS = ("classification", "detection", "segmentation")
# (backbone, image size, batch, steps, warmup) per task: on this CPU, and for --device-check on a GPU
DEFAULTS = {"classification": ("resnet18", 64, 32, 40, 5), "detection": ("resnet50", 128, 4, 15, 3),
            "segmentation": ("resnet34", 128, 8, 15, 3)}
GPU_CHECK = {"classification": ("resnet50", 224, 64, 30, 5), "detection": ("resnet50", 512, 4, 20, 5),
             "segmentation": ("resnet34", 256, 16, 20, 5)}
VARIANTS = {"eager": ["task.module.channels_last=false", "task.module.compile=false"],
            "channels-last": ["task.module.channels_last=true", "task.module.compile=false"],
            "compile": ["task.module.channels_last=false", "task.module.compile=true"]}


def with_defaults(args: argparse.Namespace, task: str, table: dict) -> argparse.Namespace:
    out = argparse.Namespace(**vars(args))
    out.task = task
    for key, value in zip(("backbone", "image_size", "batch_size", "steps", "warmup"), table[task]):
        if getattr(out, key) is None:
            setattr(out, key, value)
    return out


def run_task(args: argparse.Namespace, run_dir: str) -> dict[str, dict[str, list[float]]]:
    return {"classification": classification, "detection": detection, "segmentation": segmentation}[args.task](
        args, run_dir)


def ddp_check(run_dir: str) -> tuple[str, float]:
    """A 1-device DDP run of train.py (`trainer=ddp trainer.devices=1 experiment=smoke`): its outcome and seconds."""
    import subprocess
    import sys
    from pathlib import Path

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("train.py")), "trainer=ddp",
                           "trainer.devices=1", "experiment=smoke", "logger=csv", f"hydra.run.dir={run_dir}/ddp"],
                          capture_output=True, text=True)
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    outcome = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {lines[-1] if lines else ''}"
    return outcome, time.perf_counter() - start


def device_check(args: argparse.Namespace) -> None:
    """`--device-check`: each task's paired training and inference against its plain loop on this machine's device
    (the GPU when there is one, in the precision `trainer.precision=auto` picks), eager, channels-last and compiled,
    one repeat each, then a 1-device DDP run; one table. Sized for a few minutes on a GPU."""
    table = GPU_CHECK if torch.cuda.is_available() else DEFAULTS
    rows, start = [], time.perf_counter()
    for task in args.check_tasks:
        for variant in args.variants:
            task_args = with_defaults(args, task, table)
            task_args.repeats, task_args.override = 1, [*VARIANTS[variant], *args.override]
            timers = len(TIMERS)
            with tempfile.TemporaryDirectory() as run_dir:
                results = run_task(task_args, run_dir)
            first = TIMERS[timers].first_s  # the training run's first step (the compilation, when compiled)
            for mode, v in results.items():
                if mode.startswith("paired"):
                    rows.append((task, variant, mode.removeprefix("paired "), v["plain"][0], v["cerberus"][0], first))
    with tempfile.TemporaryDirectory() as run_dir:
        ddp, ddp_s = ddp_check(run_dir)
    from tasks.hardware import auto_precision, detect_device

    print(f"\ndevice check: {device_name()}, precision {auto_precision(detect_device('auto'))[0]}, "
          f"torch {torch.__version__}, {time.perf_counter() - start:.0f} s")
    print("| task | variant | pass | plain images/s | Cerberus images/s | ratio | first step s |")
    print("|---|---|---|---|---|---|---|")
    for task, variant, mode, plain, ours, first in rows:
        print(f"| {task} | {variant} | {mode} | {plain:.1f} | {ours:.1f} | {ours / plain:.3f} | {first:.1f} |")
    print(f"| ddp | 1 device | train.py experiment=smoke | | | {ddp} | {ddp_s:.0f} s wall |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="classification")
    parser.add_argument("--backbone", default=None, help="a torchvision ResNet-family name "
                        "(default resnet18 for classification, resnet50 for detection, resnet34 for segmentation)")
    parser.add_argument("--image-size", type=int, default=None, help="default 64 (classification), 128 (others)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default 32 (classification), 4 (detection), 8 (segmentation)")
    parser.add_argument("--steps", type=int, default=None, help="default 40 (classification), 15 (others)")
    parser.add_argument("--warmup", type=int, default=None, help="default 5 (classification), 3 (others)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cerberus",
                        help="detection settings: the task's CPU-sized ones, or torchvision's proposal/RoI counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain-channels-last", action="store_true",
                        help="segmentation: run the plain smp loop channels-last too")
    parser.add_argument("--override", nargs="*", default=[], help="more Cerberus config overrides, e.g. "
                        "task.module.channels_last=true (the plain loop is unchanged)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device-check", action="store_true",
                        help="every task, eager / channels-last / compiled, training and inference against the plain "
                             "loops on this machine's device, plus a 1-device DDP run: one table")
    parser.add_argument("--check-tasks", nargs="+", choices=TASKS, default=list(TASKS), help="--device-check: tasks")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS),
                        help="--device-check: variants")
    parser.add_argument("--multitask", action="store_true",
                        help="the joint model against single-head models on the same data and epochs: Δ_MTL, time")
    parser.add_argument("--heads", nargs="+", default=["detection", "segmentation", "classification"],
                        help="--multitask: the heads")
    parser.add_argument("--weightings", nargs="+", default=["equal", "uncertainty"], help="--multitask: methods")
    parser.add_argument("--seed", type=int, default=42, help="--multitask: every run's seed")
    parser.add_argument("--keep", default=None, help="--multitask: folder for the runs (default: a temporary one)")
    parser.add_argument("--step-cost", action="store_true",
                        help="seconds per training step of each of --configs of --task (with --multitask: of each "
                             "of --weightings on the same joint model), interleaved (--repeats rounds of --steps "
                             "steps, default 6), as ratios to the first")
    parser.add_argument("--configs", nargs="+", default=[],
                        help="--step-cost: configs to compare, one per argument, each `defaults` or a quoted list of "
                             "overrides, e.g. defaults \"task.model.representation_size=1024\"")
    parser.add_argument("--latency", action="store_true",
                        help="inference latency P50/P95/P99 (batch 1) and throughput (--batch-size, default 8) of "
                             "PyTorch eager, onnxruntime FP32 and INT8 for --task, plus peak memory")
    parser.add_argument("--requests", type=int, default=30, help="--latency: batch-1 requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="--latency: rounds (backends interleaved)")
    parser.add_argument("--recipes", nargs="*", default=None,
                        help="--task segmentation (default) or detection: recipes (default: the task's list) trained "
                             "on each dataset kind next to a plain smp / torchvision loop: one table of test metric "
                             "and seconds")
    parser.add_argument("--kinds", nargs="+", default=None, help="--recipes: dataset kinds (default: all)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="--recipes: epochs of every run (default: segmentation 12, detection 6)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.recipes is not None:
        from data.kinds import KINDS
        from tasks.recipes import main_recipes

        task = args.task if args.task != "classification" else "segmentation"
        print(main_recipes(args.kinds or KINDS, args.recipes, args.epochs, args.seed, args.override, task=task))
        return
    if args.latency:
        from tasks.export.latency import main_latency

        backbone = args.backbone or ("resnet50" if args.task == "classification" else "resnet18")
        print(main_latency(args.task, backbone, args.image_size, args.batch_size or 8, args.requests, args.rounds,
                           args.warmup or 5, args.override))
        return
    if args.step_cost:
        from tasks.step_cost import main_step_cost, parse_configs

        if args.multitask:
            configs = {m: [f"task.module.weighting.method={m}"] for m in args.weightings}
            base = ["task=multitask", f"task.heads=[{','.join(args.heads)}]"]
            what, model, reference = "weighting", "joint model", "equal"
        else:
            configs = parse_configs(args.configs)
            base = [f"task={args.task}"] + ([f"backbone={args.backbone}"] if args.backbone else [])
            what, model, reference = "config", f"{args.task} model", None
        print(main_step_cost(configs, [*base, *args.override], args.steps or 6, args.repeats, args.seed, what, model,
                             reference))
        return
    if args.multitask:
        from tasks.multitask.benchmark import main_multitask

        print(main_multitask(args.heads, args.weightings, args.seed, args.override, repeats=args.repeats,
                             keep=args.keep))
        return
    if args.device_check:
        device_check(args)
        return
    args = with_defaults(args, args.task, DEFAULTS)

    with tempfile.TemporaryDirectory() as run_dir:
        results = run_task(args, run_dir)

    recipe = f", recipe {args.recipe}" if args.task == "detection" else ""
    print(f"\n{args.task}{recipe}: {args.backbone}, {args.image_size}px, batch {args.batch_size}, {args.steps} steps "
          f"({args.warmup} warmup), {args.repeats} repeats, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device_name()}")
    first = [t.first_s for t in TIMERS if math.isfinite(t.first_s)]
    if first:
        print(f"first Cerberus step: median {statistics.median(first):.1f} s over {len(first)} runs "
              "(with task.module.compile=true it includes the compilation)")
    target = 0.97 if args.task == "classification" else 1.0
    for mode, v in results.items():
        plain, ours = statistics.median(v["plain"]), statistics.median(v["cerberus"])
        ratios = sorted(c / p for c, p in zip(v["cerberus"], v["plain"]))
        print(f"{mode:20s}: plain {plain:7.1f} images/s, Cerberus {ours:7.1f} images/s (medians); "
              f"ratio {statistics.median(ratios):.3f} (median of per-repeat ratios "
              f"{', '.join(f'{x:.3f}' for x in ratios)}); target >= {target}")


if __name__ == "__main__":
    main()
