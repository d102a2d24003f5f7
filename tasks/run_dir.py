"""Where a run writes: a new directory, or, when resuming a run (`ckpt_path=<run>/checkpoints/last.ckpt`), that
run's own directory, so its checkpoints, logs and logger run continue in one place.

Registered as OmegaConf resolvers before Hydra composes (used by `hydra.run.dir` in conf/config.yaml); imports
nothing heavy, so `--help` stays fast.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def resumed_run(ckpt_path: str | None, train: bool = True) -> Path | None:
    """The Cerberus run directory holding `ckpt_path` (`<run>/checkpoints/*.ckpt` beside `<run>/.hydra`) when it
    is being resumed (`train=true`); None for a new run, an evaluation or a checkpoint kept elsewhere."""
    if not ckpt_path or not train or str(ckpt_path).lower() in ("null", "none"):
        return None
    ckpt = Path(str(ckpt_path)).expanduser()
    run = ckpt.absolute().parent.parent
    if ckpt.is_file() and ckpt.parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return run
    return None


def run_dir(ckpt_path: str | None, train: bool, new: str) -> str:
    run = resumed_run(ckpt_path, train)
    return str(run) if run else new


def hydra_subdir(ckpt_path: str | None, train: bool) -> str:
    """The resumed run keeps its first `.hydra/` (the original command) and adds `.hydra/resumed-<time>/`."""
    if resumed_run(ckpt_path, train):
        return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    return ".hydra"


def register_resolvers() -> None:
    for name, fn in (("cerberus_run_dir", run_dir), ("cerberus_hydra_subdir", hydra_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
