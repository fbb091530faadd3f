"""The evaluate job: score a stored sketch on an hour at about the cost of applying it, report the gap, flag drift.

:func:`run_evaluation` picks the hour and the sketch version and refuses
mismatched shapes. Then, in two parts:

* the sketch's own error on every frame comes from the apply pass: the
  factors ``lrstream apply`` stored for this hour and version (their rows
  carry each frame's error), or, where there are none, one apply pass here
  that stores nothing;
* the optimum (top-k singular values by block Krylov,
  :mod:`lrstream.numerics.spectrum`) and the random baselines run on a
  seeded sample of ``sample`` frames (all of them when the hour has fewer):
  :func:`lrstream.numerics.scoring.score_sample`.

Each gap comes with its standard error over the sample. Drift: the
sketch's gap exceeds sparse random's by more than ``margin`` (relative)
plus ``z`` standard errors of the paired difference (zero when every frame
is scored, so the rule is then the plain margin). One report row per
(hour, version) (:mod:`lrstream.data.reports`); :func:`run_evaluate`, the
command, exits 5 on drift and, if asked, submits a retraining
(:func:`lrstream.distributed.submit.submit_retrain`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..data.factors import read_factor_errors, read_factors_manifest
from ..data.reader import hour_info, matrix_shape
from ..data.reports import format_reports, read_report, write_report
from ..data.shards import list_hours, read_rows_at
from ..data.sources import frames_to_matrices
from ..data.store import Store, check_hour
from ..data.versions import latest_version, load_version
from ..distributed.apply import iter_frame_factors
from ..distributed.fleet import StreamWork
from ..distributed.submit import submit_retrain
from ..errors import EXIT_DRIFT, CommandFailed, DataError, NothingToDoError, UsageError
from ..numerics.checks import check_rank, check_sketch_fits
from ..numerics.scoring import sample_rows, score_sample
from .fleet import FleetOptions, run_fleet, task_resources


@dataclass(frozen=True)
class EvaluateJob:
    """What ``lrstream evaluate`` does besides choosing the store and stream; the flags mirror these fields."""

    hour: str | None = field(default=None, metadata={"help": "evaluate this hour (default: the newest one the sketch did not train on)"})
    version: int | None = field(default=None, metadata={"help": "sketch version (default: LATEST)"})
    k: int | None = field(default=None, metadata={"help": "rank (default: the sketch's)"})
    margin: float = field(default=0.0, metadata={"help": "drift when the sketch's gap exceeds sparse random's by more than this fraction"})
    retrain_on_drift: bool = field(default=False, metadata={"help": "on drift, submit `lrstream train` for the stream (a Ray job with id retrain-S-HOUR when RAY_ADDRESS is a dashboard URL)"})
    on_drift: str = field(default="retrain", metadata={"help": "with --retrain-on-drift: a full `lrstream train`, or `lrstream update` folding the drifted hour into the sketch's statistics (falls back to train for a sketch without them)", "choices": ("retrain", "update")})
    workers: int = field(default=2, metadata={"help": "workers for a retraining submitted on drift"})
    address: str | None = field(default=None, metadata={"help": "Ray dashboard address for --retrain-on-drift (default: $RAY_ADDRESS)"})
    sample: int = field(default=32, metadata={"help": "frames scored against the optimum and the random sketches (all frames when the hour has fewer)"})
    seed: int = field(default=0, metadata={"help": "seeds the sample of frames"})
    z: float = field(default=2.0, metadata={"help": "drift also needs the gap difference to exceed the margin by this many standard errors of the sample"})
    recompute: bool = field(default=False, metadata={"help": "apply the sketch again even where `lrstream apply` stored this hour's factors"})
    batch_size: int = field(default=8, metadata={"help": "frames scored at a time"})
    device: str = field(default="cpu", metadata={"help": "torch device of the numerics"})


def _used_hours(meta: dict[str, Any]) -> set[str]:
    data = meta.get("data") or {}
    folded = {u.get("hour") for u in meta.get("updates", []) if isinstance(u, dict)}  # hours `lrstream update` folded in
    return set(data.get("train_hours", [])) | set(data.get("val_hours", [])) | folded


def pick_hour(store: Store | str, stream: str, meta: dict[str, Any], hour: str | None = None) -> str:
    """``hour`` if given (it must be ingested), else the newest ingested hour the sketch did not train or validate on."""
    available = list_hours(store, stream)
    if hour is not None:
        check_hour(hour)  # a mistyped label is a usage error (exit 2), not a missing hour (exit 4)
        if hour not in available:
            raise NothingToDoError(f"stream {stream} has no ingested hour {hour}")
        return hour
    fresh = [h for h in available if h not in _used_hours(meta)]
    if not fresh:
        raise NothingToDoError(f"stream {stream} has no ingested hour newer than the sketch's training data (version {meta.get('version')})")
    return fresh[-1]


def sketch_errors_of_hour(store: Store, stream: str, hour: str, version: int, sketch, k: int, gray: bool, batch_size: int = 8, device: str = "cpu", recompute: bool = False) -> dict[str, Any]:
    """The sketch's error on every frame of ``hour``: from its stored factors when they match, else one apply pass (nothing stored).

    Returns frame_index, error (||A - L R||_F) and norm (||A||_F), each (rows,),
    with ``reused`` and the apply's ``seconds_per_frame``.
    """
    doc = None if recompute else read_factors_manifest(store, stream, hour, version)
    if doc is not None and int(doc["k"]) == k and bool(doc.get("gray", False)) == gray:
        return {**read_factor_errors(store, stream, hour, version), "reused": True, "seconds_per_frame": doc.get("seconds_per_frame")}
    times = {"read": 0.0, "compute": 0.0}
    parts: dict[str, list] = {"frame_index": [], "error": [], "norm": []}
    for index, _, f in iter_frame_factors(store, stream, hour, sketch, k, gray, batch_size=batch_size, device=device, times=times):
        parts["frame_index"].append(index)
        parts["error"].append(f.errors.numpy())
        parts["norm"].append(f.norms.numpy())
    out = {name: np.concatenate(p) for name, p in parts.items()}
    return {**out, "reused": False, "seconds_per_frame": times["compute"] / max(len(out["error"]), 1)}


def run_evaluation(
    store: Store | str,
    stream: str,
    hour: str | None = None,
    version: int | None = None,
    k: int | None = None,
    margin: float = 0.0,
    batch_size: int = 8,
    device: str = "cpu",
    sample: int = 32,
    seed: int = 0,
    z: float = 2.0,
    recompute: bool = False,
) -> dict[str, Any]:
    """Evaluate a stored sketch on one hour and append the report row; returns the row with a ``status``.

    status is "evaluated", "exists" (this hour and version were evaluated
    before: the stored row is returned and nothing is added) or
    "concurrent" (another run published the row first).
    """
    if margin < 0 or z < 0:
        raise UsageError(f"drift margin and z must be >= 0, got {margin} and {z}")
    if batch_size < 1 or sample < 1:
        raise UsageError("batch size and sample must be >= 1")
    t0 = time.perf_counter()
    store = Store.of(store)
    version = int(version) if version is not None else latest_version(store, stream)
    if version is None:
        raise NothingToDoError(f"stream {stream} has no sketch yet under {store.root} (run `lrstream train` first)")
    sketch = load_version(store, stream, version)
    meta = sketch.meta
    if k is not None:
        k = check_rank(k, m=sketch.m)  # refused even where the hour was evaluated before
    chosen = pick_hour(store, stream, meta, hour)
    previous = read_report(store, stream, chosen, version)
    if previous is not None:
        return {**previous, "status": "exists"}
    info = hour_info(store, stream, chosen)
    if info.rows == 0:
        raise DataError(f"hour {chosen} of stream {stream} has no frames")
    gray = bool((meta.get("data") or {}).get("gray", False))
    n, d = matrix_shape(info.frame_shape, gray)
    check_sketch_fits(sketch, n, d, f"hour {chosen} of stream {stream}", version)
    if k is None:
        if not meta.get("k"):
            raise UsageError(f"sketch version {version} records no rank k; pass --k")
        k = int(meta["k"])
    k = check_rank(k, m=sketch.m, n=n, d=d)
    own = sketch_errors_of_hour(store, stream, chosen, version, sketch, k, gray, batch_size=batch_size, device=device, recompute=recompute)
    positions = sample_rows(info.rows, sample, seed)
    table = read_rows_at(store, stream, chosen, positions)
    index = table.column("frame_index").to_numpy()
    where = {int(f): i for i, f in enumerate(own["frame_index"])}
    errors = np.array([own["error"][where[int(f)]] for f in index])  # the sampled frames' own errors, from the apply pass
    A = frames_to_matrices(table.column("frame").combine_chunks().to_numpy_ndarray(), gray=gray)  # (s, n, d)
    score = score_sample(sketch, A, errors, k, population=info.rows, device=device)
    rel = own["error"] / np.where(own["norm"] > 0, own["norm"], 1.0)
    row = {
        "stream": stream,
        "hour": chosen,
        "version": version,
        "kind": str(meta.get("kind", sketch.kind)),
        "n": n,
        "d": d,
        **asdict(score),
        "sample_seed": seed,
        "ratio": score.ratio,
        "sketch_rel_error": float(rel.mean()),
        "factors_reused": bool(own["reused"]),
        "seconds_per_frame": own["seconds_per_frame"],
        "drift": score.drift(margin, z),
        "margin": margin,
        "drift_z": z,
        "evaluate_seconds": time.perf_counter() - t0,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    status = "evaluated" if write_report(store, stream, row) else "concurrent"
    return {**row, "status": status}


def retrain_argv(root: str, stream: str, meta: dict[str, Any], workers: int = 2) -> list[str]:
    """The `lrstream train` arguments that retrain a sketch like ``meta`` on as many recent hours as it used."""
    hours = max(len(_used_hours(meta)), 1)
    return ["train", "--root", root, "--stream", stream, "--k", str(meta["k"]), "--m", str(meta["m"]), "--sketch", str(meta.get("kind", "learned")), "--last", str(hours), "--workers", str(workers)]


def run_evaluate(store: Store | str, stream: str, job: EvaluateJob = EvaluateJob(), log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """The ``evaluate`` command: :func:`run_evaluation`, the report table on the log, and drift handling.

    Returns the row with a ``gap`` summary. On drift raises CommandFailed
    (exit 5) carrying that result, after submitting a retraining when
    ``job.retrain_on_drift`` (its submission under ``result["retrain"]``).
    """
    store = Store.of(store)
    row = run_evaluation(
        store, stream, hour=job.hour, version=job.version, k=job.k, margin=job.margin, batch_size=job.batch_size, device=job.device,
        sample=job.sample, seed=job.seed, z=job.z, recompute=job.recompute,
    )  # fmt: skip
    out = {**row, "gap": {"sketch": row["gap_sketch"], "sparse_random": row["gap_sparse_random"], "dense_random": row["gap_dense_random"], "random_half": row["gap_random_half"]}}
    log(format_reports([row]))
    if row["status"] == "exists":
        log(f"hour {row['hour']} was already evaluated with version {row['version']}; no row added")
    if not row["drift"]:
        return out
    message = (
        f"drift: stream {stream} hour {row['hour']}: sketch version {row['version']} has gap {row['gap_sketch']:.5g}, sparse random {row['gap_sparse_random']:.5g} "
        f"(margin {row['margin']:.0%} + {row['drift_z']:g} x {row['se_difference']:.2g} sampling error, {row['sample']} of {row['frames']} frames)"
    )
    if job.retrain_on_drift:
        meta = load_version(store, stream, row["version"]).meta
        if job.on_drift == "update" and meta.get("update_stats"):
            argv, sid = ["update", "--root", store.root, "--stream", stream, "--hour", row["hour"]], f"update-{stream}-{row['hour']}"
        else:
            argv, sid = retrain_argv(store.root, stream, meta, workers=job.workers), f"retrain-{stream}-{row['hour']}"
        out["retrain"] = submit_retrain(argv, sid, address=job.address)
        message += f"; retraining {out['retrain']['status']} ({out['retrain']['mode']} {out['retrain']['submission_id']})"
    raise CommandFailed(message, EXIT_DRIFT, out)


def evaluate_work(root: str, stream: str, job: EvaluateJob) -> StreamWork:
    """One stream of a fleet evaluation: it computes in its task, on one CPU (or one GPU with ``device="cuda"``)."""
    return StreamWork(stream, run_evaluate, (root, stream, job), *task_resources(job.device))


def describe_evaluate(r: dict[str, Any]) -> str:
    return f"hour {r['hour']} version {r['version']}: gap {r['gap_sketch']:.5g}, sparse random {r['gap_sparse_random']:.5g}, no drift"


def run_evaluate_fleet(works: list[StreamWork], fleet: FleetOptions, *, address: str | None = None, use_ray: bool = True, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Evaluate every stream of ``works``; a drifting stream exits 5 unless another did worse (see :func:`lrstream.jobs.fleet.run_fleet`)."""
    return run_fleet("evaluate", works, fleet, describe_evaluate, address=address, use_ray=use_ray, log=log)
