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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--matrix", action="store_true",
                     help="also run the whole registry matrix (tests/test_matrix.py cells marked `matrix`)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The full registry matrix (about 15 min on 2 cores) runs with --matrix or `python -m tests.matrix`; the
    default suite runs its inner-loop cells (every torchvision depth and one timm model per family, detection)."""
    if config.getoption("--matrix"):
        return
    skip = pytest.mark.skip(reason="the whole registry matrix: pass --matrix (or run python -m tests.matrix)")
    for item in items:
        if "matrix" in item.keywords:
            item.add_marker(skip)
