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
