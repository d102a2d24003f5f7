"""Experiment loggers: W&B that never prompts (offline without a login)."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)
MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """True when W&B can log in without asking: `WANDB_API_KEY`, or the netrc entry `wandb login` writes."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    if mode not in MODES:
        raise ValueError(f"logger.mode must be one of {', '.join(MODES)} (got {mode!r})")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if has_wandb_credentials() else "offline"


def wandb_logger(mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger with `mode` resolved up front, so wandb never stops to ask for a key."""
    mode = resolve_wandb_mode(mode)
    if mode == "offline":
        log.info("W&B: no login found, logging offline to %s/wandb (sync later with `wandb sync`)", save_dir)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return WandbLogger(save_dir=save_dir, offline=mode == "offline", mode=mode, **kwargs)
