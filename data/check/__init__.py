"""`python -m data.check data=<coco|masks|imagefolder> data.root=...`: check a dataset before training and print
a report (counts per class, size statistics, every problem with its fix); exit code 1 when there are errors.

Light on purpose: the loaders import `data.check.problems`, so the checker itself is imported on demand."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checker on Hydra overrides `argv` (default: the command line); returns the exit code."""
    from .cli import main as run

    return run(argv)
