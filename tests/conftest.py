"""Shared fixtures: an isolated data cache, tiny ImageFolders written as real files, a train.py runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

# Tiny synthetic set for end-to-end runs: 3 classes x a few 32 px images per split.
TINY_SYNTHETIC = [
    "data.synthetic.num_classes=3",
    "data.synthetic.train_per_class=8",
    "data.synthetic.val_per_class=4",
    "data.synthetic.test_per_class=4",
    "data.synthetic.image_size=32",
]


# Under pytest-xdist (`-n 2`) the workers share the cores: each (and every train.py it starts) gets its share of
# intra-op threads instead of all of them, so two workers do not oversubscribe a 2-core machine.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    import torch

    torch.set_num_threads(_threads)

# 2 gloo processes on CPU, as a user without GPUs runs DDP
CPU_DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data goes to a temporary cache, never to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("cerberus-cache")
    os.environ["CERBERUS_CACHE"] = str(path)
    return path


def write_png(path: Path, size: int = 32, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 255, size=(size, size, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)
    return path


def make_imagefolder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 3,
                     splits=("train", "val")) -> Path:
    """`root/<split>/<class>/<i>.png` with random pixels."""
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            for i in range(per_class):
                write_png(root / split / name / f"{i}.png", seed=100 * s + 10 * c + i)
    return root


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "ds")


def run_train(*overrides: str, cwd: Path, env: dict[str, str] | None = None,
              timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python train.py <overrides>` as a user would, in `cwd`; returns the finished process."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    out, err = proc.stdout[-4000:], proc.stderr[-6000:]
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{out}\nSTDERR:\n{err}"
