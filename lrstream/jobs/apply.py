"""The apply job: store every frame's rank-k factors for the chosen hours with the current (or a given) sketch.

Hours: one (``hour``), the last N, a [start, end] range, or every published
hour that has no factors yet (``pending``); by default the newest hour. The
work is :func:`lrstream.distributed.apply.apply_hours`; this module picks
the version and the hours and reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..data.factors import factor_versions
from ..data.reader import select_hours
from ..data.shards import list_hours
from ..data.store import Store, check_hour
from ..data.versions import latest_version
from ..distributed.apply import ApplyOptions, apply_hours
from ..distributed.fleet import StreamWork
from ..errors import NothingToDoError, UsageError
from .fleet import FleetOptions, run_fleet, sized, task_resources


@dataclass(frozen=True)
class ApplyJob:
    """Which hours ``lrstream apply`` covers and where it runs; the flags mirror these fields."""

    hour: str | None = field(default=None, metadata={"help": "apply to this hour (default: the newest ingested hour)"})
    last: int | None = field(default=None, metadata={"help": "apply to the last N ingested hours"})
    start: str | None = field(default=None, metadata={"help": "first hour of a range (inclusive)"})
    end: str | None = field(default=None, metadata={"help": "last hour of a range (inclusive)"})
    pending: bool = field(default=False, metadata={"help": "apply to every ingested hour that has no stored factors yet"})
    version: int | None = field(default=None, metadata={"help": "sketch version (default: LATEST)"})
    workers: int = field(default=1, metadata={"help": "factor workers (Ray actors) sharing each hour"})
    address: str | None = field(default=None, metadata={"help": "Ray cluster address (default: $RAY_ADDRESS, else a local Ray)"})
    use_ray: bool = True


def choose_hours(store: Store, stream: str, job: ApplyJob) -> list[str]:
    """The hours ``job`` names; NothingToDoError when there are none (every hour applied, with ``pending``)."""
    chosen = [bool(job.hour), job.last is not None, bool(job.start or job.end), job.pending]
    if sum(chosen) > 1:
        raise UsageError("give one of --hour, --last, --start/--end or --pending")
    if job.last is not None and job.last < 1:
        raise UsageError("--last must be >= 1")
    for label in (job.hour, job.start, job.end):
        if label is not None:
            check_hour(label)
    if job.hour:
        return select_hours(store, stream, hours=[job.hour])
    if job.pending:
        hours = [h for h in list_hours(store, stream) if not factor_versions(store, stream, h)]
        if not hours:
            raise NothingToDoError(f"every ingested hour of stream {stream} has stored factors")
        return hours
    if job.last is None and not (job.start or job.end):
        return select_hours(store, stream, last=1)
    return select_hours(store, stream, last=job.last, start=job.start, end=job.end)


def run_apply(store: Store | str, stream: str, job: ApplyJob = ApplyJob(), options: ApplyOptions = ApplyOptions(), log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """The ``apply`` command; returns {"version", "results": one dict per hour} (status applied/replaced/exists/concurrent)."""
    store = Store.of(store)
    options.validate()
    version = job.version if job.version is not None else latest_version(store, stream)
    if version is None:
        raise NothingToDoError(f"stream {stream} has no sketch yet under {store.root} (run `lrstream train` first)")
    hours = choose_hours(store, stream, job)
    log(f"applying sketch version {version} of stream {stream} to {len(hours)} hour(s): {', '.join(hours)}")
    results = apply_hours(store, stream, hours, int(version), options, workers=job.workers, address=job.address, use_ray=job.use_ray, log=log)
    for r in results:
        if r["status"] == "exists":
            log(f"hour {r['hour']}: factors of version {version} already stored, nothing to do")
    return {"stream": stream, "version": int(version), "results": results}


def apply_work(root: str, stream: str, job: ApplyJob, options: ApplyOptions, fleet: FleetOptions) -> StreamWork:
    """One stream of a fleet apply: small hours in its task (in process, one CPU or GPU), large ones on ``job.workers`` factor actors."""
    store = Store.of(root)
    placement = fleet.place(nbytes := sized(lambda: choose_hours(store, stream, job), store, stream))
    info = {"frames_bytes": nbytes}
    if placement == "single":
        return StreamWork(stream, run_apply, (root, stream, replace(job, use_ray=False), options), *task_resources(options.device), placement, info)
    return StreamWork(stream, run_apply, (root, stream, job, options), 0.0, 0.0, placement, info)


def describe_apply(r: dict[str, Any]) -> str:
    hours = ", ".join(f"{h['hour']} {h['status']}" for h in r["results"])
    return f"version {r['version']}: {hours}"


def run_apply_fleet(works: list[StreamWork], fleet: FleetOptions, *, address: str | None = None, use_ray: bool = True, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Apply the current sketch of every stream of ``works`` (see :func:`lrstream.jobs.fleet.run_fleet`)."""
    return run_fleet("apply", works, fleet, describe_apply, address=address, use_ray=use_ray, log=log)
