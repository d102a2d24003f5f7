"""Experiment loggers: W&B that never prompts (offline without a login); both it and the CSV logger continue
the run already logged in their directory (a resumed run) instead of starting over."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

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


def previous_run_id(save_dir: str | Path) -> str | None:
    """The id of the W&B run already logged in `save_dir` (`wandb/latest-run` -> `[offline-]run-<time>-<id>`),
    i.e. of the run being resumed there."""
    latest = Path(save_dir) / "wandb" / "latest-run"
    if not latest.exists():
        return None
    return latest.resolve().name.rsplit("-", 1)[-1] or None


def wandb_logger(mode: str = "auto", save_dir: str = ".", **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger with `mode` resolved up front, so wandb never stops to ask for a key. In a run
    directory that already has a W&B run (a resumed run) it continues that run."""
    mode = resolve_wandb_mode(mode)
    if mode == "offline":
        log.info("W&B: no login found, logging offline to %s/wandb (sync later with `wandb sync`)", save_dir)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    run_id = kwargs.get("id") or previous_run_id(save_dir)
    if run_id:
        kwargs.update(id=run_id, resume="allow")
        log.info("W&B: continuing run %s", run_id)
    logger = WandbLogger(save_dir=save_dir, offline=mode == "offline", mode=mode, **kwargs)
    # Lightning always passes `anonymous` (None when unset); wandb >= 0.2x warns that the setting has no effect
    logger._wandb_init.pop("anonymous", None)
    return logger


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing `metrics.csv`; this one appends to it under its header."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = file.readline().strip()
            self.metrics_keys = sorted(header.split(",")) if header else []


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger that appends to the metrics of a run resumed in the same directory."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
