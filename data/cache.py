"""Where generated data lives: `$CERBERUS_CACHE`, else `$XDG_CACHE_HOME/cerberus`, else `~/.cache/cerberus`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    if os.environ.get("CERBERUS_CACHE"):
        return Path(os.environ["CERBERUS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cerberus"


def keyed_dir(kind: str, params: dict[str, Any]) -> Path:
    """A cache folder named by `kind` and a hash of `params`, so changed settings never reuse stale files."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir() / "synthetic" / f"{kind}-{digest}"
