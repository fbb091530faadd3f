"""Many streams in one job: each stream's work is one Ray task, a bounded number in flight, failures as data.

A fleet job (``train``, ``apply`` or ``evaluate`` over ``--streams`` or
``--plan``) hands :func:`run_streams` one :class:`StreamWork` per stream: a
module-level function (Ray ships it by reference), its arguments and the
resources its task asks for. A stream that computes in its task asks for its
CPUs (or GPU); a stream that drives its own parameter server and workers asks
for none, since its actors hold the resources. At most ``max_concurrent``
tasks are in flight, so a plan of 1,000 streams never means 1,000 tasks (or
their actors) asking the autoscaler at once.

A stream's failure, typed or not, comes back as data with its exit code
(:func:`~lrstream.distributed.runtime.failure`); the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CommandFailed, UsageError
from .runtime import failure, init_ray


@dataclass(frozen=True)
class StreamWork:
    """One stream's share of a fleet job: ``fn(*args, log=...)`` returns its result dict."""

    stream: str
    fn: Callable[..., dict[str, Any]]
    args: tuple = ()
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    placement: str = "single"  # what the job chose; reported with the result
    info: dict[str, Any] = field(default_factory=dict)


def run_work(work: StreamWork) -> dict[str, Any]:
    """Run one stream's work here; its log lines travel back with the result (a task's stderr is not the driver's)."""
    lines: list[str] = []
    head = {"stream": work.stream, "placement": work.placement, **work.info, "started_at": time.time()}
    try:
        out = work.fn(*work.args, log=lines.append)
        done = {"ok": True, "exit_code": 0, **out}
    except CommandFailed as exc:  # drift and partial failures still carry their result
        done = {**failure(exc), "result": exc.result}
    except Exception as exc:
        done = failure(exc)
    return {**head, **done, "finished_at": time.time(), "log": lines}


def run_streams(
    works: Sequence[StreamWork],
    max_concurrent: int = 4,
    address: str | None = None,
    use_ray: bool = True,
    on_result: Callable[[dict[str, Any]], None] = lambda result: None,
) -> list[dict[str, Any]]:
    """Every stream's result, in the order of ``works``; ``on_result`` sees each as it finishes.

    With ``use_ray`` each work is a Ray task with its resources, at most
    ``max_concurrent`` in flight; a task whose process dies (OOM, node loss)
    is retried once, then reported as an internal failure of its stream.
    Without Ray the works run here, one after the other.
    """
    if max_concurrent < 1:
        raise UsageError(f"max_concurrent must be >= 1, got {max_concurrent}")
    results: list[dict[str, Any] | None] = [None] * len(works)
    if not use_ray:
        for i, work in enumerate(works):
            results[i] = run_work(work)
            on_result(results[i])
        return results  # type: ignore[return-value]
    import ray

    init_ray(address)
    task = ray.remote(run_work)
    pending = list(enumerate(works))[::-1]  # popped from the end: submission in the given order
    in_flight: dict[Any, int] = {}
    while pending or in_flight:
        while pending and len(in_flight) < max_concurrent:
            i, work = pending.pop()
            ref = task.options(num_cpus=work.num_cpus, num_gpus=work.num_gpus, max_retries=1).remote(work)
            in_flight[ref] = i
        done, _ = ray.wait(list(in_flight), num_returns=1)
        i = in_flight.pop(done[0])
        try:
            results[i] = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            work = works[i]
            results[i] = {"stream": work.stream, "placement": work.placement, **work.info, **failure(exc), "error": f"the stream's task failed: {exc.__class__.__name__}", "log": []}
        on_result(results[i])
    return results  # type: ignore[return-value]
