"""`trainer.precision=auto` and the other hardware-dependent settings, for each device kind without the device."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from tasks.hardware import Device, auto_precision, detect_device, fit_to_hardware


@pytest.mark.parametrize(("device", "precision"), [
    (Device("cuda", "NVIDIA H100", bf16=True), "bf16-mixed"),
    (Device("cuda", "NVIDIA A100-SXM4-40GB", bf16=True), "bf16-mixed"),
    (Device("cuda", "Tesla V100-SXM2-16GB", bf16=False), "16-mixed"),
    (Device("cuda", "Tesla T4", bf16=False), "16-mixed"),
    (Device("mps", "Apple MPS"), "32-true"),
    (Device("cpu", "CPU"), "32-true"),
])
def test_auto_precision_per_device_kind(device, precision):
    assert auto_precision(device)[0] == precision


def test_auto_is_resolved_into_the_config_and_said(caplog):
    trainer = OmegaConf.create({"accelerator": "auto", "precision": "auto", "sync_batchnorm": True})
    with caplog.at_level(logging.INFO, logger="tasks.hardware"):
        fit_to_hardware(trainer, Device("cuda", "NVIDIA A100", bf16=True))
    assert trainer.precision == "bf16-mixed" and trainer.sync_batchnorm is True
    assert "trainer.precision=auto: bf16-mixed (NVIDIA A100 computes bfloat16 natively)" in caplog.text
    cpu = OmegaConf.create({"accelerator": "cpu", "precision": "auto", "sync_batchnorm": True})
    fit_to_hardware(cpu, Device("cpu", "CPU"))
    assert cpu.precision == "32-true" and cpu.sync_batchnorm is False  # torch's SyncBatchNorm is CUDA-only


def test_an_explicit_precision_is_kept():
    trainer = OmegaConf.create({"accelerator": "auto", "precision": "16-mixed", "sync_batchnorm": False})
    fit_to_hardware(trainer, Device("cuda", "NVIDIA A100", bf16=True))
    assert trainer.precision == "16-mixed"


def test_this_machine():
    """What the suite's machine gets: a CPU unless CUDA is there."""
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert detect_device("auto").kind == expected
    assert detect_device("cpu").kind == "cpu" and auto_precision(detect_device("cpu"))[0] == "32-true"


def test_compile_keeps_state_dict_keys_and_outputs(tmp_path):
    """task.module.compile=true compiles the model in place: checkpoints keep eager key names (no `_orig_mod.`),
    and the compiled model computes what the eager one does."""
    from backbones.hydra_configs import compose_config
    from tasks.build import build_task

    cfg = compose_config(["task.module.compile=true", "task.model.dropout=0"], output_dir=tmp_path)
    torch.manual_seed(0)
    module = build_task(cfg, ["a", "b", "c"]).eval()
    eager_keys = list(module.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        eager = module(x)
        module.setup("fit")
        compiled = module(x)
    assert list(module.state_dict()) == eager_keys and not any("_orig_mod" in k for k in eager_keys)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
