"""Train, validate and test a Cerberus model. `python train.py --help` lists the config groups.

    python train.py                                   # classification on the built-in synthetic set
    python train.py task=classification backbone=resnet50 data=imagefolder data.root=/my/data
"""

import sys
import warnings

import hydra
from omegaconf import DictConfig

from backbones.hydra_configs import register_configs
from tasks.run_dir import register_resolvers

register_configs()  # the `backbone` and `neck` groups come from the registry
register_resolvers()  # `hydra.run.dir`: a resumed run continues in its own directory
# Lightning 2.6 calls a torch pytree API that torch >= 2.10 deprecates: noise for every user, nothing to act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # heavy imports after Hydra has parsed (fast --help, fast config errors)
    from tasks.divergence import DivergenceError
    from tasks.run import train

    try:
        metrics = train(cfg)
    except DivergenceError as err:  # the message is the whole story: where, which terms, what to try
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    return metrics.get(cfg.task.monitor.replace("val/", "test/"))  # the value a sweeper would optimise


if __name__ == "__main__":
    main()
