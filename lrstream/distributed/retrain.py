"""The retrain job: learn a stream's sketch from its stored hours on W Ray workers and publish a version.

It runs the training core's :class:`~lrstream.training.loop.TrainLoop` with
the roles of :mod:`lrstream.distributed.roles` as Ray actors (or in this
process with ``use_ray=False``), so it trains every sketch
``lrstream.learn`` trains (kinds, starts, greedy positions, refit, the wfro
loss) and ``learn(..., workers=W)`` on the same rows is the same
computation (up to summation order; tested). The published version's
metadata records the data plan and the validation gap next to the sparse
random baseline's.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..data.store import Store
from ..data.versions import publish_version, version_url
from ..numerics.checks import check_rank
from ..numerics.losses import check_loss
from ..numerics.sketch import Sketch
from ..numerics.update import UpdateStats, window_stats
from ..training.config import LearnConfig
from ..training.core import local_batch_sizes
from ..training.loop import InProcess, LoopOptions, LoopStats, TrainLoop, train_and_refit
from ..training.sketches import finish_sketch, fit_config
from .config import RetrainConfig
from .plan import DataPlan, plan_data
from .roles import GradientWorker, ParameterServer
from .runtime import OnRay, init_ray


@dataclass(frozen=True)
class RetrainResult:
    version: int
    url: str
    sketch: Sketch
    val_gap: float | None
    val_gap_sparse_random: float | None
    plan: DataPlan
    stats: LoopStats
    run_id: str

    def summary(self) -> dict[str, Any]:
        info = self.sketch.meta.get("training", {})
        ratio = None if not self.val_gap or self.val_gap_sparse_random is None else self.val_gap_sparse_random / self.val_gap
        return {
            "stream": self.plan.stream,
            "version": self.version,
            "url": self.url,
            "kind": self.sketch.meta.get("kind"),
            "k": self.sketch.meta.get("k"),
            "m": self.sketch.m,
            "n": self.plan.n,
            "d": self.plan.d,
            **self.plan.describe(),
            "val_gap": self.val_gap,
            "val_gap_sparse_random": self.val_gap_sparse_random,
            "val_ratio": ratio,
            "steps": info.get("steps"),
            "best_step": info.get("best_step"),
            "seconds": self.stats.seconds,
            "steps_per_second": self.stats.steps / self.stats.seconds if self.stats.seconds else None,
            "frames_per_second": self.stats.frames / self.stats.seconds if self.stats.seconds else None,
            "ps_share": self.stats.ps_seconds / self.stats.seconds if self.stats.seconds else None,
            "worker_restarts": self.stats.worker_restarts,
            "ps_restarts": self.stats.ps_restarts,
            "dropped_gradients": self.stats.dropped,
            "run_id": self.run_id,
        }


def build_loop(store: Store | str, stream: str, cfg: RetrainConfig, plan: DataPlan, *, fit: LearnConfig | None = None, use_ray: bool = True, run_id: str | None = None, weight=None, validate: bool = True, log=None) -> tuple[TrainLoop, str]:
    """A loop over the parameter server and the workers for ``plan`` (Ray actors, or in-process objects).

    ``validate=False`` (a refit) trains without validating; the workers still hold the validation rows, for scoring.
    """
    store = Store.of(store)
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    folder = store.run_dir(stream, run_id)
    fit = fit or fit_config(cfg.learn)
    sizes = local_batch_sizes(fit.batch_size, cfg.workers) if cfg.mode == "sync" else [max(1, fit.batch_size // cfg.workers)] * cfg.workers
    exe = OnRay() if use_ray else InProcess()
    worker_opts: dict[str, Any] = {"num_cpus": cfg.cpus_per_worker}
    if cfg.gpus_per_worker:
        worker_opts["num_gpus"] = cfg.gpus_per_worker
    # The server restarts in place (same arguments, so it finds its checkpoints); workers are replaced by the loop.
    ps_opts = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0}
    positions = plan.train_positions()

    def make_server(params: np.ndarray):
        return exe.create(ParameterServer, (fit, params, store, folder, cfg.checkpoint_every, cfg.staleness), **ps_opts)

    def make_worker(rank: int):
        return exe.create(GradientWorker, (store, stream, rank, plan.train[rank], plan.val[rank], positions[rank], fit, sizes[rank], cfg.gray, weight, use_ray), **worker_opts)

    placement = f"{cfg.cpus_per_worker:g} CPU" + (f" and {cfg.gpus_per_worker:g} GPU" if cfg.gpus_per_worker else "")
    options = LoopOptions(cfg.workers, cfg.mode, cfg.startup_timeout, cfg.max_worker_failures, placement, validate)
    return TrainLoop(exe, fit, plan.n, options, make_worker, make_server, log), run_id


def start_stats(loop: TrainLoop, sketch: Sketch, plan: DataPlan) -> UpdateStats | None:
    """The sufficient statistics of a dense sketch's start over the rows ``plan`` trains on (None for other kinds and starts).

    Each worker returns its share's part of the start's Gram; the half-life,
    a fraction of the training window, becomes hours over the hours trained on.
    """
    hours = list(dict.fromkeys(s.hour for share in plan.train for s in share))
    if not hours:
        return None
    return window_stats(loop.gather, sketch.meta, plan.train_frames, len(hours), max(hours))


def retrain(
    store: Store | str,
    stream: str,
    cfg: RetrainConfig,
    *,
    hours: Sequence[str] | None = None,
    last: int | None = None,
    start: str | None = None,
    end: str | None = None,
    address: str | None = None,
    use_ray: bool = True,
    publish: bool = True,
    weight=None,
    log: Callable[[str], None] | None = None,
) -> RetrainResult:
    """Learn a sketch for ``stream`` from its stored hours with W workers and publish it as a new version.

    Args:
        weight: (n, d) nonnegative weights of the ``wfro`` loss.

    Returns the new version with its validation gap (mean SCW error minus
    mean optimal error over the held-out rows, each scaled to sigma_1 = 1)
    next to the sparse random baseline's. With ``refit`` the published
    sketch has also trained on those rows, so its gap there is in-sample.
    """
    store = Store.of(store)
    cfg.validate()
    log = log or (lambda msg: None)
    if use_ray:
        init_ray(address, num_cpus=max(os.cpu_count() or 1, math.ceil(cfg.workers * cfg.cpus_per_worker)))
        if cfg.gpus_per_worker is None:
            # An explicit request, never a guess from ray.cluster_resources(): that counts live nodes only,
            # so a GPU node type at min_workers 0 would never be asked for.
            cfg = replace(cfg, gpus_per_worker=1.0 if cfg.learn.device.startswith("cuda") else 0.0)
    selection = dict(hours=hours, last=last, start=start, end=end, val_fraction=cfg.learn.val_fraction, gray=cfg.gray, val_split=cfg.learn.val_split, seed=cfg.learn.seed)
    plan = plan_data(store, stream, cfg.workers, **selection)
    check_rank(cfg.learn.k, n=plan.n, d=plan.d)
    check_loss(cfg.learn.loss, weight, plan.n, plan.d)
    log(f"training on {plan.train_frames} frames of {len(plan.train_hours)} hour(s), validating on {plan.val_frames} ({plan.validation}); {cfg.workers} workers, {cfg.mode}")
    run_ids: list[str] = []

    def build(fit: LearnConfig, refit: bool) -> TrainLoop:
        loop, run_id = build_loop(store, stream, cfg, plan.for_refit() if refit else plan, fit=fit, use_ray=use_ray, weight=weight, validate=not refit, log=log)
        run_ids.append(run_id)
        return loop

    loop, fitted, info = train_and_refit(build, fit_config(cfg.learn), cfg.learn.refit, progress=bool(cfg.learn.progress))
    try:
        run_id = run_ids[0]
        sketch = finish_sketch(fitted, cfg.learn, plan.n, plan.d, {**info, "workers": cfg.workers, "mode": cfg.mode, "run_id": run_id})
        gaps = loop.val_errors(sketch, cfg.learn.k) if plan.val_frames else None
        stats = start_stats(loop, sketch, plan.for_refit() if cfg.learn.refit else plan)
    finally:
        loop.shutdown()
    val_gap = val_random = None
    if gaps and gaps["count"]:
        val_gap = (gaps["sketch"] - gaps["optimal"]) / gaps["count"]
        val_random = (gaps["sparse_random"] - gaps["optimal"]) / gaps["count"]
    meta = {
        "data": {**plan.describe(), "gray": cfg.gray},
        "val_gap": val_gap,
        "val_gap_sparse_random": val_random,
        "retrain": {key: value for key, value in asdict(cfg).items() if key != "learn"},
    }
    if stats is not None:
        meta["update_stats"] = stats.record()  # its Gram travels as a checksummed array beside the sketch
    version, url = 0, ""
    if publish:
        version = publish_version(store, stream, sketch, meta, extra=None if stats is None else stats.arrays())
        url = version_url(store, stream, version)
        for rid in run_ids:
            store.remove(store.run_dir(stream, rid))  # the checkpoints served their purpose
        runs = store.runs_dir(stream)
        if store.fs.exists(runs) and not store.fs.ls(runs, detail=False):
            store.fs.rmdir(runs)  # no other run is in flight
    sketch = replace(sketch, meta={**sketch.meta, **meta, "version": version})
    return RetrainResult(version, url, sketch, val_gap, val_random, plan, loop.stats, run_id)
