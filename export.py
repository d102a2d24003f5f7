"""Export a trained Cerberus checkpoint (ONNX, TorchScript, torch.export) and check it. `python export.py --help`.

    python export.py ckpt=outputs/.../checkpoints/best-epoch009.ckpt [format=onnx] [output=model.onnx]
"""

import sys
import warnings

import hydra
from omegaconf import DictConfig

from tasks.cli import preflight, user_errors

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
@user_errors  # a user's mistake (a missing file, an unknown format, a failed export): one line, exit 2
def main(cfg: DictConfig) -> None:
    from tasks.export.run import check_arguments

    check_arguments(cfg)  # a wrong path or option fails before the heavy imports
    from tasks.export.run import export

    export(cfg)


if __name__ == "__main__":
    preflight("export", sys.argv[1:], "export.py")
    main()
