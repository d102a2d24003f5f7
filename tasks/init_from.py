"""`init_from=RUN.ckpt`: start a model from another Cerberus run, of any task.

The backbone always comes from the checkpoint, the neck when both runs have one, and the head key by key where
the shapes match; a head tensor of another shape (another number of classes) keeps its fresh initialisation,
with a warning naming it. Unlike `ckpt_path`, nothing else of the run (optimizer, epoch) is resumed. A checkpoint
whose backbone fills too little of this one (a run of another backbone) is refused, naming the backbone its stored
config says it was trained with, unless `init_from_partial=true`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from backbones.base import registry_backbone
from backbones.checkpoint_file import read_checkpoint
from backbones.weights import (
    PARTIAL_LIMIT,
    LoadReport,
    WeightsError,
    best_prefix,
    check_coverage,
    first_conv_key,
    likely_backbone,
    match_state_dict,
    unwrap_state_dict,
)

from .multihead import migrate_keys

log = logging.getLogger(__name__)


@dataclass
class InitReport:
    backbone: LoadReport
    neck: LoadReport | None
    head: LoadReport
    reinitialised: list[str]  # head keys whose shapes differ from the checkpoint's


def _module_prefix(model: nn.Module, target: nn.Module) -> str:
    """`target`'s qualified name inside `model` plus a dot (`body.`, `detector.backbone.`; `""` for `model`)."""
    name = next(name for name, m in model.named_modules() if m is target)
    return f"{name}." if name else ""


def _sub(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def stored_backbone(checkpoint: Any) -> str | None:
    """The `backbone=` override of the run that wrote `checkpoint` (from its stored config), if it has one."""
    hp = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    node = ((hp or {}).get("config") or {}).get("backbone") or {}
    if not node.get("name"):
        return None
    model_name = node.get("model_name") if node["name"] == "timm" else None
    return f"backbone={node['name']}" + (f" backbone.model_name={model_name}" if model_name else "")


def _likely(checkpoint: Any, bb_state: dict[str, Tensor], backbone_name: str | None) -> tuple[str, str] | None:
    """(the fix, why) for a checkpoint whose backbone does not fit: its stored config, else its tensor shapes."""
    stored = stored_backbone(checkpoint)
    if stored is None:
        return likely_backbone(bb_state, backbone_name or "")
    if stored == f"backbone={backbone_name}":  # the same name: another cause (kwargs, in_chans ...)
        return None
    return stored, f"The checkpoint's run was trained with {stored} (its stored config)"


def stored_layout(checkpoint: Any, source: str) -> tuple[str, str] | None:
    """(backbone prefix, model prefix) of the checkpoint's keys, read from the source run itself: its stored config is
    rebuilt on the meta device (shapes only, nothing allocated or loaded) and its modules' names taken, e.g.
    (`model.body.body.`, `model.`) for a classifier with an FPN. None when the checkpoint has no complete Cerberus
    run config (another program's, or an older run's config that no longer builds): the caller then infers the
    prefixes from the keys."""
    import torch

    from .build import build_model  # tasks.build imports this module
    from .restore import stored_run, without_weight_sources

    try:
        cfg, class_names, _ = stored_run(checkpoint, source)
        with torch.device("meta"), _quiet_build():
            src, _ = build_model(without_weight_sources(cfg), len(class_names))
    except Exception as err:  # noqa: BLE001 - any failure means "no usable stored layout"
        log.debug("init_from=%s: the stored run config does not rebuild (%s); inferring the layout from the keys",
                  source, err)
        return None
    return "model." + _module_prefix(src, registry_backbone(src.body)), "model."


@contextmanager
def _quiet_build() -> Iterator[None]:
    """Rebuilding the source run must not repeat its build-time warnings (e.g. unused U-Net levels)."""
    logger = logging.getLogger("tasks")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def init_from(model: nn.Module, path: str | Path, *, partial: bool = False,
              backbone_name: str | None = None) -> InitReport:
    """Load the weights of a Cerberus checkpoint (`{"state_dict": {"model.<...>": tensor}, ...}`, read with
    `weights_only=True`) into `model`, a task's nn.Module with a `body`; returns what was loaded.

    Unless `partial` (`init_from_partial=true`), a checkpoint that leaves more than `PARTIAL_LIMIT` of the
    backbone's tensor elements unloaded is refused. `backbone_name`: this run's `backbone.name`, for the messages.
    """
    source = str(path)
    checkpoint = read_checkpoint(path, "init_from=")
    state = migrate_keys(dict(unwrap_state_dict(checkpoint, source)), "model.")  # runs before the multi-head model
    body, backbone = model.body, registry_backbone(model.body)
    body_prefix, backbone_prefix = _module_prefix(model, body), _module_prefix(model, backbone)
    backbone_keys = backbone.state_dict()

    # where the checkpoint keeps its backbone (model.body., model.body.body., ...): from
    # the source run rebuilt from its stored config, else inferred from the keys
    layout = stored_layout(checkpoint, source)
    if layout is not None and any(k.startswith(layout[0]) for k in state):
        src_backbone = layout[0]
    else:
        src_backbone = best_prefix([k for k in state if not k.endswith("num_batches_tracked")], backbone_keys)
    if not any(k.startswith(src_backbone) for k in state):
        raise WeightsError(f"init_from={source}: no backbone weights found in the checkpoint")
    bb_state = _sub(state, src_backbone)
    bb, bb_report = match_state_dict(backbone_keys, bb_state, f"{source} (backbone)", prefix="",
                                     first_conv=first_conv_key(backbone))
    name = backbone_name or "of this run"
    if not bb_report.loaded:
        likely = _likely(checkpoint, bb_state, backbone_name)
        raise WeightsError(f"init_from={source}: none of the checkpoint's backbone tensors fits the backbone {name} "
                           f"(keys like {', '.join(list(bb_state)[:3])}): "
                           + (f"{likely[1]}; pass {likely[0]}" if likely else "was it trained with another backbone?"))
    if not partial and bb_report.unloaded_fraction > PARTIAL_LIMIT:
        check_coverage(bb_report, backbone=name, opt_in="init_from_partial=true", source=f"init_from={source}",
                       likely=_likely(checkpoint, bb_state, backbone_name))
    bb_report.log()
    loaded = {backbone_prefix + k: v for k, v in bb.items()}

    # the neck (e.g. FPN's `fpn.*`): only when both have one; the checkpoint's neck holds the backbone as `body.`
    neck_report = None
    if body is not backbone:
        neck_targets = {k: v for k, v in body.state_dict().items() if not k.startswith("body.")}
        src_neck = src_backbone[: -len("body.")] if src_backbone.endswith("body.") else None
        neck_state = {k: v for k, v in _sub(state, src_neck).items() if k in neck_targets} if src_neck else {}
        if neck_state:
            neck, neck_report = match_state_dict(neck_targets, neck_state, f"{source} (neck)", prefix="")
            neck_report.log()
            loaded.update({body_prefix + k: v for k, v in neck.items()})
        else:
            log.info("init_from=%s: the checkpoint has no neck; the neck starts from scratch", source)

    # the head: everything of `model` outside the body, under the checkpoint's prefix of `model` (`model.`)
    if layout is not None and src_backbone == layout[0]:
        src_model = layout[1]
    else:
        src_model = src_backbone[: -len(backbone_prefix)] if src_backbone.endswith(backbone_prefix) else "model."
    head_targets = {k: v for k, v in model.state_dict().items() if not k.startswith(body_prefix)}
    head_state = {k: v for k, v in _sub(state, src_model).items() if k in head_targets}
    head, head_report = match_state_dict(head_targets, head_state, f"{source} (head)", prefix="")
    loaded.update(head)
    reinitialised = list(head_report.mismatched)
    if reinitialised:
        log.warning("init_from=%s: head tensors of another shape (e.g. another number of classes) are "
                    "re-initialised: %s", source, ", ".join(f"{k} {list(a)} -> {list(b)}"
                                                          for k, (a, b) in head_report.mismatched.items()))
    if not head_report.loaded:
        log.info("init_from=%s: no head tensor of the checkpoint fits (another task?); the head starts from scratch",
                 source)

    model.load_state_dict(loaded, strict=False)
    log.info("init_from=%s: head %d loaded, %d re-initialised, %d new", source, len(head_report.loaded),
             len(reinitialised), len(head_report.missing))
    return InitReport(bb_report, neck_report, head_report, reinitialised)
