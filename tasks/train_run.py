"""`python train.py ...` in a subprocess with a CSV logger, read back: what the benchmarks and the registry matrix
run (a user's own command, nothing in-process that a real run would not do)."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TrainResult:
    """The run's exit, wall seconds, every CSV-logged row, and the last line of its error output on a failure."""

    returncode: int
    seconds: float
    rows: list[dict[str, str]] = field(default_factory=list)
    error: str = ""

    def last(self, key: str) -> float:
        """The last logged value of `key` (e.g. "test/mIoU"); NaN when it was never logged."""
        values = [float(r[key]) for r in self.rows if r.get(key)]
        return values[-1] if values else float("nan")

    def series(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.rows if r.get(key)]


def train(overrides: Sequence[str], run_dir: Path, cwd: str | Path | None = None) -> TrainResult:
    """Run train.py with `overrides` + `logger=csv hydra.run.dir=<run_dir>` and read `<run_dir>/csv/metrics.csv`; a
    run that fails or logs nothing has `error` set."""
    args = [*overrides, "logger=csv", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd or ROOT, capture_output=True,
                          text=True)
    result = TrainResult(proc.returncode, time.perf_counter() - start)
    log = Path(run_dir) / "csv" / "metrics.csv"
    if proc.returncode != 0 or not log.is_file():
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        result.error = f"exit {proc.returncode}: {lines[-1] if lines else ''}"
        return result
    with log.open(newline="") as f:
        result.rows = list(csv.DictReader(f))
    return result
