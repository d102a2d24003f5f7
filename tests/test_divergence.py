"""The divergence guard stops a run at the step its loss turns non-finite or explodes, with one message that names
the step, each loss term, the learning rate, the fixes and the last good checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_SYNTHETIC, run_train

from tasks.divergence import DivergenceError, DivergenceGuard


class _Trainer:
    """The attributes the guard reads from a Trainer."""

    def __init__(self) -> None:
        self.current_epoch, self.global_step = 2, 41
        self.optimizers = [torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.25)]
        self.callbacks, self.checkpoint_callback = [], None

        class _Strategy:
            @staticmethod
            def reduce_boolean_decision(decision: bool, all: bool = True) -> bool:
                return decision

        self.strategy = _Strategy()


def test_nan_loss_names_step_terms_lr_and_fixes():
    guard = DivergenceGuard()
    out = {"loss": torch.tensor(math.nan), "loss_classifier": torch.tensor(0.7), "loss_box_reg": torch.tensor(math.inf)}
    with pytest.raises(DivergenceError) as err:
        guard.on_train_batch_end(_Trainer(), None, out, None, 5)
    msg = str(err.value)
    for text in ("epoch 2, batch 5 (optimizer step 41)", "the loss is nan", "loss_classifier=0.7",
                 "loss_box_reg=inf", "learning rate: 0.25", "optim.lr=", "trainer.gradient_clip_val",
                 "(none saved yet)"):
        assert text in msg, (text, msg)


def test_exploding_loss_is_caught_after_the_reference_steps():
    guard = DivergenceGuard(explode_factor=100, reference_steps=3)
    for loss in (2.0, 1.5, 1.8, 50.0, 150.0):  # 50 is 28x the median 1.8: a spike, not divergence
        guard.on_train_batch_end(_Trainer(), None, {"loss": torch.tensor(loss)}, None, 0)
    with pytest.raises(DivergenceError, match="over 100x the median 1.8"):
        guard.on_train_batch_end(_Trainer(), None, {"loss": torch.tensor(181.0)}, None, 0)
    # the reference is checkpointed, so a resumed run compares with the same steps
    other = DivergenceGuard(reference_steps=3)
    other.load_state_dict(guard.state_dict())
    assert other._first == pytest.approx([2.0, 1.5, 1.8])


def test_a_diverging_run_stops_at_that_step(tmp_path):
    """An absurd learning rate: the run stops with the message (no traceback soup needed to find it), writes no
    checkpoint of the diverged weights and exits non-zero."""
    run = tmp_path / "run"
    proc = run_train(*TINY_SYNTHETIC, "experiment=smoke", "data.image_size=32", "optim=sgd", "optim.lr=1e6",
                     "scheduler=none", "trainer.limit_train_batches=6", f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "training diverged at epoch 0, batch" in proc.stderr and "learning rate: 1e+06" in proc.stderr
    assert not list((run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").exists() else True
