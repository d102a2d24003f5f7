"""Convert a TRUSTED checkpoint or weights file that holds pickled Python objects into one that
`torch.load(weights_only=True)` reads, so Cerberus can use it.

    python -m backbones.convert_checkpoint IN [OUT] --trust     # OUT defaults to IN's name + .safe (last.safe.ckpt)

IN is loaded with `torch.load(weights_only=False)`, which runs whatever code is pickled in it: that is why `--trust`
is required. What it holds is rewritten as plain containers: a pickled `nn.Module` becomes its state dict, OmegaConf
configs and dataclasses become dicts, paths strings, NumPy arrays tensors; anything else is dropped and listed.
The new file is read back with the weights_only reader before the command reports success.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint_file import CheckpointError, read_checkpoint, safe_copy_path

PLAIN = (str, bytes, int, float, complex, bool, type(None), torch.Size, torch.dtype, torch.device)
DROP = object()  # what `plain` returns for a value it cannot convert


def plain(obj: Any, where: str, dropped: list[str]) -> Any:
    """`obj` as tensors and plain containers that weights_only accepts; what cannot be converted is left out and
    named in `dropped` (`where` is its key path, e.g. `hyper_parameters.config`)."""
    if isinstance(obj, torch.Tensor):
        return obj if type(obj) is torch.Tensor else obj.detach().as_subclass(torch.Tensor)  # nn.Parameter ...
    if isinstance(obj, PLAIN):
        return obj
    if isinstance(obj, nn.Module):
        return plain(obj.state_dict(), where, dropped)
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return plain(OmegaConf.to_container(obj, resolve=True), where, dropped)
    if type(obj).__module__ == "numpy":
        import numpy as np

        return torch.from_numpy(np.asarray(obj)) if isinstance(obj, np.ndarray) else plain(obj.item(), where, dropped)
    if isinstance(obj, enum.Enum):
        return plain(obj.value, where, dropped)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    elif isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            name = f"{where}.{key}" if where else str(key)
            if not isinstance(key, PLAIN):
                dropped.append(f"{name} (key of type {type(key).__qualname__})")
                continue
            converted = plain(value, name, dropped)
            if converted is not DROP:
                out[key] = converted
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [plain(v, f"{where}[{i}]", dropped) for i, v in enumerate(obj)]
        items = [v for v in items if v is not DROP]
        return tuple(items) if isinstance(obj, tuple) else items
    dropped.append(f"{where or '(the whole file)'} ({type(obj).__module__}.{type(obj).__qualname__})")
    return DROP


def convert(src: str | Path, dst: str | Path) -> list[str]:
    """Load `src` in full (runs its pickled code: trusted files only), write its plain form to `dst`, check that
    `dst` reads with weights_only; returns what was dropped."""
    obj = torch.load(Path(src).expanduser(), map_location="cpu", weights_only=False)
    dropped: list[str] = []
    out = plain(obj, "", dropped)
    if out is DROP:
        raise CheckpointError(f"{src} holds a {type(obj).__qualname__}, which has no plain form to convert")
    dst = Path(dst).expanduser()
    torch.save(out, dst)
    read_checkpoint(dst, "converted file")
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backbones.convert_checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="the trusted .ckpt / .pth file")
    parser.add_argument("dst", type=Path, nargs="?", help="where to write the converted file (default: SRC.safe)")
    parser.add_argument("--trust", action="store_true",
                        help="load SRC with weights_only=False, running any code pickled in it")
    args = parser.parse_args(argv)
    dst = args.dst or safe_copy_path(args.src)
    try:
        read_checkpoint(args.src)
        print(f"{args.src} already loads with weights_only=True; nothing to convert")
        return 0
    except CheckpointError as err:
        if not err.unsafe_globals:  # missing or unreadable: converting would not help
            print(err, file=sys.stderr)
            return 2
        found = err.unsafe_globals
    if not args.trust:
        print(f"{args.src} holds pickled Python objects ({', '.join(found)}); loading it runs whatever code they "
              "carry. Convert it only if you trust where it came from, by adding --trust.", file=sys.stderr)
        return 2
    dropped = convert(args.src, dst)
    print(f"wrote {dst}; it loads with weights_only=True")
    if dropped:
        print(f"left out (no plain form): {', '.join(dropped)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
