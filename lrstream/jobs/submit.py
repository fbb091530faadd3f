"""The submit job: run one lrstream command as a Ray job and exit with its driver's own exit code.

``lrstream submit --submission-id eval-cam1-H -- evaluate --root R --stream cam1 --hour H``
exits 5 on drift, 4 on nothing to do, 3 on bad data, where ``ray job submit``
exits 1 for them all. :func:`lrstream.distributed.submit.run_job` holds the
Ray side: submission ids that succeeded are not run again, failed ones only
with ``--retry``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..distributed.submit import dashboard_address, run_job
from ..errors import UsageError


@dataclass(frozen=True)
class SubmitJob:
    """How ``lrstream submit`` runs its command; the flags mirror these fields."""

    address: str | None = field(default=None, metadata={"help": "the Ray dashboard URL, http(s)://HEAD:8265 (default: $RAY_ADDRESS when it is one)"})
    submission_id: str | None = field(default=None, metadata={"help": "job id: one that succeeded is not run again, a pending or running one is followed, a failed one returns its old code (default: a new id)"})
    retry: bool = field(default=False, metadata={"help": "if --submission-id failed or was stopped, delete that job and run it again under the same id"})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs the driver holds (>= 1 keeps it off a head that advertises none)"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs the driver holds"})
    working_dir: str | None = field(default=None, metadata={"help": "directory (or remote zip URI) uploaded as the job's working dir; its lrstream/ then runs (default: the cluster's installed lrstream)"})
    no_wait: bool = field(default=False, metadata={"help": "return once submitted instead of following the job to its exit code"})

    def validate(self) -> SubmitJob:
        if self.retry and not self.submission_id:
            raise UsageError("--retry needs --submission-id (a new id always runs)")
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a number >= 0, got {value}")
        if self.working_dir and "://" not in self.working_dir and not os.path.isdir(self.working_dir):
            raise UsageError(f"--working-dir {self.working_dir} is not a directory")
        return self


def resolve_address(address: str | None) -> str:
    """The dashboard URL to submit to: ``address``, else $RAY_ADDRESS; a usage error when neither is an http(s) URL."""
    if address:
        url = dashboard_address(address)
        if url is None:
            raise UsageError(f"--address must be the Ray dashboard's URL, http(s)://HEAD:8265, got {address}")
        return url
    url = dashboard_address(None)
    if url is None:
        env = os.environ.get("RAY_ADDRESS")
        raise UsageError("no Ray dashboard to submit to: pass --address http://HEAD:8265 or set RAY_ADDRESS to it" + (f" ($RAY_ADDRESS is {env})" if env else ""))
    return url


def run_submit(argv: list[str], job: SubmitJob = SubmitJob(), log: Callable[[str], None] = lambda msg: None, write: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The ``submit`` command: ``argv`` (an lrstream command line, after ``--``) as a Ray job; see :func:`lrstream.distributed.submit.run_job`."""
    argv = list(argv[1:] if argv[:1] == ["--"] else argv)
    if not argv:
        raise UsageError("submit: give the lrstream command to run after --, e.g. lrstream submit -- evaluate --root ROOT --stream S")
    job.validate()
    address = resolve_address(job.address)
    return run_job(
        address, argv, submission_id=job.submission_id, retry=job.retry, num_cpus=job.num_cpus, num_gpus=job.num_gpus,
        working_dir=job.working_dir, wait=not job.no_wait, log=log, write=write,
    )  # fmt: skip
