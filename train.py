"""Train, validate and test a Cerberus model. `python train.py --help` lists the config groups.

    python train.py                                   # classification on the built-in synthetic set
    python train.py task=classification backbone=resnet50 data=imagefolder data.root=/my/data
"""

import warnings

import hydra
from omegaconf import DictConfig

from backbones.hydra_configs import register_configs

register_configs()  # the `backbone` and `neck` groups come from the registry
# Lightning 2.6 calls a torch pytree API that torch >= 2.10 deprecates: noise for every user, nothing to act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # heavy imports after Hydra has parsed (fast --help, fast config errors)
    from tasks.run import train

    metrics = train(cfg)
    return metrics.get(cfg.task.monitor.replace("val/", "test/"))  # the value a sweeper would optimise


if __name__ == "__main__":
    main()
