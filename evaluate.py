"""Evaluate a trained Cerberus checkpoint on the val and test data, without fitting. `python evaluate.py --help`.

    python evaluate.py ckpt_path=outputs/.../checkpoints/best-epoch009.ckpt                  # classification run
    python evaluate.py task=detection ckpt_path=RUN.ckpt data=coco data.root=/data/coco     # the run's options

The same config as train.py (pass the task and data options of the run that wrote the checkpoint); prints the val
and test metrics and the task's tables. `python train.py train=false ckpt_path=...` is the same thing.
"""

import sys

import hydra
from omegaconf import DictConfig

from tasks.cli import preflight
from tasks.config_check import check_config
from train import run  # importing train.py also registers the backbone groups and the resolvers


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    sys.argv.insert(1, "train=false")  # train.py's evaluation path: no fitting, `ckpt_path` is the one to evaluate
    preflight("config", sys.argv[1:], "evaluate.py", check=check_config)
    main()
