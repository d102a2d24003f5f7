"""Cluster launchers: the SLURM launcher's sbatch script as submitit writes it (no cluster here: nothing is
submitted), and torchrun starting every rank of one run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from conftest import CPU_DDP, ROOT, TINY_SYNTHETIC, assert_ok
from omegaconf import OmegaConf

from backbones.hydra_configs import compose_hydra
from tasks.run_dir import register_resolvers


def sbatch_script(overrides: list[str], folder) -> str:
    """The sbatch file submitit would submit for `python train.py -m hydra/launcher=slurm <overrides>`, built from
    the composed launcher config the way hydra-submitit-launcher passes it to submitit."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    register_resolvers()
    cfg = compose_hydra("config", ["hydra/launcher=slurm", *overrides])
    OmegaConf.update(cfg, "hydra.launcher.submitit_folder", str(folder), force_add=True)
    OmegaConf.update(cfg, "hydra.job.name", "train", force_add=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")


def test_slurm_launcher_one_task_per_gpu_and_lightning_requeue_signal(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun exists": there is no cluster
    text = sbatch_script(["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                          "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600"], tmp_path)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=600", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --signal=USR1@120"):  # SIGUSR1: Lightning's SLURMEnvironment saves and requeues
        assert line in text, (line, text)
    assert "--signal=USR2" not in text and "srun" in text  # every task started by srun: Lightning launches none


def test_torchrun_starts_every_rank_of_one_run(tmp_path):
    """`torchrun --standalone --nproc_per_node=2 train.py ...` (what each node runs on a cluster): Lightning sees
    torchelastic's environment, both ranks resolve the same run directory (from the rendezvous id, not their own
    clock), rank 0 writes .hydra and the logs, rank 1 its own log file."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"),
         "experiment=smoke", *TINY_SYNTHETIC, *CPU_DDP, "logger=csv", "trainer.limit_train_batches=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert_ok(proc)
    runs = list((tmp_path / "outputs" / "classification" / "resnet18").iterdir())
    assert len(runs) == 1 and "_torchrun-" in runs[0].name, runs
    names = {p.name for p in runs[0].iterdir()}
    assert {".hydra", "train.log", "train_rank1.log", "csv", "checkpoints"} <= names, names
    assert "backbone: resnet18" in (runs[0] / "train_rank1.log").read_text()
    with (runs[0] / "csv" / "metrics.csv").open() as f:
        assert any(r.get("test/acc1") for r in csv.DictReader(f))


@pytest.mark.parametrize(("env", "expected"), [
    ({"TORCHELASTIC_RUN_ID": "4f1c2a9e-77"}, "_torchrun-4f1c2a9e"),
    ({"SLURM_NTASKS": "8", "SLURM_JOB_ID": "123456"}, "_slurm-123456"),
    ({"SLURM_NTASKS": "8", "SLURM_JOB_ID": "123456", "SLURM_ARRAY_TASK_ID": "3"}, "_slurm-123456_3"),
])
def test_ranks_started_from_outside_share_a_run_stamp(monkeypatch, env, expected):
    from tasks.run_dir import launched_rank, run_stamp

    for key in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run_stamp().endswith(expected)
    monkeypatch.setenv("SLURM_PROCID", "5")
    assert launched_rank() == (5 if "SLURM_NTASKS" in env else 0)
