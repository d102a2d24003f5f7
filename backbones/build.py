"""Build "backbone + neck" (one Backbone to every head) from the `backbone` and `neck` configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .catalog import LEVELS
from .registry import BACKBONES, NECKS

if TYPE_CHECKING:  # torch is imported when something is built, not when configs are composed (fast --help)
    from .base import Backbone

# keys of the `backbone` config that are read by the task, not by the builder, with their defaults
TASK_KEYS = {
    # frozen BatchNorm without pretrained statistics: measure them first (tasks/bn_calibration.py)
    "calibrate_bn": "auto",
    "calibrate_bn_batches": 8,  # training batches those statistics are measured on
    # with it at random init: each residual branch's last frozen norm gets the gain 1 / sqrt(blocks in its stage)
    "scale_residuals": True,
    # the model's input normalisation (RGB in [0, 1]); null: the statistics of `weights` (ImageNet for random init)
    "mean": None,
    "std": None,
}
RETIRED_KEYS = ("lr_mult",)  # now task.module.backbone_lr_mult


def build_backbone(
    name: str,
    *,
    out_levels: Sequence[str] = LEVELS,
    in_chans: int = 3,
    norm: str = "bn",
    freeze_at: int = 0,
    weights: str | None = None,
    weights_strict: bool = False,
    weights_partial: bool = False,
    weights_verbose: bool = False,
    kwargs: Mapping[str, Any] | None = None,
    **builder_args: Any,
) -> Backbone:
    """Build a registered backbone.

    Args:
        name: a registry name (`resnet50`, `resnext101_32x8d`, `timm`, ...).
        out_levels: which of c1..c5 `forward` returns.
        in_chans: input image channels.
        norm: `bn`, `frozen_bn`, `sync_bn` or `gn`.
        freeze_at: freeze everything producing c1..c{freeze_at} (0 nothing, 1 stem, 2 stem + first stage).
        weights: pretrained weights: a torchvision weights name (`IMAGENET1K_V2`, `DEFAULT`) for torchvision
            backbones, a timm pretrained tag (`timm` for timm's default, `a1_in1k`, ...) for timm backbones, a URL,
            or a local `.pth` / `.pt` / `.safetensors` / Cerberus `.ckpt` file. None: random init.
        weights_strict: raise if a backbone key is missing from the weights or has another shape.
        weights_partial: load weights even if they leave more than 10% of the backbone's tensor elements random
            (another architecture's weights); without it that is refused, naming the backbone they fit.
        weights_verbose: log every missing / unexpected / mismatched key name, not only the counts.
        kwargs: passed to the underlying torchvision / timm constructor (e.g. `drop_path_rate`).
        builder_args: builder-specific arguments (`model_name` for `timm`).
    """
    from .norm import convert_norm
    from .weights import load_backbone_weights, wants_weights

    model = BACKBONES.build(name, in_chans=in_chans, out_levels=list(out_levels), **builder_args, **(kwargs or {}))
    _check_contract(model, f"backbone {name!r}")
    if wants_weights(weights):
        # before the norm conversion, so FrozenBatchNorm takes the pretrained statistics
        load_backbone_weights(model, str(weights), source=BACKBONES.get(name).source,
                              arch=builder_args.get("model_name", name), strict=weights_strict, partial=weights_partial,
                              verbose=weights_verbose)
    model = convert_norm(model, norm)
    model.freeze(freeze_at)
    return model


def build_body(backbone: Mapping[str, Any], neck: Mapping[str, Any] | None = None) -> Backbone:
    """`backbone` / `neck` are the resolved config groups (`{"name": ..., **options}`)."""
    # RETIRED_KEYS: keys older runs stored in `backbone` (their checkpoints still rebuild: predict, init_from)
    args = {k: v for k, v in backbone.items() if k not in TASK_KEYS and k not in RETIRED_KEYS}
    body = build_backbone(**args)
    if neck is None:
        return body
    neck_args = dict(neck)
    name = neck_args.pop("name")
    out = NECKS.build(name, body=body, **neck_args)
    _check_contract(out, f"neck {name!r}")
    return out


def _check_contract(model: object, what: str) -> None:
    """A registered builder must return a Backbone: heads and training rely on its whole contract."""
    from .base import Backbone

    if not isinstance(model, Backbone):
        raise TypeError(f"the builder of {what} returned a {type(model).__name__}, not a backbones.Backbone "
                        "(forward -> dict of levels, output_shape(), level_modules(), freeze())")
