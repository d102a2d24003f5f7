"""Nothing lost on resume: last.ckpt is the latest state, a killed run resumes where it was, in the same run
directory and logger run, and may be given more epochs."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import torch
from conftest import TINY_SYNTHETIC, assert_ok, run_train
from wandb_log import read_run

# 24 training images, batch 4: 6 optimizer steps per epoch; last.ckpt after every step
RUN = [*TINY_SYNTHETIC, "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "logger=csv",
       "callbacks=[minimal,ema,gradual_unfreeze]", "callbacks.last_checkpoint.every_n_steps=1",
       "callbacks.gradual_unfreeze.unfreeze_at_epoch=1", "trainer.max_epochs=3", "test_after_fit=false"]
KILL_AT = 9  # mid-epoch 1


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _val_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f) if row.get("val/acc1")]


def _ema_callback_state(state: dict) -> dict:
    return next(v for k, v in state["callbacks"].items() if k.startswith("EMAWeightAveraging"))


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    assert_ok(run_train(*RUN, f"hydra.run.dir={whole}", cwd=tmp_path))

    killed = tmp_path / "killed"
    proc = run_train(*RUN, f"hydra.run.dir={killed}", "+callbacks.kill._target_=tests.killer.KillAtStep",
                     f"+callbacks.kill.step={KILL_AT}", cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    at_kill = _state(killed)
    assert (at_kill["epoch"], at_kill["global_step"]) == (1, KILL_AT)  # saved the step before the kill, not epoch 0
    assert _val_epochs(killed) == [0]  # logs flushed with the checkpoint

    # resume without naming a run directory: it continues in the killed run's own
    resumed = run_train(*RUN, f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path)
    assert_ok(resumed)
    assert not (tmp_path / "outputs").exists()
    assert (killed / "config_resolved.yaml").is_file() and list((killed / ".hydra").glob("resumed-*"))

    a, b = _state(whole), _state(killed)
    assert (b["epoch"], b["global_step"]) == (a["epoch"], a["global_step"]) == (2, 18)  # no epoch redone or skipped
    assert b["lr_schedulers"][0]["last_epoch"] == a["lr_schedulers"][0]["last_epoch"] == 18
    steps_a, steps_b = ({i: int(s["step"]) for i, s in x["optimizer_states"][0]["state"].items()} for x in (a, b))
    assert steps_b == steps_a  # every parameter's AdamW step count (c5 joined at epoch 1 in both: gradual unfreeze)
    assert _ema_callback_state(b).keys() == _ema_callback_state(a).keys()
    # gradual unfreeze: at the end both runs train the same parameters
    trainable_a = {k for k, v in a["state_dict"].items() if v.dtype.is_floating_point}
    assert trainable_a == {k for k, v in b["state_dict"].items() if v.dtype.is_floating_point}
    assert _val_epochs(killed) == _val_epochs(whole) == [0, 1, 2]  # one metrics file, each epoch once


def test_resume_with_more_epochs_onecycle_and_the_same_wandb_run(tmp_path):
    """`trainer.max_epochs` may be raised on resume: the schedule is rebuilt for the new length (torch's OneCycleLR
    would otherwise stop at its stored total_steps). The resumed run logs to the same W&B run id (offline here: a
    second `offline-run-*` folder with the same id, which `wandb sync --append` adds to the first)."""
    run = tmp_path / "run"
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": str(home / ".netrc")}
    base = [*TINY_SYNTHETIC, "data.image_size=32", "data.batch_size=8", "data.num_workers=0", "logger=wandb",
            "callbacks=minimal", "scheduler=onecycle", "test_after_fit=false"]
    assert_ok(run_train(*base, "trainer.max_epochs=1", f"hydra.run.dir={run}", cwd=tmp_path, env=env))
    (first,) = (run / "wandb").glob("offline-run-*")
    resumed = run_train(*base, "trainer.max_epochs=3", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                        cwd=tmp_path, env=env)
    assert_ok(resumed)
    state = _state(run)
    assert (state["epoch"], state["global_step"]) == (2, 9)

    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and first in runs
    assert len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1  # one run id
    assert f"continuing run {first.name.rsplit('-', 1)[-1]}" in resumed.stdout + resumed.stderr
    epochs = [sorted({int(row["epoch"]) for row in read_run(r)[1] if "val/acc1" in row}) for r in runs]
    assert epochs == [[0], [1, 2]]  # each epoch logged once, the resumed part continuing the counters
