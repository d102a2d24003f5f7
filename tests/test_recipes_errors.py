"""`benchmark.py --recipes` with a recipe, dataset kind or task it does not know stops at once with a message that
lists the known ones, before anything trains."""

from __future__ import annotations

import re
import sys

import pytest

import benchmark
import tasks.recipes as recipes
from data.kinds import KINDS


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any recipe run fails the test: the names are checked first."""
    def train(*args, **kwargs):
        raise AssertionError(f"a recipe trained: {args}")

    monkeypatch.setattr(recipes, "run_recipe", train)


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """`benchmark.py <args>` in this process; the message of the SystemExit it must raise."""
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *args])
    with pytest.raises(SystemExit) as stop:
        benchmark.main()
    return str(stop.value.code)


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_an_unknown_recipe_names_the_known_ones(task, monkeypatch, no_training):
    known = ", ".join(recipes.TASKS[task].recipes)
    with pytest.raises(SystemExit, match=rf"unknown {task} recipe.*'sparkle'.*; known: {re.escape(known)}$"):
        recipes.main_recipes(["thin"], ["defaults", "sparkle"], 1, 0, [], task=task)
    assert f"known: {known}" in cli(monkeypatch, "--task", task, "--recipes", "sparkle", "--kinds", "thin")


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_an_unknown_kind_names_the_known_ones(task, monkeypatch, no_training):
    recipe = next(iter(recipes.TASKS[task].recipes))
    with pytest.raises(SystemExit, match=rf"unknown kind\(s\) \['stripes'\]; known: {', '.join(KINDS)}$"):
        recipes.main_recipes(["thin", "stripes"], [recipe], 1, 0, [], task=task)
    message = cli(monkeypatch, "--task", task, "--recipes", recipe, "--kinds", "stripes")
    assert f"known: {', '.join(KINDS)}" in message


def test_an_unknown_task_names_the_covered_ones(no_training):
    with pytest.raises(SystemExit, match=f"--recipes covers {', '.join(recipes.TASKS)}, not task classification"):
        recipes.main_recipes(["thin"], None, 1, 0, [], task="classification")
