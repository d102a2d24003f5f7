"""What the task module does for one head: its loss, metrics per split, logged names, drawn predictions.

`HeadsTask` (tasks/module.py) holds one part per head of its `MultiHeadModel`; a single-task run has one part whose
`prefix` is empty (`val/acc1`, `val/AP`, ...), a joint run one per head prefixed by the head's name
(`val/classification/acc1`, `val/detection/AP`, ...).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from rich.table import Table
from torch import Tensor, nn

SPLITS = ("train", "val", "test")


class HeadPart(nn.Module):
    """Base of the parts. `name` is the head's name in the model; `prefix` is inserted after the split in every
    logged name ("" alone, "<name>/" in joint runs).

    Subclasses implement `loss`, `update`, `log_split`; the rest has defaults. `outputs` are the head's entry of the
    model's output dict; `targets` the head's part of the batch (`HeadsTask.split_batch`).
    """

    #: the split's mean loss can be computed in eval too (the R-CNN heads give losses only in training)
    eval_loss: bool = True
    #: `train/loss` is also logged per epoch (Lightning then names the two `train/loss_step`, `train/loss_epoch`)
    epoch_train_loss: bool = True

    def __init__(self, name: str, num_classes: int, class_names: list[str] | None = None, prefix: str = "") -> None:
        super().__init__()
        self.name, self.num_classes, self.prefix = name, num_classes, prefix
        self.class_names = list(class_names) if class_names else [str(k) for k in range(num_classes)]
        self._vis: Any = None  # what the first validation batch leaves for `draw`

    @property
    def joint(self) -> bool:
        """A head of a joint run: its targets come from the per-image dicts (`joint_targets`)."""
        return bool(self.prefix)

    def set_metrics(self, metrics: dict[str, nn.Module]) -> None:
        """One metric object per split (`train_metrics`, ...), so val never mixes into train's running state."""
        for split, metric in metrics.items():
            setattr(self, f"{split}_metrics", metric)

    def split_metrics(self, split: str) -> nn.Module | None:
        return getattr(self, f"{split}_metrics", None)

    def setup(self, module: L.LightningModule, stage: str) -> None:
        """Called by the task module's `setup` (after the data module's, on every process): settings taken from the
        data, e.g. segmentation's class weights from the training masks. Default: nothing."""

    def joint_targets(self, targets: Any) -> Any:
        """This head's targets out of a joint run's per-image target dicts."""
        raise NotImplementedError(f"{type(self).__name__} does not read joint batches yet")

    def labelled(self, targets: Any) -> int:
        """How many images of the batch carry this head's label (a single-task batch: all)."""
        return self.batch_size(targets)

    def model_targets(self, targets: Any, training: bool) -> Any:
        """What the model's forward takes of the targets (the R-CNN heads' boxes in training); None: nothing."""
        return None

    def loss(self, outputs: Any, targets: Any) -> dict[str, Tensor]:
        """{"loss": 0-dim total, <term>: 0-dim, ...} of one batch."""
        raise NotImplementedError

    def update(self, split: str, outputs: Any, targets: Any) -> None:
        """Feed one batch to the split's metrics."""
        raise NotImplementedError

    def log_split(self, module: L.LightningModule, split: str) -> dict[str, Tensor]:
        """Log the split's metrics once per epoch (computed over every DDP process) and reset them; returns
        {logged name: value}."""
        raise NotImplementedError

    def predict(self, outputs: Any) -> Any:
        """The head's raw outputs -> what predict.py reads (probabilities, detections)."""
        return outputs

    def keep(self, images: Any, outputs: Any, targets: Any, n: int) -> None:
        """Keep the first `n` images of a validation batch for the picture of this epoch (on the CPU)."""

    def draw(self) -> tuple[Tensor, str] | None:
        """(the (3, H, W) uint8 picture of the kept images, its caption), or None."""
        return None

    def report_tables(self) -> list[Table]:
        """Tables printed under the test results (e.g. per-class scores)."""
        return []

    def batch_size(self, targets: Any) -> int:
        return len(targets)


def tie_to(*outputs: Any) -> Tensor:
    """A zero loss that depends on `outputs` (tensors, or lists / dicts of them): a head without any label in the
    batch still takes part in backward, with zero gradients, so DDP finds every parameter used and no NaN comes
    from a mean over nothing."""
    leaves: list[Tensor] = []

    def walk(x: Any) -> None:
        if isinstance(x, Tensor):
            if x.is_floating_point():
                leaves.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(outputs)
    return sum((0 * leaf.sum() for leaf in leaves[1:]), 0 * leaves[0].sum())
