"""Train, validate and test a Cerberus model. `python train.py --help` lists the config groups.

    python train.py                                   # classification on the built-in synthetic set
    python train.py task=classification backbone=resnet50 data=imagefolder data.root=/my/data
"""

import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from backbones.hydra_configs import register_configs
from tasks.cli import preflight, user_errors
from tasks.config_check import check_config
from tasks.run_dir import clear_failed, mark_failed, register_resolvers

register_configs()  # the `backbone` and `neck` groups come from the registry
register_resolvers()  # `hydra.run.dir`: a resumed run continues in its own directory
# Lightning 2.6 calls a torch pytree API that torch >= 2.10 deprecates: noise for every user, nothing to act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@user_errors  # a user's mistake: one line, exit 2; anything else keeps its traceback
def run(cfg: DictConfig) -> float | None:
    """Fit and test (with `train=false`: evaluate `ckpt_path`); the value a sweeper would optimise."""
    check_config(cfg, HydraConfig.get().runtime.choices)  # each job of a sweep (preflight covers single runs)
    # heavy imports after Hydra has parsed (fast --help, fast config errors)
    from tasks.distributed import one_job
    from tasks.divergence import DivergenceError
    from tasks.run import train

    run = HydraConfig.get().runtime.output_dir
    try:
        with one_job():  # under DDP every rank runs this job, in this directory; a sweep's next job starts clean
            metrics = train(cfg)
    except DivergenceError as err:  # the message is the whole story: where, which terms, what to try
        mark_failed(run, err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:
        mark_failed(run, err)
        raise
    clear_failed(run)
    return metrics.get(cfg.task.monitor.replace("val/", "test/"))


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    preflight("config", sys.argv[1:], "train.py", check=check_config)
    main()
