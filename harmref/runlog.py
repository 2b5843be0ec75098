"""Logging and progress for workflow scripts: everything goes to the rule's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def start(snakemake) -> logging.Logger:
    """Route logging and stderr to `snakemake.log[0]` (line-buffered); return the script's logger."""
    path = Path(snakemake.log[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "w", buffering=1, encoding="utf-8")
    sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO, stream=stream, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    n_gpus = int(getattr(getattr(snakemake, "resources", None), "gpu", 0) or 0)
    if n_gpus:  # a local multi-GPU run: this job's own GPUs (a scheduler's choice is kept)
        from . import gpus

        gpus.claim(n_gpus)
    apply_attempt_batch_size(snakemake)
    threads = int(getattr(snakemake, "threads", 0) or 0)
    if threads and "torch" in sys.modules:  # the rule's cores, whatever OMP_NUM_THREADS says
        sys.modules["torch"].set_num_threads(threads)
    logger = logging.getLogger(f"harmref.rule.{snakemake.rule}")
    logger.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    return logger


def apply_attempt_batch_size(snakemake) -> int | None:
    """A retried model job's batch: `resources: batch_size` (runtime.batch_size halved per attempt,
    rules/common.smk attempt_batch_size) replaces params.runtime["batch_size"], which the scripts read."""
    bs = getattr(getattr(snakemake, "resources", None), "batch_size", None)
    rt = getattr(getattr(snakemake, "params", None), "runtime", None)
    if not bs or not isinstance(rt, dict) or "batch_size" not in rt:
        return None
    if int(bs) != rt["batch_size"]:
        logging.getLogger("harmref.runlog").info(
            "a retried job: batch_size %d instead of runtime.batch_size %d (halved per attempt)", int(bs), rt["batch_size"])
        rt["batch_size"] = int(bs)
    return rt["batch_size"]


def progress(total: int, desc: str):
    """A tqdm bar written to stderr (the rule log); returns its `update` function."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, mininterval=5, ascii=True)
    return bar.update
