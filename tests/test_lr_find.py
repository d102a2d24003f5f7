"""`tune.lr_find=true`: Lightning's learning-rate finder picks `optim.lr` before fitting; the lr is logged, used by
the first training step (through the multipliers and the warm-up) and stored; bad options are one line, exit 2."""

from __future__ import annotations

import csv
import logging
import re
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import TINY_SYNTHETIC, run_train
from hydra.utils import instantiate

from backbones.hydra_configs import compose_config
from tasks import tuning
from tasks.build import build_task

TINY = [*TINY_SYNTHETIC, "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "logger=csv",
        "trainer.max_epochs=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "tune.lr_find=true", "tune.num_training=20"]


def test_the_search_restores_the_model_and_sets_the_base_lr(tmp_path):
    cfg = compose_config(TINY, output_dir=tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_task(cfg, datamodule.class_names)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)

    assert tuning.find_lr(cfg, trainer, module, datamodule, tmp_path)
    lr = cfg.optim.lr
    assert lr != 2e-3 and module.optimizer_factory.keywords["lr"] == lr
    assert module.hparams["config"]["optim"]["lr"] == lr == module.hparams_initial["config"]["optim"]["lr"]
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the initial weights are back"
    assert all(p.requires_grad for p in module.parameters())
    assert not list(tmp_path.glob(".lr_find_*.ckpt")), "Lightning's temporary checkpoint is removed"
    with open(tmp_path / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert 13 <= len(rows) <= 20 and float(rows[0]["lr"]) == pytest.approx(1e-8)  # it may stop when it diverges


def test_a_run_logs_uses_and_stores_the_suggestion(tmp_path, caplog):
    """Through train(): EMA and gradual unfreezing on, the backbone at 0.1x, a warm-up: the first step's lr of each
    param group is the suggestion times its multiplier times the warm-up's start; the checkpoint stores it."""
    from tasks.run import train

    cfg = compose_config([*TINY, "callbacks=[default,ema,gradual_unfreeze]",
                          "callbacks.gradual_unfreeze.unfreeze_at_epoch=0",
                          "task.module.backbone_lr_mult=0.1", "scheduler.warmup_ratio=0.5",
                          "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1"], output_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        train(cfg)
    messages = [r.getMessage() for r in caplog.records]
    line = next(m for m in messages if m.startswith("lr_find: suggested"))
    match = re.fullmatch(r"lr_find: suggested lr (\S+) \(was 2\.0e-03\); using it", line)
    assert match, line
    lr = cfg.optim.lr
    assert match.group(1) == f"{lr:.1e}"
    assert any("c5 is trainable" in m for m in messages), "gradual unfreezing still unfreezes after the search"

    with open(next(tmp_path.glob("csv/**/metrics.csv"))) as f:
        first = next(row for row in csv.DictReader(f) if row.get("lr-AdamW/pg1"))
    warmup_start = 0.01  # conf/scheduler/cosine.yaml
    assert float(first["lr-AdamW/pg1"]) == pytest.approx(lr * warmup_start)  # neck + head
    assert float(first["lr-AdamW/pg2"]) == pytest.approx(lr * 0.1 * warmup_start)  # backbone

    best = next((tmp_path / "checkpoints").glob("best-*.ckpt"))
    stored = torch.load(best, weights_only=True)["hyper_parameters"]["config"]
    assert stored["optim"]["lr"] == lr
    assert f"lr: {lr}" in (tmp_path / "config_resolved.yaml").read_text()


def test_the_suggestion_is_the_steepest_descent_per_decade():
    """Exponential steps: the slope against log10(lr), so the noise of the tiny lrs (whose steps are tiny in lr)
    does not win over the real descent around 1e-3."""
    lrs = torch.logspace(-8, 0, 100, dtype=torch.float64)
    losses = 2 - torch.tanh(2 * (lrs.log10() + 3)) + 1e-3 * torch.sin(torch.arange(100.0))
    finder = SimpleNamespace(mode="exponential", results={"lr": lrs.tolist(), "loss": losses.tolist()})
    assert 5e-4 < tuning.suggestion(finder) < 2e-3


def test_no_suggestion_keeps_the_configured_lr(tmp_path, monkeypatch, caplog):
    cfg = compose_config(TINY, output_dir=tmp_path)
    module = SimpleNamespace(optimizer_factory=None)
    finder = SimpleNamespace(mode="exponential", results={"lr": [1e-8, 1e-7], "loss": [1.0, 1.1]})
    monkeypatch.setattr(tuning, "_search", lambda *args: finder)
    trainer = SimpleNamespace(fast_dev_run=False)
    with caplog.at_level(logging.INFO):
        assert not tuning.find_lr(cfg, trainer, module, None, tmp_path)
    assert cfg.optim.lr == 2e-3 and module.optimizer_factory is None
    assert any(r.getMessage().startswith("lr_find: no suggestion") and "keeping optim.lr=2.0e-03" in r.getMessage()
               for r in caplog.records)

    cfg.ckpt_path = "last.ckpt"  # a resumed run keeps its checkpoint's lr: no search
    monkeypatch.setattr(tuning, "_search", lambda *args: pytest.fail("searched while resuming"))
    assert not tuning.find_lr(cfg, trainer, module, None, tmp_path)


BAD = [
    (["tune.min_lr=0.1", "tune.max_lr=0.01"], ["tune.min_lr=0.1 must be below tune.max_lr=0.01"]),
    (["tune.num_training=8"], ["tune.num_training=8", "20 or more"]),
    (["tune.mode=cosine"], ["tune.mode='cosine'", "exponential or linear"]),
    (["tune.lr_find=yes"], ["tune.lr_find='yes'", "true or false"]),
]


@pytest.mark.parametrize("args, words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_option_is_one_line_and_exit_2(tmp_path, args, words):
    proc = run_train("tune.lr_find=true", *args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": ""})
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert all(word in errors[0] for word in words), errors[0]
