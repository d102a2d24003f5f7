"""Quiet by default: the lines every run repeats and nobody acts on (Lightning's hardware inventory and
advertisements, notices about Cerberus' own choices) are dropped from the console and `train.log`;
`verbose=true` keeps them all."""

from __future__ import annotations

import logging
import re

# messages of Lightning's rank-zero logger that say nothing a Cerberus user can act on
NOISE = re.compile(
    r"^(GPU available: |TPU available: |HPU available: |💡 Tip: |.*litlogger"
    r"|Trainer already configured with model summary callbacks"
    r"|Loading `train_dataloader` to estimate number of stepping batches)"
)
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.fabric.utilities.seed")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE.match(record.getMessage())


def quiet_libraries(verbose: bool = False) -> None:
    """Filter the repeated library noise (idempotent). `verbose`: filter nothing."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for f in [f for f in logger.filters if isinstance(f, _DropNoise)]:
            logger.removeFilter(f)
        if not verbose:
            logger.addFilter(_DropNoise())
