"""evaluate.py ckpt_path=... (and its alias train.py train=false ckpt_path=...): evaluate a checkpoint on the val and
test data without fitting."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, assert_ok, run_train
from test_predict import TRAIN, trained


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return lambda task: trained(task, tmp_path_factory.getbasetemp() / "trained")


def metric(stdout: str, name: str) -> float:
    match = re.search(rf"│ {re.escape(name)}\s+│\s+([0-9.]+) │", stdout)
    assert match, f"{name} not printed:\n{stdout[-2000:]}"
    return float(match.group(1))


@pytest.mark.parametrize("task,metrics", [("classification", ["acc1", "loss"]),
                                          ("segmentation", ["mIoU", "acc", "mDice", "loss"]),
                                          ("instance_segmentation", ["segm/AP", "AP", "segm/AR100"])])
def test_evaluate_checkpoint_prints_val_and_test_metrics(checkpoint, tmp_path, task, metrics):
    ckpt = checkpoint(task)
    if task == "classification":  # the entry point
        proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *TRAIN[task], f"ckpt_path={ckpt}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
    else:  # its alias, for scripts written before evaluate.py
        proc = run_train(*TRAIN[task], "train=false", f"ckpt_path={ckpt}", cwd=tmp_path)
    assert_ok(proc)
    assert "Evaluation results" in proc.stdout and f"evaluated checkpoint: {ckpt}" in proc.stdout
    for split in ("val", "test"):
        for name in metrics:
            assert 0 <= metric(proc.stdout, f"{split}/{name}") < 100
    assert "Epoch 0" not in proc.stdout + proc.stderr and "Sanity Checking" not in proc.stdout  # nothing fitted
    assert not list(tmp_path.rglob("*.ckpt"))  # and no checkpoint written
    if task == "segmentation":  # the task's own table
        assert "Test IoU per class" in proc.stdout and "triangle" in proc.stdout
    # the same weights and data as the training run's final test
    train_out = (ckpt.parent.parent / "csv" / "metrics.csv").read_text().splitlines()
    header, last = train_out[0].split(","), train_out[-1].split(",")
    column = header.index(f"test/{metrics[0]}")
    assert abs(float(last[column]) - metric(proc.stdout, f"test/{metrics[0]}")) < 1e-3


def test_evaluate_needs_ckpt_path(tmp_path):
    proc = run_train("experiment=smoke", "train=false", cwd=tmp_path)
    assert proc.returncode == 2
    assert "evaluates a trained checkpoint but ckpt_path is not set" in proc.stderr
    assert not (tmp_path / "outputs").exists()  # caught when the config is composed


def test_evaluate_rejects_other_classes(checkpoint, tmp_path):
    ckpt = checkpoint("classification")
    proc = run_train("experiment=smoke", "data.synthetic.num_classes=2", "data.synthetic.train_per_class=2",
                     "data.synthetic.val_per_class=2", "data.synthetic.test_per_class=2",
                     "data.synthetic.image_size=32", "train=false", f"ckpt_path={ckpt}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "was trained on classes ['circle', 'square', 'triangle'] but the configured data has" in proc.stderr
