"""A test-only callback: the training process kills itself with SIGKILL (no cleanup, no handlers, as the OOM killer
or a preempting scheduler would) after a given optimizer step."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
