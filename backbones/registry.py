"""The one registry: names -> builders, for backbones and for necks.

Adding a backbone is one `@register_backbone("name")` on its builder; the Hydra config group
`backbone` is generated from this table (see `backbones/hydra_configs.py`), so nothing else is edited.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., nn.Module]
    source: str


class Registry:
    """A named table of builders whose unknown-name error lists what is known."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, source: str = "cerberus") -> Callable[[Callable], Callable]:
        def decorator(builder: Callable) -> Callable:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, builder, source)
            return builder

        return decorator

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def build(self, name: str, **kwargs: Any) -> nn.Module:
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
