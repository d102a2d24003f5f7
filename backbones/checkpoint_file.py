"""The one reader of checkpoint and weights files: `torch.load(weights_only=True)` or safetensors, nothing else.

Every path that reads a file from disk goes through `read_checkpoint`: `backbone.weights`, `init_from`,
`predict.py ckpt=`, `train.py train=false ckpt_path=` and resuming with `ckpt_path=`. A file that needs more than
tensors and plain containers to unpickle is refused, naming the Python objects it holds and how to convert a
trusted file (`python -m backbones.convert_checkpoint`); a damaged or foreign file is refused naming the path.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

CONVERTER = "python -m backbones.convert_checkpoint"
# how torch.save's legacy (non-zip) format begins: the pickled magic number 0x1950a86a20f9469cfc6c
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


class CheckpointError(UserError, ValueError):
    """A checkpoint / weights file is missing, unreadable or holds pickled Python objects; the message says why.
    `unsafe_globals`: the refused objects (`posix.system`, ...), empty for a missing or unreadable file."""

    def __init__(self, message: str, unsafe_globals: list[str] | None = None) -> None:
        super().__init__(message)
        self.unsafe_globals = unsafe_globals or []


def safe_copy_path(path: Path) -> Path:
    """Where the converter writes a weights_only-loadable copy by default: `last.ckpt` -> `last.safe.ckpt`."""
    return path.with_name(f"{path.stem}.safe{path.suffix or '.ckpt'}")


def unsafe_globals(path: Path, err: Exception | None = None) -> list[str]:
    """The pickled Python objects (`posix.system`, `omegaconf.dictconfig.DictConfig`) that `weights_only` refuses,
    found by disassembling the pickle without running it; from the error message when that is not possible."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) files: only the first offender, from torch's message
        found = []
    if not found and err is not None:
        found = re.findall(r"GLOBAL (\S+)", str(err))
    return sorted(set(found))


def _named(path: Path, what: str) -> str:
    # `ckpt_path=` -> "ckpt_path=/runs/x.ckpt"; `init_from checkpoint` -> "init_from checkpoint /runs/x.ckpt"
    return f"{what}{path}" if what.endswith("=") else f"{what} {path}"


def _refuse_pickled(path: Path, what: str, found: list[str]) -> CheckpointError:
    held = f" ({', '.join(found[:6])}{' ...' if len(found) > 6 else ''})" if found else ""
    return CheckpointError(
        f"{_named(path, what)} holds pickled Python objects{held}, not only tensors and plain containers. Cerberus "
        "reads every checkpoint with torch.load(weights_only=True), which refuses them because unpickling them can "
        "run any code. If you trust the file (you or a colleague wrote it), convert it once: "
        f"`{CONVERTER} {path} {safe_copy_path(path)} --trust` and use the new file.",
        found,
    )


def _detail(err: Exception) -> str:
    """The informative line of an error: torch's weights_only messages open with a paragraph of general advice."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    line = next((x for x in lines if x.startswith("Unsupported")), lines[0])
    return line[:160]


def _why_unreadable(path: Path, err: Exception) -> str:
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with path.open("rb") as f:
        head = f.read(64)
    first = _detail(err)
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself (run `git lfs pull` where it came from)"
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        return (f"the file is cut short ({size} bytes, the end of the zip archive torch.save writes is missing), "
                "as an interrupted save or copy leaves it")
    if head.startswith(b"PK"):
        return f"a damaged torch.save archive ({first})"
    if head.startswith(b"\x80") and not head.startswith(LEGACY_MAGIC):
        return f"a plain pickle, not a torch.save file ({first})"
    if not head.startswith(b"\x80"):  # neither a zip archive nor a pickle
        return f"it is not a torch.save file (it begins {head[:16]!r})"
    return f"{type(err).__name__}: {first}"


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> Any:
    """`path` read on the CPU with `torch.load(weights_only=True)` (`.safetensors`: with safetensors) -> what it
    holds, usually a dict (a state dict, or Lightning's `{"state_dict": ..., "hyper_parameters": ...}`).

    `what` names the option in messages: `ckpt_path=` -> "ckpt_path=/x.ckpt", `checkpoint` -> "checkpoint /x.ckpt".
    Raises CheckpointError, never runs pickled code: for a missing file, one holding pickled Python objects (naming
    them and the converter for trusted files), and a truncated, empty or foreign file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        kind = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise CheckpointError(f"{_named(path, what)} {kind}")
    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError for bad headers
            raise CheckpointError(f"{_named(path, what)} is not a readable .safetensors file: {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = unsafe_globals(path, err)
        if found:  # objects weights_only refuses, not a damaged or foreign pickle
            raise _refuse_pickled(path, what, found) from None
        raise _unreadable(path, what, err) from err
    except Exception as err:  # truncated zip (RuntimeError), text (KeyError), empty (EOFError) ...
        raise _unreadable(path, what, err) from err


def _unreadable(path: Path, what: str, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{_named(path, what)} is not a readable PyTorch checkpoint: {_why_unreadable(path, err)}. Pass a file written "
        "by torch.save or Lightning (.ckpt / .pth / .pt) or a .safetensors file"
    )
