"""Config values checked when the config is composed, before anything is imported or built: a bad value is named
with its key and a value that works (`ConfigError`), instead of surfacing later as a library's error without the key.
Imports no torch (it runs before `--cfg job` output and before a run directory is used)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from backbones.errors import ConfigError

MIN_IMAGE_SIZE = 32  # the backbones' deepest stride: a smaller side leaves c5 without a whole cell
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
MIN_LR_FIND_STEPS = 20  # Lightning's suggestion skips the first 10 steps and the last: a slope needs more

# the data modules and the tasks they serve; the advice when a data config meets another task
DATA_TASKS = {
    "data.ImageFolderDataModule": ("classification",),
    "data.CocoDetectionDataModule": ("detection", "segmentation", "instance_segmentation"),
    "data.CocoSegmentationDataModule": ("segmentation",),
    "data.MaskDataModule": ("segmentation",),
    "data.multitask.MultiTaskCocoDataModule": ("multitask",),
}


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive(cfg: DictConfig, key: str, example: str, integer: bool = False) -> None:
    value = _get(cfg, key)
    if value is None or value == "???":
        return
    ok = (_is_int(value) if integer else _is_number(value)) and value > 0
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key}={value!r} must be {kind}, e.g. {key}={example}")


def _check_task_data(cfg: DictConfig, choices: Mapping[str, str]) -> None:
    task, target = _get(cfg, "task.name"), _get(cfg, "data._target_")
    serves = DATA_TASKS.get(str(target))
    data = choices.get("data", str(target))
    if task == "instance_segmentation" and serves and task in serves and not _get(cfg, "data.masks"):
        raise ConfigError(f"data={data} gives boxes without masks (data.masks is not true), so it cannot train "
                          "task=instance_segmentation: use data=coco (COCO json with polygons / RLE) or "
                          "data=synthetic_instance_segmentation")
    if not task or not serves or task in serves:
        return
    if task == "classification":
        hint = " or ".join(f"task={t}" for t in serves)
        raise ConfigError(f"data={data} holds {'boxes and masks' if 'detection' in serves else 'masks'}, not one "
                          f"label per image, so it cannot train task={task}: did you mean `{hint}`?")
    needs = {"detection": "boxes (data=coco)", "segmentation": "masks (data=masks or data=coco)",
             "instance_segmentation": "instance masks (data=coco)",
             "multitask": "one COCO json for every head (data=coco or data=synthetic_multitask)"}.get(task)
    if needs is None:
        return
    raise ConfigError(f"data={data} serves task={serves[0]}; task={task} needs {needs}: "
                      f"{'use task=' + serves[0] if len(serves) == 1 else 'choose the task the data is for'} "
                      f"or a data config with {needs.split(' (')[0]}")


def _check_multitask(cfg: DictConfig) -> None:
    """task.heads of a joint run, the fractions of data.hide_labels and the sources of data.extra_train."""
    heads = _get(cfg, "task.heads") if _get(cfg, "task.name") == "multitask" else None
    if heads is not None:
        from tasks.multitask.model import HEAD_NAMES  # here only: it imports torch, which other runs check without

        heads = list(heads) if OmegaConf.is_list(heads) else [heads]
        unknown = [h for h in heads if h not in HEAD_NAMES]
        if unknown or not heads or len(set(heads)) != len(heads):
            raise ConfigError(f"task.heads={heads}: name each head once, among {', '.join(HEAD_NAMES)}, e.g. "
                              "task.heads=[detection,segmentation,classification]")
    for head, fraction in (_get(cfg, "data.hide_labels") or {}).items():
        if not (_is_number(fraction) and 0 <= fraction <= 1):
            raise ConfigError(f"data.hide_labels.{head}={fraction!r} must be a fraction of the training images in "
                              f"[0, 1], e.g. data.hide_labels.{head}=0.5")
    extra = _get(cfg, "data.extra_train")
    if extra:
        from data.multitask_sources import ExtraSource  # checks the options only; nothing is read from disk

        if not OmegaConf.is_list(extra):
            raise ConfigError(f"data.extra_train must be a list of sources, e.g. "
                              f"'data.extra_train=[{{kind:imagefolder,root:/data/photos}}]', got {extra!r}")
        for i, options in enumerate(extra):
            try:
                ExtraSource(OmegaConf.to_container(options) if OmegaConf.is_config(options) else {"kind": options}, i)
            except ValueError as err:
                raise ConfigError(str(err)) from None


def _check_input_stats(cfg: DictConfig) -> None:
    """backbone.mean / backbone.std: one value per input channel, of RGB in [0, 1] (not 0..255), std positive."""
    channels = _get(cfg, "backbone.in_chans") or 3
    for key in ("backbone.mean", "backbone.std"):
        value = _get(cfg, key)
        if value is None:
            continue
        values = list(value) if OmegaConf.is_list(value) else None
        if values is None or len(values) != channels or not all(_is_number(v) for v in values):
            raise ConfigError(f"{key}={value!r} must be {channels} numbers, one per input channel (e.g. "
                              f"{key}=[0.5,0.5,0.5]), or null for the statistics of backbone.weights")
        if any(v > 1.0 for v in values):
            raise ConfigError(f"{key}={values} is on the 0..255 scale; the model normalises RGB in [0, 1]: divide by "
                              f"255 (e.g. {key}=[{', '.join(f'{v / 255:.3f}' for v in values)}])")
        if key == "backbone.std" and any(v <= 0 for v in values):
            raise ConfigError(f"{key}={values} must be positive: the input is divided by it")


def _check_tune(cfg: DictConfig) -> None:
    """tune.*: the learning-rate finder's range, steps and mode (tasks/tuning.py)."""
    for key in ("tune.lr_find", "tune.plot"):
        value = _get(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false, e.g. {key}=true")
    low, high = _get(cfg, "tune.min_lr"), _get(cfg, "tune.max_lr")
    for key, value, example in (("tune.min_lr", low, "1e-8"), ("tune.max_lr", high, "1")):
        if value is not None and not (_is_number(value) and value > 0):
            raise ConfigError(f"{key}={value!r} must be a positive number, e.g. {key}={example}")
    if _is_number(low) and _is_number(high) and low >= high:
        raise ConfigError(f"tune.min_lr={low!r} must be below tune.max_lr={high!r}: the finder's lr grows from "
                          "min_lr to max_lr, e.g. tune.min_lr=1e-8 tune.max_lr=1")
    steps = _get(cfg, "tune.num_training")
    if steps is not None and not (_is_int(steps) and steps >= MIN_LR_FIND_STEPS):
        raise ConfigError(f"tune.num_training={steps!r} is too few steps: Lightning's suggestion leaves out the first "
                          f"10 and the last one; use {MIN_LR_FIND_STEPS} or more, e.g. tune.num_training=100")
    mode = _get(cfg, "tune.mode")
    if mode is not None and mode not in ("exponential", "linear"):
        raise ConfigError(f"tune.mode={mode!r} must be exponential or linear")
    threshold = _get(cfg, "tune.early_stop_threshold")
    if threshold is not None and not (_is_number(threshold) and threshold > 1):
        raise ConfigError(f"tune.early_stop_threshold={threshold!r} must be above 1 (the search stops once the loss "
                          "is that many times its best), e.g. tune.early_stop_threshold=4, or null to run every step")


def check_config(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> None:
    """Raise `ConfigError` for the first value that cannot work. `choices`: Hydra's `runtime.choices` (the group
    options chosen, e.g. {"data": "coco"}) to name them as the user typed them."""
    _check_positive(cfg, "optim.lr", "1e-3")
    _check_positive(cfg, "data.batch_size", "8", integer=True)
    decay = _get(cfg, "optim.weight_decay")
    if decay is not None and not (_is_number(decay) and decay >= 0):
        raise ConfigError(f"optim.weight_decay={decay!r} must be 0 or a positive number, e.g. optim.weight_decay=0.05")
    workers = _get(cfg, "data.num_workers")
    if workers is not None and not (_is_int(workers) and workers >= 0):
        raise ConfigError(f"data.num_workers={workers!r} must be 0 (load in the main process) or more, or null "
                          "(one per CPU core, at most 4)")
    for key in ("data.image_size", "data.eval_size"):
        size = _get(cfg, key)
        if size is not None and not (_is_int(size) and size >= MIN_IMAGE_SIZE):
            raise ConfigError(f"{key}={size!r} is smaller than the backbone's deepest stride ({MIN_IMAGE_SIZE} px): "
                              f"use {MIN_IMAGE_SIZE} or more (e.g. {key}=64), or null for the data's own size")
    min_size = _get(cfg, "task.model.min_size")
    sides = list(min_size) if OmegaConf.is_list(min_size) else [min_size] if min_size is not None else []
    if any(not (_is_int(s) and s >= MIN_IMAGE_SIZE) for s in sides):
        raise ConfigError(f"task.model.min_size={min_size} must be sides of {MIN_IMAGE_SIZE} px or more "
                          "(e.g. task.model.min_size=[512,640]), the detector's resized short side")
    epochs = _get(cfg, "trainer.max_epochs")
    if epochs is not None and not (_is_int(epochs) and epochs >= -1):
        raise ConfigError(f"trainer.max_epochs={epochs!r} must be a number of epochs (or -1: until max_steps)")
    accelerator = _get(cfg, "trainer.accelerator")
    if accelerator is not None and str(accelerator) not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    devices = _get(cfg, "trainer.devices")
    if devices is not None and not (devices == "auto" or (_is_int(devices) and (devices >= 1 or devices == -1))
                                    or OmegaConf.is_list(devices) or isinstance(devices, str)):
        raise ConfigError(f"trainer.devices={devices!r} must be a count (1, 2, -1 for all), a list of device "
                          "indices ([0,1]) or auto")
    if _get(cfg, "train") is False and not _get(cfg, "ckpt_path"):
        raise ConfigError("evaluate.py (and train.py train=false) evaluates a trained checkpoint but ckpt_path is not "
                          "set; pass it, e.g. `python evaluate.py ckpt_path=outputs/<task>/<backbone>/<time>/"
                          "checkpoints/best-epochNNN.ckpt` (with the task and data options of that run)")
    _check_input_stats(cfg)
    _check_task_data(cfg, choices or {})
    _check_multitask(cfg)
    _check_tune(cfg)
