"""train.py end to end, as a subprocess, on tiny settings."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from conftest import CPU_DDP, TINY_SYNTHETIC, assert_ok, make_imagefolder, run_train
from wandb_log import read_run

QUICK = ["experiment=smoke", *TINY_SYNTHETIC]


def printed_checkpoint(stdout: str) -> Path:
    match = re.search(r"^best checkpoint:\s+(\S+)$", stdout, re.MULTILINE)
    assert match, stdout[-2000:]
    return Path(match.group(1))


def test_train_fits_tests_and_reports(tmp_path):
    proc = run_train(*QUICK, "trainer.max_epochs=2", cwd=tmp_path)
    assert_ok(proc)
    assert "Test results" in proc.stdout and "test/acc1" in proc.stdout
    ckpt = printed_checkpoint(proc.stdout)
    assert ckpt.is_file() and ckpt.parent.name == "checkpoints"
    run_dir = ckpt.parent.parent
    assert run_dir.parent.parent.parent == tmp_path / "outputs"  # outputs/<task>/<backbone>/<time>
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config_resolved.yaml").read_text().count("resnet18") >= 1
    assert (run_dir / "csv" / "metrics.csv").is_file()
    # the checkpoint alone carries what is needed to rebuild the model
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = state["hyper_parameters"]
    assert hp["class_names"] == ["circle", "square", "triangle"]
    assert hp["config"]["backbone"]["name"] == "resnet18" and hp["config"]["data"]["synthetic"]["num_classes"] == 3
    assert "${" not in str(hp["config"])  # resolved
    assert any(k.startswith("model.body.layer4") for k in state["state_dict"])


def test_wandb_offline_without_login_records_config_and_metrics(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": "", "NETRC": str(home / ".netrc")}
    proc = run_train(*QUICK, "logger=wandb", "backbone=resnet34", cwd=tmp_path, env=env)
    assert_ok(proc)
    (run_dir,) = (tmp_path / "outputs" / "classification" / "resnet34").iterdir()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    config, history = read_run(offline)
    assert config["config"]["backbone"]["name"] == "resnet34"
    assert config["config"]["optim"]["lr"] > 0
    assert config["class_names"] == ["circle", "square", "triangle"]
    logged = set().union(*history)
    assert {"train/loss_step", "val/loss", "val/acc1", "test/acc1", "test/loss"} <= logged


def test_imagefolder_and_fpn_from_the_command_line(tmp_path):
    root = make_imagefolder(tmp_path / "mydata", classes=("a", "b", "c", "d"), per_class=4)
    proc = run_train("experiment=smoke", "experiment=cls_fpn", "data=imagefolder", f"data.root={root}",
                     "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                     "logger=csv", "callbacks=minimal", cwd=tmp_path)
    assert_ok(proc)
    hp = torch.load(printed_checkpoint(proc.stdout), map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hp["class_names"] == ["a", "b", "c", "d"] and hp["config"]["neck"]["name"] == "fpn"


def test_bad_dataset_fails_with_the_path(tmp_path):
    proc = run_train("experiment=smoke", "data=imagefolder", f"data.root={tmp_path}/missing", cwd=tmp_path)
    assert proc.returncode != 0
    assert f"{tmp_path}/missing/train does not exist" in proc.stderr


def test_multirun_sweep_over_backbones(tmp_path):
    proc = run_train("-m", "backbone=resnet18,resnet34", *QUICK, cwd=tmp_path)
    assert_ok(proc)
    (sweep,) = (tmp_path / "multirun" / "classification").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2 and "backbone=resnet18" in jobs[0] and "backbone=resnet34" in jobs[1]
    for job in jobs:
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        hp = torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]
        assert hp["config"]["backbone"]["name"] == job.split("backbone=")[1].split(",")[0]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    proc = run_train(*QUICK, *CPU_DDP, "trainer.limit_train_batches=3", cwd=tmp_path)
    assert_ok(proc)
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    assert "All distributed processes registered" in proc.stdout + proc.stderr
    runs = list((tmp_path / "outputs" / "classification" / "resnet18").iterdir())
    assert len(runs) == 1, runs  # both ranks wrote into one run directory
    run_dir = runs[0]
    assert sorted(p.name for p in (run_dir / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    assert len(list(tmp_path.rglob("metrics.csv"))) == 1  # one set of logs, from rank 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    hp = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]
    # SyncBatchNorm is CUDA-only in torch: on CPU it is switched off, and the stored config says so
    assert hp["config"]["trainer"]["strategy"] == "ddp" and hp["config"]["trainer"]["sync_batchnorm"] is False
    assert "sync_batchnorm needs GPUs" in proc.stdout + proc.stderr
    assert [p.name for p in run_dir.rglob(".hydra")] == [".hydra"]  # one record of the command, rank 0's
    # epoch-level values are reduced across the ranks (Lightning warns about every one that is not)
    assert "sync_dist=True" not in proc.stdout + proc.stderr
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("test/acc1") for r in rows) and any(r.get("train/loss_epoch") for r in rows)


@pytest.mark.slow
def test_ddp_sweep_launches_each_job_once_with_all_ranks(tmp_path):
    """Lightning's DDP launcher re-runs the command line for ranks 1..; under -m that used to re-run the whole sweep
    (two sweep trees, each job launched twice). Now: one sweep, each job in its own directory on both ranks."""
    proc = run_train("-m", *QUICK, *CPU_DDP, "backbone=resnet18,resnet34", "logger=csv",
                     "trainer.limit_train_batches=2", cwd=tmp_path)
    assert_ok(proc)
    out = proc.stdout + proc.stderr
    assert out.count("Launching 2 jobs locally") == 1
    sweeps = list((tmp_path / "multirun" / "classification").iterdir())
    assert len(sweeps) == 1 and not (tmp_path / "outputs").exists()
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [j.name[:2] for j in jobs] == ["0_", "1_"]
    for job, backbone in zip(jobs, ("resnet18", "resnet34")):
        # rank 1 ran this job (its own log beside rank 0's), not the sweep, and wrote no second .hydra
        rank1 = (job / "train_ddp_process_1.log").read_text()
        assert f"backbone: {backbone}" in rank1 and [p.name for p in job.rglob(".hydra")] == [".hydra"]
        with (job / "csv" / "metrics.csv").open() as f:
            tests = [r for r in csv.DictReader(f) if r.get("test/acc1")]
        assert len(tests) == 1 and 0 <= float(tests[0]["test/acc1"]) <= 1
