"""Trainer settings that depend on the hardware the run meets, decided once at start-up, said in one line and
written back into the config (so the stored config records what ran): `trainer.precision=auto` and SyncBatchNorm
off on CPUs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """What the precision choice depends on: the device kind (`cuda`, `mps`, `cpu`, ...), its name, and whether
    it computes bfloat16 natively (NVIDIA Ampere and newer)."""

    kind: str
    name: str = ""
    bf16: bool = False


def detect_device(accelerator: str) -> Device:
    """The device `trainer.accelerator` gives on this machine (`auto`: CUDA, else MPS, else CPU)."""
    accelerator = str(accelerator)
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return Device("cuda", torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported(including_emulation=False))
    mps = getattr(torch.backends, "mps", None)
    if accelerator in ("gpu", "mps", "auto") and mps is not None and mps.is_available():
        return Device("mps", "Apple MPS")
    return Device("cpu" if accelerator in ("auto", "gpu", "cuda", "mps") else accelerator, "CPU")


def auto_precision(device: Device) -> tuple[str, str]:
    """`trainer.precision=auto` -> (Lightning precision, why): bf16 mixed where the GPU computes bfloat16 natively
    (no loss scaling needed), fp16 mixed with loss scaling on older GPUs, fp32 elsewhere (CPUs gain nothing
    reliable from autocast, and MPS mixed precision is not what Lightning tests)."""
    if device.kind == "cuda" and device.bf16:
        return "bf16-mixed", f"{device.name} computes bfloat16 natively"
    if device.kind == "cuda":
        return "16-mixed", f"{device.name} has no native bfloat16: float16 with loss scaling"
    return "32-true", f"{device.kind.upper()}: float32"


def fit_to_hardware(trainer_cfg: DictConfig, device: Device | None = None) -> None:
    """Resolve `precision=auto` and switch SyncBatchNorm off on CPUs (torch's is CUDA-only; under CPU DDP, gloo,
    each process keeps its own BatchNorm), in `trainer_cfg` itself; say what was chosen."""
    device = device or detect_device(trainer_cfg.get("accelerator", "auto"))
    if str(trainer_cfg.get("precision")) == "auto":
        precision, why = auto_precision(device)
        trainer_cfg.precision = precision
        log.info("trainer.precision=auto: %s (%s)", precision, why)
    if trainer_cfg.get("sync_batchnorm") and device.kind != "cuda":
        log.warning("trainer.sync_batchnorm needs GPUs (torch's SyncBatchNorm is CUDA-only): disabled on CPU")
        trainer_cfg.sync_batchnorm = False
