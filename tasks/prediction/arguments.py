"""predict.py's argument checks that need neither torch nor the model, so a typo fails in a second."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from backbones.errors import ConfigError

USAGE = "python predict.py ckpt=outputs/<task>/<backbone>/<time>/checkpoints/last.ckpt input=<image or directory>"


def check_arguments(cfg: DictConfig) -> None:
    """`ckpt` and `input` given and existing; the option values in range."""
    missing = [key for key in ("ckpt", "input") if not cfg.get(key)]
    if missing:
        raise ConfigError(f"predict.py needs ckpt=<run .ckpt> and input=<image or directory> "
                         f"({' and '.join(missing)} not set), e.g. `{USAGE}`")
    if not Path(cfg.input).expanduser().exists():
        raise ConfigError(f"input {cfg.input} does not exist; pass an image file or a directory of images")
    if not Path(cfg.ckpt).expanduser().is_file():
        raise ConfigError(f"checkpoint {cfg.ckpt} does not exist; pass the .ckpt of a Cerberus run, e.g. "
                                f"`{USAGE}`")
    formats = [cfg.formats] if isinstance(cfg.formats, str) else list(cfg.formats)
    if not formats or set(formats) - {"csv", "json"}:
        raise ConfigError(f"formats={formats}: use csv and/or json, e.g. formats=[csv,json]")
    if cfg.get("explain") not in (None, "gradcam"):
        raise ConfigError(f"explain={cfg.explain}: use explain=gradcam (or leave it out)")
    if cfg.get("explain") and str(cfg.ckpt).endswith(".onnx"):
        raise ConfigError("explain=gradcam needs gradients: pass the checkpoint (.ckpt), not the exported .onnx")
    if int(cfg.topk) < 1 or int(cfg.batch_size) < 1:
        raise ConfigError(f"topk and batch_size must be at least 1, got topk={cfg.topk} batch_size={cfg.batch_size}")
