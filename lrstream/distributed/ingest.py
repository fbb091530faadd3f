"""Ingest: one Ray actor per stream turns hourly inputs into published Arrow shards.

The actor (:class:`Ingestor`) is a plain class: it decodes a source with
:mod:`lrstream.data.sources` and writes it with :mod:`lrstream.data.shards`.
Errors cross the actor boundary as data (:func:`~lrstream.distributed.runtime.failure`:
``{"ok": False, "stream", "hour", "exit_code", "error", "type"}``), never as
pickled exceptions, so the driver can report each stream in one line and
keep the others' results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.shards import WriteOptions, write_hour
from ..data.sources import iter_frames
from ..data.store import Store, check_hour, check_stream
from ..errors import UsageError
from .runtime import failure, init_ray, remote


@dataclass(frozen=True)
class IngestSpec:
    """One hour of one stream: where it comes from."""

    stream: str
    hour: str
    source: str

    def validate(self) -> IngestSpec:
        check_stream(self.stream)
        check_hour(self.hour)
        if not self.source:
            raise UsageError(f"stream {self.stream}: no source given")
        return self


class Ingestor:
    """Ingests the hours of one stream; one instance (one Ray actor) per stream."""

    def __init__(self, store: Store | str, stream: str, options: WriteOptions = WriteOptions()):
        self.store = Store.of(store)
        self.stream = check_stream(stream)
        self.options = options.validate()

    def ingest(self, hour: str, source: str) -> dict[str, Any]:
        """Ingest one hour; returns {"ok": True, **result} or a failure dict (exit_code, error, type)."""
        try:
            result = write_hour(self.store, self.stream, hour, iter_frames(source), source, self.options)
            return {"ok": True, **result.to_dict()}
        except Exception as exc:  # any failure, expected or not, comes back as data
            return failure(exc, stream=self.stream, hour=hour)


def ingest_many(
    store: Store | str,
    specs: Sequence[IngestSpec],
    options: WriteOptions = WriteOptions(),
    address: str | None = None,
    use_ray: bool = True,
    cpus_per_stream: float = 1.0,
) -> list[dict[str, Any]]:
    """Ingest several (stream, hour) inputs: one actor per stream, streams in parallel.

    Hours of one stream run in order on that stream's actor; results come
    back in the order of ``specs``. Each actor asks Ray for
    ``cpus_per_stream`` CPUs, so an autoscaling cluster adds nodes when there
    are more streams than free CPUs. With ``use_ray=False`` the same actors
    run in this process, one after another (tests, debugging).
    """
    store = Store.of(store)
    specs = [s.validate() for s in specs]
    options.validate()
    streams = list(dict.fromkeys(s.stream for s in specs))
    if not use_ray:
        local = {name: Ingestor(store, name, options) for name in streams}
        return [local[s.stream].ingest(s.hour, s.source) for s in specs]
    import ray

    init_ray(address)
    RemoteIngestor = remote(Ingestor, num_cpus=cpus_per_stream)
    actors = {name: RemoteIngestor.remote(store, name, options) for name in streams}
    refs = [actors[s.stream].ingest.remote(s.hour, s.source) for s in specs]
    # An actor holds its CPU for its lifetime: with more streams than CPUs the
    # later actors wait, so each actor is released as soon as its stream is done.
    pending_per_stream = {name: sum(s.stream == name for s in specs) for name in streams}
    spec_of = {ref: spec for ref, spec in zip(refs, specs)}
    results: dict = {}
    waiting = list(refs)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            ref = done[0]
            spec = spec_of[ref]
            try:
                results[ref] = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the actor itself died (OOM, node loss)
                results[ref] = {**failure(exc, stream=spec.stream, hour=spec.hour), "error": f"ingest actor failed: {exc.__class__.__name__}"}
            pending_per_stream[spec.stream] -= 1
            if pending_per_stream[spec.stream] == 0:
                ray.kill(actors.pop(spec.stream))
    finally:
        for actor in actors.values():
            ray.kill(actor)
    return [results[ref] for ref in refs]
