"""Hydra callback of every sweep (``-m``): failed jobs listed in ``<sweep dir>/failed_jobs.txt``.

Hydra goes on after a failed job and, once all have run, re-raises only the first failure (and
Optuna only logs a warning per failed trial). With 20 trials or 3 seeds x 2 models, a
researcher needs the whole list (job number, overrides, the one-paragraph error) in one place
without reading every job's log; it is written as each job ends, so it survives a killed sweep.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from visionbench.cli import user_message
from visionbench.errors import VisionbenchError

log = logging.getLogger(__name__)
FAILED_JOBS = "failed_jobs.txt"
FAILED_JOB_LINE = re.compile(r"job (?P<num>\S+) \[(?P<overrides>.*?)\]: (?P<error>\w+): ")  # what on_job_end writes


class FailedJobs(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """The sweep's last words, even after Hydra re-raised the first failure with its traceback."""
        atexit.register(summarize_failures, Path(config.hydra.sweep.dir) / FAILED_JOBS)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return
        error = job_return._return_value  # the exception; ``return_value`` would re-raise it
        message = user_message(error) if isinstance(error, VisionbenchError) else str(error)
        line = f"job {config.hydra.job.num} [{' '.join(job_return.overrides or [])}]: {type(error).__name__}: {message}"  # FAILED_JOB_LINE
        path = Path(config.hydra.sweep.dir) / FAILED_JOBS
        with path.open("a") as listing:
            listing.write(" ".join(line.split()) + "\n")
        log.error("Job %s failed; the sweep goes on. Failed jobs so far are listed in %s", config.hydra.job.num, path)


def summarize_failures(path: Path) -> None:
    """Count the failed jobs from the listing itself, which every launcher's jobs append to."""
    if path.is_file() and (failed := len(path.read_text().splitlines())):
        print(f"\n{failed} job(s) of this sweep failed; each failure is listed in {path}", file=sys.stderr)
