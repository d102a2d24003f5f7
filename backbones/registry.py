"""The one registry: names -> builders, for backbones and for necks.

Adding a backbone is one `@register_backbone("name")` on its builder; the Hydra config group
`backbone` is generated from this table (see `backbones/hydra_configs.py`), so nothing else is edited.
The built-in entries (backbones/catalog.py) name their builders as `"module:function"` and declare their
config options, so listing names and composing configs (`--help`, config errors) imports no torch,
torchvision or timm; a builder's module is imported the first time it builds.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One registered builder.

    `target` is the builder itself or `"module:function"` (imported on first use); `bound` are keyword arguments
    it is always called with (e.g. torchvision's model name); `options` are the builder-specific config keys with
    their defaults, or None to read them from the builder's signature (which imports its module)."""

    name: str
    target: Callable[..., Any] | str
    source: str
    bound: dict[str, Any] = field(default_factory=dict)
    declared_options: dict[str, Any] | None = None

    @functools.cached_property
    def builder(self) -> Callable[..., Any]:
        fn = self.target
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        return functools.partial(fn, **self.bound) if self.bound else fn

    def options(self, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Builder-specific config keys -> defaults (`"???"`: required), without the ones in `skip`."""
        if self.declared_options is not None:
            return {k: v for k, v in self.declared_options.items() if k not in skip}
        return keyword_defaults(self.builder, skip=(*skip, *self.bound))


def keyword_defaults(fn: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """`{parameter: default}` of `fn`'s named parameters (`"???"`, Hydra's mandatory value, where there is none)."""
    out: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = param.default
        if default is param.empty:
            out[name] = "???"
        else:
            out[name] = list(default) if isinstance(default, tuple) else default
    return out


class Registry:
    """A named table of builders whose unknown-name error lists what is known."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: Callable[..., Any] | str, source: str = "cerberus",
            options: dict[str, Any] | None = None, **bound: Any) -> None:
        """Register `target` (a builder or `"module:function"`) under `name`; see `Entry`."""
        if name in self._entries:
            raise KeyError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, target, source, bound, options)

    def register(self, name: str, source: str = "cerberus") -> Callable[[Callable], Callable]:
        def decorator(builder: Callable) -> Callable:
            self.add(name, builder, source)
            return builder

        return decorator

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name).builder(**kwargs)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
register_backbone = BACKBONES.register
register_neck = NECKS.register

from .catalog import register_builtins  # noqa: E402  (the catalog fills the tables defined above)

register_builtins(BACKBONES, NECKS)
