"""The one task module of every run: a `MultiHeadModel` and one part per head (tasks/parts.py).

A single-task run (`task=classification`, `detection`, ...) is the one-head case: its part logs under the split
alone (`val/acc1`) and its loss is the head's. A joint run logs each head under its name (`val/detection/AP`) and
combines the heads' losses with a `LossWeighting` (tasks/multitask/weighting.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from rich.table import Table
from torch import Tensor, nn

from .base import TaskModule
from .drawing import publish_validation_grid
from .parts import HeadPart

if TYPE_CHECKING:  # tasks.multitask imports the task packages, which import this module
    from .multitask.weighting import LossWeighting


def _migrate_module_keys(module: HeadsTask, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Single-task modules before the parts kept their loss (e.g. segmentation's class weights) as `criterion.`."""
    if len(module.parts) == 1:
        name = next(iter(module.parts))
        for key in [k for k in state_dict if k.startswith(prefix + "criterion.")]:
            state_dict[f"{prefix}parts.{name}.{key[len(prefix):]}"] = state_dict.pop(key)


class HeadsTask(TaskModule):
    """Batches are `(images, targets)`: in a one-head run the task's own (labels (B,), masks (B, H, W), a tuple of
    box dicts); in a joint run a tuple of per-image dicts (`data/multitask.py`), split per head by each part.

    Args (besides `TaskModule`'s):
        parts: head name -> its part; the model's heads, the same names.
        weighting: combines the heads' losses in a joint run (None with one head: its loss is the total). A head
            without any label in a batch stays out of it (its zero loss only ties its parameters into backward).
        head_lr_mult: head name -> factor on the base lr of that head's parameters (default 1).
        weighting_lr_mult: factor on the base lr of the weighting's learned weights (uncertainty, gradnorm): with
            AdamW each step moves a weight by about the lr, multitask's 2e-4 by default, so over a short run they
            hardly move.
        score: logged name without the split (e.g. "detection/AP") -> weight: `val/score`, `test/score` are the
            weighted mean of those metrics, for choosing the best checkpoint of a joint run (`task.monitor`).
        vis_images: validation images drawn each epoch (0: none).
    """

    def __init__(self, model: nn.Module, *args: Any, parts: Mapping[str, HeadPart],
                 weighting: LossWeighting | None = None, head_lr_mult: Mapping[str, float] | None = None,
                 score: Mapping[str, float] | None = None, vis_images: int = 0, weighting_lr_mult: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        missing = set(model.heads) ^ set(parts)
        if missing:
            raise ValueError(f"one part per head: the model's heads are {list(model.heads)}, the parts {list(parts)}")
        joint = [name for name, part in parts.items() if part.joint]
        if (len(parts) > 1 or joint) and (weighting is None or len(joint) != len(parts)):
            raise ValueError("a joint module needs joint parts (a prefix each) and a loss weighting "
                             "(tasks.multitask.MultiTaskTask builds both)")
        unknown = set(head_lr_mult or {}) - set(parts)
        if unknown:
            raise ValueError(f"head_lr_mult names {sorted(unknown)}, which are not heads of the model {list(parts)}")
        self.parts = nn.ModuleDict(parts)
        self.weighting = weighting
        self.head_lr_mult = {k: float(v) for k, v in (head_lr_mult or {}).items()}
        self.weighting_lr_mult = float(weighting_lr_mult)
        self.score = {k: float(v) for k, v in (score or {}).items()}
        self.vis_images = vis_images
        # head -> (sum, batches) of this training epoch's losses, for DWA; tensors on the device, so the training
        # step never waits for the device to read a value back
        self._epoch_losses: dict[str, Tensor] = {}
        # PCGrad, GradNorm: this step's labelled heads' weighted losses (name -> 0-dim, with graph) and total
        self._surgery: tuple[dict[str, Tensor], Tensor] | None = None
        self._register_load_state_dict_pre_hook(_migrate_module_keys, with_module=True)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        for part in self.parts.values():
            part.setup(self, stage)

    @property
    def single(self) -> bool:
        """A single-task module: one head, the task's own batches, names without the head's."""
        return not any(part.joint for part in self.parts.values())

    def split_batch(self, batch: Any) -> tuple[Any, dict[str, Any]]:
        """(images, {head name: that head's targets})."""
        images, targets = batch[0], batch[1]
        return images, {name: part.joint_targets(targets) if part.joint else targets
                        for name, part in self.parts.items()}

    def _model_targets(self, targets: dict[str, Any]) -> Any:
        """The R-CNN head's targets (the only head whose forward takes them), else None."""
        name = self.model.rcnn_name
        return None if name is None else self.parts[name].model_targets(targets[name], self.training)

    def forward(self, images: Any) -> Any:
        """The model in its current mode; a one-head model's output alone, else {head name: output}."""
        out = self.model(images)
        return next(iter(out.values())) if self.single else out

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images, targets = self.split_batch(batch)
        outputs = self.model(images, self._model_targets(targets))
        losses, ties, terms = {}, [], {}
        for name, part in self.parts.items():
            head_terms = part.loss(outputs[name], targets[name])
            part.update("train", outputs[name], targets[name])
            if part.labelled(targets[name]):
                losses[name] = head_terms["loss"]
                terms.update({f"{part.prefix}{k}": v for k, v in head_terms.items() if part.prefix or k != "loss"})
            else:  # no label for this head in the batch: a zero that keeps its parameters in backward (DDP)
                ties.append(head_terms["loss"])
        if self.single:
            loss = next(iter(losses.values()))
            epoch = next(iter(self.parts.values())).epoch_train_loss
        else:
            loss, weights = self.weighting(losses)
            loss = loss + sum(ties) if ties else loss
            if self.weighting.surgery and len(losses) > 1:
                self._surgery = ({n: weights[n] * value for n, value in losses.items()}, loss)
            self.log_dict({f"train/{n}/weight": w for n, w in weights.items()}, batch_size=len(images))
            for name, value in losses.items():
                step = torch.stack([value.detach().float(), value.new_ones((), dtype=torch.float32)])
                self._epoch_losses[name] = self._epoch_losses.get(name, 0) + step
            epoch = True
        n = len(images)
        # the epoch mean over every rank's batches where it is logged per epoch
        self.log("train/loss", loss, on_step=True, on_epoch=epoch, prog_bar=True, batch_size=n, sync_dist=epoch)
        if len(terms) > 1:  # the separate terms (Dice and CE, torchvision's four losses, each head's)
            self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=n)
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}  # the terms name a divergence

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward, or the weighting's gradient surgery (PCGrad, GradNorm: `tasks/multitask/surgery.py`)
        when it asks for one and the step had two or more labelled heads and a finite, non-zero loss."""
        stash, self._surgery = self._surgery, None
        if stash is None or not bool(torch.isfinite(stash[1]) & (stash[1] != 0)):
            return super().backward(loss, *args, **kwargs)
        from .multitask.surgery import surgery_backward

        surgery_backward(self, list(self.model.body.parameters()), self.weighting, *stash, loss)

    def _evaluate(self, batch: Any, split: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        images, targets = self.split_batch(batch)
        outputs = self.model(images)
        for name, part in self.parts.items():
            part.update(split, outputs[name], targets[name])
            if part.eval_loss:
                self.log(f"{split}/{part.prefix}loss", part.loss(outputs[name], targets[name])["loss"],
                         on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images), sync_dist=True)
        return images, outputs, targets

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, outputs, targets = self._evaluate(batch, "val")
        if batch_idx == 0 and self.vis_images and not self.trainer.sanity_checking:
            for name, part in self.parts.items():
                part.keep(images, outputs[name], targets[name], self.vis_images)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """Batches of `(images, targets)` or of images alone -> a one-head model's predictions (probabilities
        (B, K[, H, W]); per-image detection dicts), else {head name: predictions}."""
        if self.model.rcnn_name is not None:
            images = batch[0] if isinstance(batch[0], (tuple, list)) else batch
        else:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
        outputs = self.model(images)
        preds = {name: part.predict(outputs[name]) for name, part in self.parts.items()}
        return next(iter(preds.values())) if self.single else preds

    def on_train_epoch_end(self) -> None:
        for part in self.parts.values():
            part.log_split(self, "train")
        if self.weighting is not None and self._epoch_losses:
            self.weighting.epoch_end(self._mean_epoch_losses())
        self._epoch_losses = {}

    def _mean_epoch_losses(self) -> dict[str, float]:
        """Each head's mean loss over this epoch's batches that labelled it, over every DDP process."""
        names = list(self.parts)
        none = torch.zeros(2, device=self.device)
        sums = torch.stack([self._epoch_losses.get(n, none).to(self.device) for n in names])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self.trainer.world_size > 1 else sums
        return {n: float(s / c) for n, (s, c) in zip(names, sums.tolist()) if c > 0}

    def _log_score(self, split: str, logged: dict[str, Tensor]) -> None:
        """`<split>/score`: the weighted mean of the `score` metrics that this epoch logged."""
        present = {k: w for k, w in self.score.items() if f"{split}/{k}" in logged}
        if present:
            value = sum(w * float(logged[f"{split}/{k}"]) for k, w in present.items()) / sum(present.values())
            self.log(f"{split}/score", value, prog_bar=split == "val", sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        logged = {}
        for part in self.parts.values():
            logged.update(part.log_split(self, "val"))
        self._log_score("val", logged)
        pictures = [p for p in (part.draw() for part in self.parts.values()) if p is not None]
        if pictures:
            grid, caption = pictures[0] if len(pictures) == 1 else _stack_pictures(pictures)
            publish_validation_grid(self, grid, caption)

    def on_test_epoch_end(self) -> None:
        logged = {}
        for part in self.parts.values():
            logged.update(part.log_split(self, "test"))
        self._log_score("test", logged)

    def param_groups(self) -> list[dict[str, Any]]:
        """`TaskModule`'s groups (backbone at `backbone_lr_mult`, the rest at the base lr), with each head of
        `head_lr_mult` in a group of its own, and the loss weighting's learned weights at the base lr."""
        groups = super().param_groups()
        for name, mult in self.head_lr_mult.items():
            if mult == 1.0:
                continue
            ids = {id(p) for p in self.model.heads[name].parameters()}
            moved = [p for g in groups for p in g["params"] if id(p) in ids]
            for g in groups:
                g["params"] = [p for p in g["params"] if id(p) not in ids]
            groups.append({"params": moved, "lr_mult": mult})
        if self.weighting is not None and any(True for _ in self.weighting.parameters()):
            # learned loss weights (log-variances) are not decayed towards 0
            groups.append({"params": list(self.weighting.parameters()), "lr_mult": self.weighting_lr_mult,
                           "weight_decay": 0.0})
        return [g for g in groups if g["params"] and g["lr_mult"] > 0]

    def report_tables(self) -> list[Table]:
        return [table for part in self.parts.values() for table in part.report_tables()]


def _stack_pictures(pictures: list[tuple[Tensor, str]]) -> tuple[Tensor, str]:
    """Several heads' pictures one under the other (padded to the widest), their captions joined."""
    width = max(grid.shape[-1] for grid, _ in pictures)
    grids = [F.pad(grid, (0, width - grid.shape[-1])) for grid, _ in pictures]
    return torch.cat(grids, dim=1), "; ".join(caption for _, caption in pictures)
