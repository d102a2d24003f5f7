"""Which items of a split a check samples: evenly spread, because a split is often ordered by time or by class."""

from __future__ import annotations

import numpy as np


def spread(n: int, k: int) -> np.ndarray:
    """Up to `k` of the positions 0..n-1, evenly spread, in order (int array; empty when n or k is 0)."""
    return np.linspace(0, n - 1, min(k, n)).round().astype(int) if n and k > 0 else np.zeros(0, int)
