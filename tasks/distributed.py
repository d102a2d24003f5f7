"""Hydra x Lightning DDP: one run directory per job however many ranks, and a sweep that launches each job once.

Lightning's DDP launcher (`lightning/fabric/strategies/launchers/subprocess_script.py`, `_hydra_subprocess_cmd`)
starts ranks 1..N-1 by running `sys.argv` again with `hydra.run.dir=<hydra.run.dir> hydra.output_subdir=null`.
For a single run that is the run's own directory. Under `-m` it would start the whole sweep again in each rank
(lightning-hydra-template #393), in `hydra.run.dir` rather than the job's sweep subdirectory. `pin_job_for_ranks`
rewrites both for the job at hand, so the ranks re-run exactly this job, in its directory. Under torchrun or SLURM
(one process per rank started from outside) Lightning launches nothing and this changes nothing that is read.

Between the jobs of a sweep (one process runs them one after another) `one_job` leaves nothing behind: the launcher
exports `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_PORT`, ... into the process, which would make the next job's Trainer
believe its ranks were started from outside (and start none), and the finished job's process group still points at
ranks that have exited.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

log = logging.getLogger(__name__)


def pin_job_for_ranks() -> None:
    """In a multirun job: `sys.argv` becomes this job's own overrides (the swept values it got, no `-m`) and
    `hydra.run.dir` its output directory, which is what Lightning's launcher hands the other ranks."""
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    sys.argv = [sys.argv[0], *hc.overrides.task]
    with read_write(hc), open_dict(hc):
        hc.run.dir = hc.runtime.output_dir
    log.debug("DDP ranks of this sweep job run: %s in %s", " ".join(sys.argv[1:]), hc.run.dir)


@contextmanager
def one_job() -> Iterator[None]:
    """Run one job (a single run or one job of a sweep) so its DDP ranks run it and nothing of it outlives it: the
    environment as before, no process group left."""
    import torch.distributed as dist

    environment = dict(os.environ)
    pin_job_for_ranks()
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)
