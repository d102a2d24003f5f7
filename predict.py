"""Predict with a trained Cerberus checkpoint (or its exported .onnx) on an image or a directory of images.
`python predict.py --help`.

    python predict.py ckpt=outputs/.../checkpoints/last.ckpt input=images/ [output=preds] [batch_size=16]
    python predict.py ckpt=outputs/.../checkpoints/last.onnx input=images/     # onnxruntime, no torch
"""

import sys
import warnings

import hydra
from omegaconf import DictConfig

from tasks.cli import preflight, user_errors

# Lightning 2.6 calls a torch pytree API that torch >= 2.10 deprecates: noise for every user, nothing to act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
@user_errors  # a user's mistake (a missing file, a checkpoint that is not one, no GPU): one line, exit 2
def main(cfg: DictConfig) -> None:
    from tasks.prediction.arguments import check_arguments

    check_arguments(cfg)  # a wrong path or option fails before the heavy imports
    if str(cfg.ckpt).endswith(".onnx"):  # an exported model: onnxruntime, numpy and Pillow, no torch
        from tasks.runtime.predict import predict_exported

        predict_exported(cfg)
        return
    from tasks.prediction.run import predict

    predict(cfg)


if __name__ == "__main__":
    preflight("predict", sys.argv[1:], "predict.py")
    main()
