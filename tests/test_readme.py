"""The README stays true: CI runs its test command, and it lists every backbone and config group."""

from __future__ import annotations

from conftest import ROOT

from backbones import BACKBONES

README = (ROOT / "README.md").read_text()
TEST_COMMAND = "pip install -q uv && uv sync --frozen && uv run --frozen pytest"
TRAIN_COMMAND = "pip install -q uv && uv sync --frozen && uv run --frozen python train.py"


def test_two_commands_and_ci_runs_the_readme_test_command():
    assert TRAIN_COMMAND in README and TEST_COMMAND in README
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == TEST_COMMAND


def test_every_backbone_is_listed():
    missing = [name for name in BACKBONES.names() if f"`{name}`" not in README]
    assert not missing, f"add to README's backbone table: {missing}"


def test_every_config_group_is_listed():
    groups = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "hydra")
    groups += ["backbone", "neck"]  # generated from the registry, no folder
    missing = [g for g in groups if f"`{g}`" not in README]
    assert not missing, missing
