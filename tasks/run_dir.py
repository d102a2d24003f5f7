"""Where a run writes: a new directory, or, when resuming a run (`ckpt_path=<run>/checkpoints/last.ckpt`), that
run's own directory, so its checkpoints, logs and logger run continue in one place.

Registered as OmegaConf resolvers before Hydra composes (used by `hydra.run.dir` in conf/config.yaml); imports
nothing heavy, so `--help` stays fast.
"""

from __future__ import annotations

import hashlib
import os
import traceback
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


def launched_rank(lightning_children: bool = True) -> int:
    """This process' global rank when its ranks were started from outside (torchrun, SLURM's srun) or, with
    `lightning_children`, by Lightning's own launcher (which exports LOCAL_RANK only); 0 for a plain run. Read from
    the environment, so it is known before anything is built."""
    keys = ("RANK", "SLURM_PROCID" if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 else "",
            "LOCAL_RANK" if lightning_children else "")
    for key in keys:
        if key and os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def run_stamp() -> str:
    """The last part of a new run's directory: the start time, or, when several processes start the same run from
    outside (torchrun, srun), an id they share (`<date>_torchrun-<rendezvous id>`, `<date>_slurm-<job id>`), so
    every rank, on every node, resolves the same directory instead of its own second."""
    day = datetime.now().strftime("%Y-%m-%d")
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return f"{day}_torchrun-{run_id[:8]}"
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get("SLURM_JOB_ID"):
        array = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"{day}_slurm-{os.environ['SLURM_JOB_ID']}" + (f"_{array}" if array else "")
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def log_suffix() -> str:
    """Rank k > 0 of torchrun / srun logs to `<job>_rank<k>.log` beside rank 0's `<job>.log` (one file per process,
    not interleaved; Lightning's launcher names its ranks' logs itself)."""
    rank = launched_rank(lightning_children=False)
    return f"_rank{rank}" if rank else ""


def hydra_subdir(ckpt_path: str | None, train: bool) -> str | None:
    """The resumed run keeps its first `.hydra/` (the original command) and adds `.hydra/resumed-<time>/`; ranks
    other than 0 write none (rank 0's is the record)."""
    if launched_rank():
        return None
    if resumed_run(ckpt_path, train):
        return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    return ".hydra"


MAX_JOB_DIRNAME = 160  # file systems refuse names over 255 bytes; long override lists went past it


def job_subdir(num: int, override_dirname: str) -> str:
    """A sweep job's directory: `<num>_<overrides>` (Hydra's `override_dirname`), the overrides cut to
    `MAX_JOB_DIRNAME` characters and ended by a hash of the whole list when longer, so every job keeps a unique,
    legal name however many overrides the command has."""
    name = str(override_dirname)
    if len(name) > MAX_JOB_DIRNAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_JOB_DIRNAME]}...{digest}"
    return f"{num}_{name}"


def register_resolvers() -> None:
    from .cli import config_groups  # `--help`'s list of groups and options

    for name, fn in (("cerberus_run_dir", run_dir), ("cerberus_hydra_subdir", hydra_subdir),
                     ("cerberus_job_subdir", job_subdir), ("cerberus_config_groups", config_groups),
                     ("cerberus_log_suffix", log_suffix)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    if not OmegaConf.has_resolver("cerberus_stamp"):  # cached: one value per process, as Hydra's `now`
        OmegaConf.register_new_resolver("cerberus_stamp", run_stamp, use_cache=True)


FAILED = "FAILED"  # the marker file of a run that ended with an error


def mark_failed(run: str | Path, err: BaseException) -> None:
    """Write `<run>/FAILED` (the error; a resumed run that then finishes removes it): `ls outputs/*/*/*/FAILED` lists
    the failed runs. Rank zero only, so DDP ranks do not race on the file."""
    if launched_rank():
        return
    path = Path(run) / FAILED
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
        path.write_text(f"{datetime.now():%Y-%m-%d %H:%M:%S} {text}\n")
    except OSError:
        pass  # a read-only or vanished run directory: the error itself is still reported


def clear_failed(run: str | Path) -> None:
    """A run that finished (e.g. resumed after a failure) is no longer failed."""
    (Path(run) / FAILED).unlink(missing_ok=True)
