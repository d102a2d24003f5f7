"""benchmark.py runs and refuses to time a diverged detector (tiny settings: the figures are not checked here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from backbones import build_backbone

TINY = ["--task", "detection", "--backbone", "resnet18", "--image-size", "64", "--steps", "4", "--warmup", "1",
        "--repeats", "1"]


def run_benchmark(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, str(ROOT / "benchmark.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_detection_benchmark_prints_paired_ratios(tmp_path):
    proc = run_benchmark(*TINY, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for mode in ("paired training", "paired inference"):
        line = next(line for line in proc.stdout.splitlines() if line.startswith(mode))
        ratio = float(re.search(r"ratio ([0-9.]+)", line).group(1))
        assert ratio > 0


def test_diverged_training_is_refused(tmp_path):
    proc = run_benchmark(*TINY, "--override", "optim.lr=50", tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "training diverged" in proc.stdout + proc.stderr


def test_calibrated_backbone_has_real_statistics(tmp_path):
    """The stand-in for pretrained weights loads through `backbone.weights` and its FrozenBN statistics are
    measured ones: through a frozen-BN ResNet-50, c5 stays near unit scale (about 1.2) where random init's
    identity statistics let it grow to about 20, the start of the divergence the benchmark guards against."""
    sys.path.insert(0, str(ROOT))
    from benchmark import calibrated_backbone

    samples = [(torch.rand(3, 64, 64), {}) for _ in range(16)]
    path = calibrated_backbone("resnet50", samples, str(tmp_path / "w.pth"))
    state = torch.load(path, weights_only=True)
    assert not torch.allclose(state["bn1.running_var"], torch.ones(64))
    calibrated = build_backbone("resnet50", norm="frozen_bn", weights=path).eval()
    torch.manual_seed(0)
    random_init = build_backbone("resnet50", norm="frozen_bn").eval()
    x = (torch.rand(2, 3, 64, 64) - 0.45) / 0.225
    with torch.no_grad():
        std_calibrated = calibrated(x)["c5"].std().item()
        std_random = random_init(x)["c5"].std().item()
    assert std_calibrated < 5 < std_random, (std_calibrated, std_random)


def test_device_check_prints_one_table(tmp_path):
    """`--device-check` on this machine's device (the CPU here): every task's training and inference rows against
    the plain loops, and the 1-device DDP run. Tiny settings; the figures are not checked."""
    proc = run_benchmark("--device-check", "--variants", "eager", "--steps", "3", "--warmup", "1", "--image-size",
                         "64", "--batch-size", "2", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "images/s" not in line]
    passes = {(r.split(" | ")[0][2:], r.split(" | ")[2]) for r in rows if not r.startswith("| ddp")}
    tasks = ("classification", "detection", "segmentation")
    assert passes == {(t, p) for t in tasks for p in ("training", "inference")}
    assert any(r.startswith("| ddp | 1 device") and "| ok |" in r for r in rows), rows


def test_delta_mtl_and_the_table_by_hand(tmp_path):
    """Δ_MTL is the mean relative change of each head's metric against its single-head model; the time ratios are
    the joint run's over the sum of the single runs'."""
    from tasks.multitask.benchmark import Run, delta_mtl, report

    assert delta_mtl({"a": 0.55, "b": 0.45}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.0)
    assert delta_mtl({"a": 0.6, "b": 0.5}, {"a": 0.5, "b": 0.5}) == pytest.approx(10.0)
    singles = {h: Run(h, [h], "equal", tmp_path, {h: 0.5}, epoch_seconds=10.0, infer_seconds=0.02) for h in "ab"}
    joint = Run("joint", ["a", "b"], "equal", tmp_path, {"a": 0.6, "b": 0.49}, epoch_seconds=12.0, infer_seconds=0.01)
    row = report(singles, [joint]).splitlines()[-1].split("|")
    assert [c.strip() for c in row[1:9]] == ["joint (equal)", "0.600", "0.490", "+9.00", "1.0", "12.0", "0.60",
                                             "10.0"]
    assert row[9].strip() == "0.25"


def test_multitask_benchmark_trains_each_head_alone_and_together(tmp_path):
    """Two heads without an R-CNN (the fastest runs): one single-head run each, one joint run, one table."""
    proc = run_benchmark("--multitask", "--heads", "segmentation", "classification", "--weightings", "equal",
                         "--repeats", "1", "--keep", str(tmp_path / "runs"), "--override",
                         "data.synthetic.train_images=8", "data.synthetic.val_images=2", "data.synthetic.test_images=2",
                         "data.synthetic.image_size=64", "trainer.max_epochs=1", "data.num_workers=0",
                         tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | segmentation/mIoU | classification/mAP | Δ_MTL %")
    joint = next(r for r in rows if r.startswith("| joint (equal)")).split("|")
    assert all(float(c) == float(c) for c in (joint[2], joint[3], joint[4], joint[7], joint[9]))  # numbers, not NaN
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "joint-equal", "single-classification", "single-segmentation"]


def test_step_cost_times_each_weighting_on_the_same_joint_model(tmp_path):
    proc = run_benchmark("--multitask", "--step-cost", "--heads", "segmentation", "classification", "--weightings",
                         "equal", "pcgrad", "gradnorm", "--steps", "3", "--repeats", "2", "--override",
                         "data.synthetic.train_images=12", "data.synthetic.val_images=2",
                         "data.synthetic.test_images=2", "data.synthetic.image_size=64", "data.num_workers=0",
                         tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 rounds x 2 timed training steps (and up to as many validation batches) per weighting" in proc.stdout
    rows = {r.split("|")[1].strip(): r.split("|")[2:6] for r in proc.stdout.splitlines() if r.startswith("| ")}
    assert rows.keys() == {"weighting", "equal", "pcgrad", "gradnorm"}
    assert float(rows["equal"][1]) == 1.0 and float(rows["equal"][3]) == 1.0
    assert all(float(v) > 0 for row in (rows["pcgrad"], rows["gradnorm"]) for v in row)


@pytest.mark.parametrize("task", ["classification", "detection"])
def test_latency_benchmark_prints_percentiles_throughput_and_memory(task, tmp_path):
    proc = run_benchmark("--latency", "--task", task, "--backbone", "resnet18", "--image-size", "64",
                         "--batch-size", "2", "--requests", "3", "--rounds", "1", "--warmup", "1", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| PyTorch") or line.startswith("| onnx")]
    names = [row.split("|")[1].strip() for row in rows]
    assert names[0].startswith("PyTorch eager") and names[1] == "onnxruntime FP32"
    assert ("onnxruntime INT8" in names) == (task == "classification")  # no INT8 for the R-CNN graph
    for row in rows:
        p50, p95, p99, ips, ratio, peak = (float(v) for v in row.split("|")[2:8])
        assert 0 < p50 <= p95 <= p99 and ips > 0 and ratio > 0 and peak > 0
    assert "batch-1 latency over 3 requests per backend" in proc.stdout


def test_recipes_benchmark_trains_cerberus_and_the_plain_loop_on_a_kind(tmp_path):
    """One kind, the defaults and the plain smp loop, one epoch on 8 images: one table row with both and the ratio."""
    proc = run_benchmark("--recipes", "defaults", "plain", "--kinds", "thin", "--epochs", "1", "--override",
                         "data.synthetic.train_images=8", "data.synthetic.val_images=2", "data.synthetic.test_images=2",
                         "data.num_workers=0", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| kind | defaults | plain | defaults / plain |"
    cells = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert cells[0] == "thin" and all(re.fullmatch(r"[01]\.\d{3} \(\d+ s\)", c) for c in cells[1:3]), cells
    assert re.fullmatch(r"\d+\.\d\dx", cells[3]) and "defaults / plain mIoU: median" in proc.stdout
    bad = run_benchmark("--recipes", "defaults", "--kinds", "stripes", tmp_path=tmp_path)
    assert bad.returncode != 0 and "unknown kind(s) ['stripes']; known: shapes, thin" in bad.stdout + bad.stderr


def test_detection_recipes_train_cerberus_and_torchvision_at_equal_epochs_and_equal_time(tmp_path):
    """One kind, 1 epoch on 8 images: the defaults, the plain torchvision loop, and the plain loop for the defaults'
    wall time; one row with AP (seconds) each and both differences."""
    proc = run_benchmark("--recipes", "defaults", "plain", "plain@defaults-time", "--task", "detection", "--kinds",
                         "small", "--epochs", "1", "--override", "data.synthetic.train_images=8",
                         "data.synthetic.val_images=2", "data.synthetic.test_images=2", "data.synthetic.image_size=64",
                         "data.num_workers=0", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == ("| kind | defaults | plain | plain@defaults-time | defaults - plain | "
                       "equal time: defaults - plain |")
    cells = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert cells[0] == "small" and all(re.fullmatch(r"[01]\.\d{3} \(\d+ s(, \d+ ep)?\)", c) for c in cells[1:4]), cells
    assert all(re.fullmatch(r"[+-][01]\.\d{3}", c) for c in cells[4:6]), cells
    assert "test/AP (wall seconds)" in proc.stdout and "1 epochs" in proc.stdout


def test_equal_time_epochs_scale_by_the_measured_seconds():
    from tasks.recipes import RecipeResult, equal_time_epochs

    done = {"defaults": RecipeResult("detection", "thin", "defaults", 0.4, seconds=100.0, epochs=6),
            "plain": RecipeResult("detection", "thin", "plain", 0.4, seconds=400.0, epochs=6)}
    assert equal_time_epochs("plain@defaults-time", 6, done) == 2  # 6 x 100 / 400 = 1.5 -> 2
    assert equal_time_epochs("defaults@plain-time", 6, done) == 24
    done["plain"].seconds = 10_000.0
    assert equal_time_epochs("plain@defaults-time", 6, done) == 1  # at least one epoch
    with pytest.raises(ValueError, match="needs the 'defaults' and 'plain' runs"):
        equal_time_epochs("defaults@plain-time", 6, {"defaults": done["defaults"]})


def test_step_cost_compares_configs_of_one_task(tmp_path):
    """Two detector configs (the box head 1024 and 256 wide), interleaved: training steps and validation batches, the
    defaults first, ratio 1.00."""
    proc = run_benchmark("--step-cost", "--task", "detection", "--backbone", "resnet18", "--configs", "defaults",
                         "task.model.representation_size=256 task.model.box_batch_size_per_image=32", "--steps",
                         "3", "--repeats", "2", "--override", "data.synthetic.train_images=12",
                         "data.synthetic.val_images=2", "data.synthetic.test_images=2", "data.synthetic.image_size=64",
                         "data.num_workers=0", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "detection model" in proc.stdout and "2 rounds x 2 timed training steps" in proc.stdout
    rows = {r.split("|")[1].strip(): r.split("|")[2:6] for r in proc.stdout.splitlines() if r.startswith("| ")}
    narrow = "task.model.representation_size=256 task.model.box_batch_size_per_image=32"
    assert rows.keys() == {"config", "defaults", narrow}
    assert float(rows["defaults"][1]) == 1.0 and float(rows["defaults"][3]) == 1.0
    assert all(float(v) > 0 for v in rows[narrow])  # training ms, its ratio, validation ms, its ratio


def test_step_cost_refuses_what_it_cannot_time():
    from tasks.step_cost import parse_configs, step_seconds

    with pytest.raises(ValueError, match="at least 2 steps"):
        step_seconds({"equal": []}, ["task=multitask"], steps=1)
    with pytest.raises(ValueError, match="give at least two with --configs"):
        parse_configs(["defaults"])
    with pytest.raises(ValueError, match="a config is given twice"):
        parse_configs(["defaults", "defaults"])
    assert parse_configs(["defaults", "a=1 b=2"]) == {"defaults": [], "a=1 b=2": ["a=1", "b=2"]}
    tiny = ["task=segmentation", "backbone=resnet18", "data.synthetic.train_images=4", "data.synthetic.val_images=2",
            "data.synthetic.test_images=2", "data.synthetic.image_size=32", "data.num_workers=0"]
    with pytest.raises(ValueError, match="gives only 1 batch"):  # 4 images, batch 16: one step per epoch
        step_seconds({"defaults": []}, tiny, steps=2, rounds=1)
