"""The train job: learn a sketch from a stream's stored hours with W workers and publish it as a new version; or do that for many streams."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..data.reader import select_hours
from ..data.sources import read_array_file
from ..data.store import Store
from ..distributed.config import RetrainConfig
from ..distributed.fleet import StreamWork
from ..distributed.retrain import retrain
from ..errors import UsageError
from .fleet import FleetOptions, run_fleet, sized

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str, gpus_per_worker: float | None, use_ray: bool) -> tuple[str, float | None]:
    """(the workers' torch device, GPUs per worker) for ``device`` in auto / cpu / cuda.

    auto means CUDA when GPUs are asked for per worker, or, without Ray, when
    this machine has one; otherwise the CPU. On Ray the GPUs are always an
    explicit request (``--gpus-per-worker`` or ``--device cuda``): the GPU
    nodes of an autoscaling cluster may not exist until something asks.
    """
    if device not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        import torch

        return ("cuda" if gpus_per_worker or (not use_ray and torch.cuda.is_available()) else "cpu"), gpus_per_worker
    if device == "cpu" and gpus_per_worker is None:
        return device, 0.0  # keeps retrain from moving the workers onto the cluster's GPUs
    return device, gpus_per_worker


def run_train(
    store: Store | str,
    stream: str,
    cfg: RetrainConfig,
    *,
    device: str = "auto",
    hours: Sequence[str] | None = None,
    last: int | None = None,
    start: str | None = None,
    end: str | None = None,
    weight: str | None = None,
    address: str | None = None,
    use_ray: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Retrain ``stream`` with ``cfg`` (its ``learn.device`` is replaced by the resolved ``device``); returns the summary.

    ``weight`` is the URL of a .npy weight matrix W (n, d) for the wfro loss,
    read without pickle.
    """
    if weight is not None and cfg.learn.loss != "wfro":
        raise UsageError(f"a weight matrix is for the wfro loss, not {cfg.learn.loss!r}")
    dev, gpus = resolve_device(device, cfg.gpus_per_worker, use_ray)
    cfg = replace(cfg, learn=replace(cfg.learn, device=dev), gpus_per_worker=gpus)
    W = None if weight is None else read_array_file(weight)
    result = retrain(Store.of(store), stream, cfg, hours=hours, last=last, start=start, end=end, address=address, use_ray=use_ray, log=log, weight=W)
    out = result.summary()
    ratio = "-" if out["val_ratio"] is None else f"{out['val_ratio']:.1f}x"
    gap = "n/a (no validation data)" if out["val_gap"] is None else f"{out['val_gap']:.5g} (sparse random {out['val_gap_sparse_random']:.5g}, {ratio})"
    log(f"stream {stream}: version {out['version']} ({out['kind']}, k={out['k']}, m={out['m']}) at {out['url']}")
    log(f"validation gap {gap}; {out['steps']} steps in {out['seconds']:.1f} s, {out['frames_per_second']:.1f} frames/s, {cfg.workers} workers")
    return out


def _train_stream(root: str, stream: str, cfg: RetrainConfig, selection: dict[str, Any], use_ray: bool, log: Callable[[str], None]) -> dict[str, Any]:
    return run_train(root, stream, cfg, use_ray=use_ray, log=log, **selection)


def train_work(root: str, stream: str, cfg: RetrainConfig, selection: dict[str, Any], fleet: FleetOptions) -> StreamWork:
    """One stream of a fleet retrain; ``selection`` holds run_train's device, hours, last, start, end and weight.

    A small stream trains in its task with one in-process worker (and asks
    for that worker's CPUs or GPUs); a large one drives a parameter server
    and ``cfg.workers`` worker actors from a task that asks for nothing.
    """
    store = Store.of(root)
    nbytes = sized(lambda: select_hours(store, stream, hours=selection.get("hours"), last=selection.get("last"), start=selection.get("start"), end=selection.get("end")), store, stream)
    placement = fleet.place(nbytes)
    info = {"frames_bytes": nbytes}
    if placement == "single":
        one = replace(cfg, workers=1)
        return StreamWork(stream, _train_stream, (root, stream, one, selection, False), cfg.cpus_per_worker, cfg.gpus_per_worker or 0.0, placement, info)
    return StreamWork(stream, _train_stream, (root, stream, cfg, selection, True), 0.0, 0.0, placement, info)


def describe_train(r: dict[str, Any]) -> str:
    gap = "no validation" if r.get("val_gap") is None else f"validation gap {r['val_gap']:.5g} (sparse random {r['val_gap_sparse_random']:.5g})"
    return f"version {r['version']} ({r['kind']}, k={r['k']}, m={r['m']}), {gap}, {r['steps']} steps in {r['seconds']:.1f} s"


def run_train_fleet(works: Sequence[StreamWork], fleet: FleetOptions, *, address: str | None = None, use_ray: bool = True, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Retrain every stream of ``works`` (see :func:`lrstream.jobs.fleet.run_fleet`)."""
    return run_fleet("train", works, fleet, describe_train, address=address, use_ray=use_ray, log=log)
