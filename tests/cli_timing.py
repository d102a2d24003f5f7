"""How long the command line takes before it does anything: `--help`, `--cfg job`, a config error (each the median
of `--repeats` runs), and a real start-up, from the command to the first training step (the first progress line).

    python -m tests.cli_timing                 # 5 runs each
    python -m tests.cli_timing --repeats 3 --no-startup
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "train.py --help": ["--help"],
    "train.py --cfg job": ["--cfg", "job"],
    "train.py trainer.max_epoch=1 (typo)": ["trainer.max_epoch=1"],
    "train.py optim.lr=-1 (bad value)": ["optim.lr=-1"],
}
# the default classification run, one tiny epoch: the time to its first step is start-up, not training
STARTUP = ["data.synthetic.num_classes=3", "data.synthetic.train_per_class=8", "data.synthetic.val_per_class=2",
           "data.synthetic.test_per_class=2", "data.synthetic.image_size=32", "data.image_size=32",
           "data.num_workers=0", "trainer.max_epochs=1", "logger=csv", "callbacks.progress_log.every_n_steps=1"]


def timed(args: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, check=False)
    return time.perf_counter() - start


def to_first_step(cwd: str) -> float:
    """Seconds from launching `train.py` to its first progress line (`step 1/`), stdout piped as in a job."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *STARTUP], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = float("nan")
    for line in proc.stdout:
        if "  step 1/" in line:
            seconds = time.perf_counter() - start
            break
    proc.kill()
    proc.wait()
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up-to-first-step measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cwd:
        for name, case in CASES.items():
            runs = sorted(timed(case, cwd) for _ in range(args.repeats))
            print(f"{name:40s} median {statistics.median(runs):5.2f} s  (runs {', '.join(f'{r:.2f}' for r in runs)})",
                  flush=True)
        if not args.no_startup:
            to_first_step(cwd)  # once untimed: generates the synthetic set and warms the file cache
            runs = sorted(to_first_step(cwd) for _ in range(args.repeats))
            print(f"{'train.py to its first training step':40s} median {statistics.median(runs):5.2f} s  "
                  f"(runs {', '.join(f'{r:.2f}' for r in runs)})")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
