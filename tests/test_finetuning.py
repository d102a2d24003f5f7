"""Freezing and gradual unfreezing: exactly the intended parameters get gradients, frozen statistics stay put."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from backbones.base import registry_backbone
from backbones.hydra_configs import compose_config
from backbones.staged import LEVELS
from tasks.build import build_task
from tasks.finetuning import GradualUnfreeze


class Recorder(L.Callback):
    """Per epoch: which backbone levels got gradients, and which levels' tensors (params + BN stats) changed."""

    def __init__(self) -> None:
        self.grads: list[set[str]] = []
        self.changed: list[set[str]] = []
        self.head_changed: list[bool] = []

    @staticmethod
    def _levels(module):
        backbone = registry_backbone(module.model.body)
        return {lvl: backbone.level_modules(lvl) for lvl in LEVELS}

    @staticmethod
    def _snapshot(modules):
        return [t.detach().clone() for m in modules for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]

    def on_train_epoch_start(self, trainer, module):
        self.before = {lvl: self._snapshot(ms) for lvl, ms in self._levels(module).items()}
        self.head_before = module.model.head.fc.weight.detach().clone()
        self.grads.append(set())

    def on_after_backward(self, trainer, module):
        for lvl, modules in self._levels(module).items():
            if any(p.grad is not None for m in modules for p in m.parameters()):
                self.grads[-1].add(lvl)

    def on_train_epoch_end(self, trainer, module):
        after = {lvl: self._snapshot(ms) for lvl, ms in self._levels(module).items()}
        self.changed.append({lvl for lvl in LEVELS
                             if any(not torch.equal(a, b) for a, b in zip(self.before[lvl], after[lvl]))})
        self.head_changed.append(not torch.equal(self.head_before, module.model.head.fc.weight))


def fit(tmp_path, overrides, callbacks, epochs):
    cfg = compose_config(["backbone=resnet18", "logger=none", "optim.weight_decay=0.05", *overrides],
                         output_dir=tmp_path)
    module = build_task(cfg, ["a", "b", "c"])
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g))
    recorder = Recorder()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[*callbacks, recorder])
    trainer.fit(module, DataLoader(data, batch_size=4))
    return recorder, module


def test_freeze_at_with_batchnorm_freezes_exactly_the_stem_and_first_stage(tmp_path):
    recorder, module = fit(tmp_path, ["backbone.freeze_at=2", "backbone.norm=bn"], [], epochs=1)
    assert recorder.grads == [{"c3", "c4", "c5"}]
    assert recorder.changed == [{"c3", "c4", "c5"}]  # c1, c2: weights and (Frozen)BN statistics untouched
    assert type(module.model.body.bn1).__name__ == "FrozenBatchNorm2d"
    assert type(module.model.body.layer2[0].bn1).__name__ == "BatchNorm2d"


def test_gradual_unfreeze_from_c5_down_respecting_freeze_at(tmp_path):
    unfreeze = GradualUnfreeze(unfreeze_at_epoch=1, epochs_per_stage=1)
    recorder, module = fit(tmp_path, ["backbone.freeze_at=2"], [unfreeze], epochs=4)
    assert unfreeze.schedule == {"c5": 1, "c4": 2, "c3": 3}  # c1, c2 stay frozen by freeze_at
    assert recorder.grads == [set(), {"c5"}, {"c4", "c5"}, {"c3", "c4", "c5"}]
    # no weight decay and no BatchNorm statistics move in a frozen stage
    assert recorder.changed == [set(), {"c5"}, {"c4", "c5"}, {"c3", "c4", "c5"}]
    assert all(recorder.head_changed)
    # the backbone was in the optimizer from the start, at lr * lr_mult, on the run's schedule
    groups = module.trainer.optimizers[0].param_groups
    assert len(groups) == 2 and groups[1]["lr_mult"] == 1.0


def test_callback_configs_compose_and_combine(tmp_path):
    cfg = compose_config(["callbacks=[default,gradual_unfreeze,ema]"], output_dir=tmp_path)
    callbacks = {name: instantiate(node) for name, node in cfg.callbacks.items()}
    assert isinstance(callbacks["gradual_unfreeze"], GradualUnfreeze)
    assert type(callbacks["ema"]).__name__ == "EMAWeightAveraging"
    assert "model_checkpoint" in callbacks


def test_ema_weights_are_used_for_evaluation(tmp_path):
    """EMA off by default; with callbacks=[minimal,ema] the module ends with averaged weights."""
    assert "ema" not in compose_config([], output_dir=tmp_path).callbacks
    cfg = compose_config(["callbacks=[minimal,ema]", "callbacks.ema.decay=0.5"], output_dir=tmp_path)
    ema = instantiate(cfg.callbacks.ema)
    recorder, module = fit(tmp_path, [], [ema], epochs=1)
    averaged = ema._average_model.module.model.head.fc.weight
    torch.testing.assert_close(module.model.head.fc.weight, averaged)  # swapped in at the end of fitting


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be >= 0"):
        GradualUnfreeze(unfreeze_at_epoch=-1)
