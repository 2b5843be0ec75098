"""One GPU per model job on a multi-GPU machine, without a scheduler.

Snakemake caps how many jobs hold a `gpu` resource at once (`--resources gpu=N`) but does not
say *which* GPU a local job gets (snakemake#281), so every job would use cuda:0. `claim` gives a
job its own GPUs: it takes an exclusive lock (flock) on one lock file per GPU, in a folder all jobs
of the machine share, and sets CUDA_VISIBLE_DEVICES to the GPUs it holds before CUDA starts. The
locks are released when the job's process ends, however it ends. Where a scheduler already chose
(CUDA_VISIBLE_DEVICES set, as SLURM does), nothing is changed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_held: list = []  # open lock files: kept for the life of the process


def count() -> int:
    """NVIDIA GPUs of this machine, read without starting CUDA (so CUDA_VISIBLE_DEVICES can still be set)."""
    root = Path("/proc/driver/nvidia/gpus")
    return len(list(root.iterdir())) if root.is_dir() else 0


def claim(n: int = 1, total: int | None = None, lock_dir=None, wait_s: float = 3600.0, poll_s: float = 2.0) -> list[int] | None:
    """Hold `n` of the machine's `total` GPUs for this process and make them its only visible ones.

    Returns the GPU indices held, or None when nothing was done (no GPU requested or present, or
    CUDA_VISIBLE_DEVICES already set). Waits while every GPU is held by another job.
    """
    if n <= 0 or os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    total = count() if total is None else total
    if total == 0:
        return None
    if n > total:
        raise RuntimeError(f"the job asks for {n} GPUs, this machine has {total}")
    lock_dir = Path(lock_dir or os.environ.get("HARMREF_GPU_LOCKS") or Path(tempfile.gettempdir()) / "harmref-gpu-locks")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        got = []
        for i in range(total):
            f = open(lock_dir / f"gpu{i}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            got.append((i, f))
            if len(got) == n:
                break
        if len(got) == n:
            _held.extend(f for _, f in got)
            ids = [i for i, _ in got]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
            log.info("GPUs %s of %d held for this job (CUDA_VISIBLE_DEVICES)", ids, total)
            return ids
        for _, f in got:
            f.close()  # closing releases the lock
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {n} free GPUs of {total} after {wait_s:.0f} s (locks in {lock_dir})")
        time.sleep(poll_s)


def release() -> None:
    while _held:
        _held.pop().close()
