"""The update job: fold one new hour into the current dense sketch's statistics and publish a new version.

``lrstream update --stream S --hour H`` loads LATEST and its statistics
(:mod:`lrstream.numerics.update`: the decayed spectral Gram of its start),
reads only hour H's frames, folds them in (G <- 2^(-elapsed/h) G + sum of the
hour's terms), re-takes the top-m subspace (a mixed-dense sketch keeps its
random rows) and publishes the result as a new version carrying the new
statistics. Time is proportional to the hour's frames plus one n x n
eigen-solve, independent of the training window. Refusals change nothing:
an hour already folded (or not newer than the newest folded: exit 4), a
version without statistics (exit 2, run a full ``lrstream train``), a
frame shape unlike the sketch's (exit 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ..data.reader import hour_info, iter_matrices, matrix_shape
from ..data.store import Store, check_hour, hour_start
from ..data.versions import latest_version, load_version, load_version_arrays, publish_version, version_url
from ..errors import DataError, NothingToDoError, UsageError
from ..numerics.linalg import normalize_batch
from ..numerics.sketch import DenseSketch
from ..numerics.update import GRAM, UpdateStats, decay, fold, hour_terms, learned_rows, refreshed_matrix


def load_stats(store: Store, stream: str, version: int, sketch) -> UpdateStats:
    """The statistics published with ``version``; UsageError (exit 2) when it has none."""
    record = sketch.meta.get("update_stats")
    arrays = load_version_arrays(store, stream, version) if record else {}
    if not record or GRAM not in arrays or not isinstance(sketch, DenseSketch):
        kind = sketch.meta.get("kind")
        raise UsageError(
            f"version {version} of stream {stream} ({kind}) keeps no update statistics: only dense and mixed-dense sketches "
            "with a tensor or spectral start published by this lrstream do; run `lrstream train` for a full retrain"
        )
    stats = UpdateStats.from_arrays(arrays, record)
    if stats.n != sketch.n:
        raise DataError(f"version {version} of stream {stream}: statistics for n={stats.n}, sketch n={sketch.n}")
    return stats


def run_update(root: Store | str, stream: str, hour: str, *, half_life_hours: float | None = None, batch_size: int = 8, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Fold ``hour`` into LATEST's statistics and publish the updated sketch; returns the summary (see the module docstring)."""
    t0 = time.perf_counter()
    store = Store.of(root)
    check_hour(hour)
    if half_life_hours is not None and not half_life_hours > 0:
        raise UsageError(f"--half-life-hours must be positive, got {half_life_hours}")
    parent = latest_version(store, stream)
    if parent is None:
        raise NothingToDoError(f"stream {stream} has no sketch yet under {store.root} (run `lrstream train` first)")
    sketch = load_version(store, stream, parent)
    stats = load_stats(store, stream, parent, sketch)
    if hour <= stats.last_hour:
        raise NothingToDoError(f"hour {hour} of stream {stream} is already folded into version {parent} (its newest hour is {stats.last_hour}); nothing changed")
    data = sketch.meta.get("data") or {}
    info = hour_info(store, stream, hour)
    gray = bool(data.get("gray", False))
    if data.get("frame_shape") is not None and list(info.frame_shape) != list(data["frame_shape"]) or matrix_shape(info.frame_shape, gray)[0] != sketch.n:
        raise DataError(f"hour {hour} of stream {stream} has frames of shape {tuple(info.frame_shape)}; version {parent} was trained on {tuple(data.get('frame_shape') or ())} (n={sketch.n}): run `lrstream train`")
    if half_life_hours is not None:
        stats = UpdateStats(stats.gram, stats.weight, stats.power, float(half_life_hours), stats.hours, stats.last_hour, stats.frames)
    terms = torch.zeros_like(stats.gram)
    frames = 0
    for batch in iter_matrices(store, stream, [hour], batch_size, gray):
        terms += hour_terms(normalize_batch(batch), stats.power, batch_size)
        frames += int(batch.shape[0])
    if frames == 0:
        raise DataError(f"hour {hour} of stream {stream} holds no frames")
    elapsed = (hour_start(hour) - hour_start(stats.last_hour)).total_seconds() / 3600
    new = fold(stats, terms, frames, hour, elapsed)
    matrix = refreshed_matrix(sketch.matrix, new, learned_rows(sketch.meta, sketch.m))
    seconds = time.perf_counter() - t0
    record = {"parent_version": parent, "hour": hour, "frames": frames, "elapsed_hours": elapsed, "decay": decay(elapsed, stats.half_life_hours), "seconds": seconds}
    history = list(sketch.meta.get("updates", []))[-47:] + [record]  # the last two days of updates
    meta = {**sketch.meta, "update": record, "updates": history, "update_stats": new.record()}
    version = publish_version(store, stream, DenseSketch(matrix, meta), extra=new.arrays())
    out = {"stream": stream, "version": version, "url": version_url(store, stream, version), "kind": sketch.meta.get("kind"), "m": sketch.m, "n": sketch.n, **record, "hours_folded": new.hours, "half_life_hours": new.half_life_hours, "power": new.power}
    log(f"stream {stream}: version {version} folds hour {hour} ({frames} frames, decay {record['decay']:.3g}) into version {parent} in {seconds:.2f} s")
    return out


def add_update(cmd) -> None:
    """The ``update`` subcommand's flags."""
    cmd.flag("--root", required=True, help="storage root (path or fsspec URL)")
    cmd.flag("--stream", required=True, help="stream name")
    cmd.flag("--hour", required=True, help="the new hour YYYY-MM-DDTHH to fold in (after the newest folded one)")
    cmd.flag("--half-life-hours", type=float, default=None, help="from now on, old statistics halve every this many hours (default: the trained half-life, in hours)")
    cmd.flag("--batch-size", type=int, default=8, help="frames per batch while reading the hour")
    cmd.flag("--json", action="store_true", help="print one JSON object as the last line of stdout")
    cmd.flag("--debug", action="store_true", help="show tracebacks")
    cmd.flag("--config", metavar="FILE", help="YAML or TOML file with default values for these options")


def update_command(cmd, args, log) -> dict:
    return run_update(args.root, args.stream, args.hour, half_life_hours=args.half_life_hours, batch_size=args.batch_size, log=log)
