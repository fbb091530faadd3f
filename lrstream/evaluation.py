"""Scheduled evaluation: apply a stored sketch to the newest hour and report its error gap.

The math (storage-free, :func:`evaluate_batches`): over the N frames of an
hour, each matrix A scaled to sigma_1 = 1,

    gap(S)  = mean_A ||A - SCW(S, A, k)||_F - mean_A ||A - [A]_k||_F,

for the stored sketch, a sparse random and a dense Gaussian sketch of the
same m (fixed seeds, recorded), and, for a mixed sketch, its random half
alone. Errors form the residual explicitly in float64; the optimum comes from
exact singular values (Eckart-Young). ``seconds_per_frame`` times the
production apply alone: SCW in float32 with the Gram-matrix
orthonormalisation, producing the rank-k factors.

The job (:func:`run_evaluation`) picks the hour and the sketch version,
refuses mismatched shapes, writes one report row per (hour, version) with
:mod:`lrstream.reports`, and flags drift: the sketch's gap exceeding the
sparse random gap by more than ``margin`` (relative).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import torch

from ._checks import check_rank, resolve_device
from .errors import DataError, NothingToDoError, UsageError
from .reader import hour_info, iter_matrices
from .reports import read_report, write_report
from .retrain import matrix_shape
from .scw import prepare, scw, sketch_errors
from .shards import list_hours
from .sketch import Sketch, dense_random, random_half, sparse_random
from .sketch_store import latest_version, load_version
from .storage import check_hour

SPARSE_SEED = 1_000_001
DENSE_SEED = 1_000_002


@dataclass(frozen=True)
class EvalResult:
    """Mean errors over one set of frames (each scaled to sigma_1 = 1)."""

    frames: int
    k: int
    m: int
    optimal_error: float
    gap_sketch: float
    gap_sparse_random: float
    gap_dense_random: float
    gap_random_half: float | None
    seconds_per_frame: float
    sparse_seed: int
    dense_seed: int
    device: str

    @property
    def ratio(self) -> float | None:
        """How many times smaller the sketch's gap is than sparse random's."""
        return self.gap_sparse_random / self.gap_sketch if self.gap_sketch > 0 else None  # None: the sketch is optimal here

    def drift(self, margin: float = 0.0) -> bool:
        """True when the sketch lost to sparse random: gap > (1 + margin) * sparse random gap."""
        return self.gap_sketch > (1.0 + margin) * self.gap_sparse_random


def evaluate_batches(
    sketch: Sketch,
    batches: Iterable[torch.Tensor],
    k: int,
    sparse_seed: int = SPARSE_SEED,
    dense_seed: int = DENSE_SEED,
    device: str = "cpu",
) -> EvalResult:
    """Error gaps of ``sketch`` and of random sketches of the same m over raw matrices (B, n, d), batch by batch.

    Streaming: one batch is in memory at a time. Raises DataError if there are
    no matrices or their n differs from the sketch's.
    """
    dev = resolve_device(device)
    n, m = sketch.n, sketch.m
    others = {"sparse": sparse_random(n, m, seed=sparse_seed), "dense": dense_random(n, m, seed=dense_seed)}
    if sketch.meta.get("m_learned"):
        others["half"] = random_half(sketch)
    sums = dict.fromkeys(["sketch", "opt", *others], 0.0)
    frames, apply_seconds = 0, 0.0
    for raw in batches:
        if raw.shape[-2] != n:
            raise DataError(f"frames give matrices with n={raw.shape[-2]} rows; the sketch was learned for n={n}")
        k = check_rank(k, m=m, n=raw.shape[-2], d=raw.shape[-1])
        P = prepare(raw)
        A = P.matrices.to(dev)  # (B, n, d) float32, sigma_1 = 1
        if dev.type == "cuda":
            if frames == 0:
                scw(sketch, A, k, method="gram")  # the first call pays for CUDA library handles and kernel loads: keep it out of the timing
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        scw(sketch, A, k, method="gram")
        if dev.type == "cuda":
            torch.cuda.synchronize()
        apply_seconds += time.perf_counter() - t0
        sums["sketch"] += float(sketch_errors(sketch, A, k).sum())
        for name, other in others.items():
            sums[name] += float(sketch_errors(other, A, k).sum())
        sums["opt"] += float(P.optimal_errors(k).sum())
        frames += A.shape[0]
    if frames == 0:
        raise DataError("there are no frames to evaluate")
    mean = {name: total / frames for name, total in sums.items()}
    return EvalResult(
        frames=frames,
        k=k,
        m=m,
        optimal_error=mean["opt"],
        gap_sketch=mean["sketch"] - mean["opt"],
        gap_sparse_random=mean["sparse"] - mean["opt"],
        gap_dense_random=mean["dense"] - mean["opt"],
        gap_random_half=mean["half"] - mean["opt"] if "half" in mean else None,
        seconds_per_frame=apply_seconds / frames,
        sparse_seed=sparse_seed,
        dense_seed=dense_seed,
        device=str(dev),
    )


# ------------------------------------------------------------------ the job


def _used_hours(meta: dict[str, Any]) -> set[str]:
    data = meta.get("data") or {}
    return set(data.get("train_hours", [])) | set(data.get("val_hours", []))


def pick_hour(root: str, stream: str, meta: dict[str, Any], hour: str | None = None) -> str:
    """``hour`` if given (it must be ingested), else the newest ingested hour the sketch did not train or validate on."""
    available = list_hours(root, stream)
    if hour is not None:
        check_hour(hour)  # a mistyped label is a usage error (exit 2), not a missing hour (exit 4)
        if hour not in available:
            raise NothingToDoError(f"stream {stream} has no ingested hour {hour}")
        return hour
    fresh = [h for h in available if h not in _used_hours(meta)]
    if not fresh:
        raise NothingToDoError(f"stream {stream} has no ingested hour newer than the sketch's training data (version {meta.get('version')})")
    return fresh[-1]


def run_evaluation(
    root: str,
    stream: str,
    hour: str | None = None,
    version: int | None = None,
    k: int | None = None,
    margin: float = 0.0,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate a stored sketch on one hour and append the report row; returns the row with a ``status``.

    status is "evaluated", "exists" (this hour and version were evaluated
    before: the stored row is returned and nothing is added) or
    "concurrent" (another run published the row first).
    """
    if margin < 0:
        raise UsageError(f"drift margin must be >= 0, got {margin}")
    if batch_size < 1:
        raise UsageError("batch size must be >= 1")
    version = int(version) if version is not None else latest_version(root, stream)
    if version is None:
        raise NothingToDoError(f"stream {stream} has no sketch yet under {root} (run `lrstream train` first)")
    sketch = load_version(root, stream, version)
    meta = sketch.meta
    if k is not None:
        k = check_rank(k, m=sketch.m)  # refused even where the hour was evaluated before
    chosen = pick_hour(root, stream, meta, hour)
    previous = read_report(root, stream, chosen, version)
    if previous is not None:
        return {**previous, "status": "exists"}
    info = hour_info(root, stream, chosen)
    if info.rows == 0:
        raise DataError(f"hour {chosen} of stream {stream} has no frames")
    gray = bool((meta.get("data") or {}).get("gray", False))
    n, d = matrix_shape(info.frame_shape, gray)
    if n != sketch.n or ("d" in meta and int(meta["d"]) != d):
        raise DataError(f"hour {chosen} of stream {stream} gives {n}x{d} matrices; sketch version {version} was learned for {sketch.n}x{meta.get('d', '?')}")
    if k is None:
        if not meta.get("k"):
            raise UsageError(f"sketch version {version} records no rank k; pass --k")
        k = int(meta["k"])
    k = check_rank(k, m=sketch.m, n=n, d=d)
    result = evaluate_batches(sketch, iter_matrices(root, stream, [chosen], batch_size=batch_size, gray=gray), k, device=device)
    row = {
        "stream": stream,
        "hour": chosen,
        "version": version,
        "kind": str(meta.get("kind", sketch.kind)),
        "n": n,
        "d": d,
        **{key: value for key, value in asdict(result).items()},
        "ratio": result.ratio,
        "drift": result.drift(margin),
        "margin": margin,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    status = "evaluated" if write_report(root, stream, row) else "concurrent"
    return {**row, "status": status}


def retrain_argv(root: str, stream: str, meta: dict[str, Any], workers: int = 2) -> list[str]:
    """The `lrstream train` arguments that retrain a sketch like ``meta`` on as many recent hours as it used."""
    hours = max(len(_used_hours(meta)), 1)
    return ["train", "--root", root, "--stream", stream, "--k", str(meta["k"]), "--m", str(meta["m"]), "--sketch", str(meta.get("kind", "learned")), "--last", str(hours), "--workers", str(workers)]


def submit_retrain(argv: list[str], submission_id: str, address: str | None = None) -> dict[str, Any]:
    """Start the retraining that ``argv`` (an `lrstream train` command line) describes.

    With a Ray dashboard address (``address`` or $RAY_ADDRESS, http://...) it
    is submitted as a Ray job under ``submission_id``; Ray refuses a second
    job with the same id, so a repeated cron fire retrains once. Otherwise it
    runs here, in a child process, its output going to stderr.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address)
        try:
            client.submit_job(entrypoint="lrstream " + shlex.join(argv), submission_id=submission_id)
        except Exception as exc:  # Ray reports a duplicate id as a plain RuntimeError/ValueError
            if "already exists" not in str(exc):
                raise
            return {"mode": "ray job", "submission_id": submission_id, "status": "already submitted"}
        return {"mode": "ray job", "submission_id": submission_id, "status": "submitted"}
    proc = subprocess.run([sys.executable, "-m", "lrstream.cli", *argv], stdout=sys.stderr, stdin=subprocess.DEVNULL, check=False)
    return {"mode": "local", "submission_id": submission_id, "status": "done" if proc.returncode == 0 else "failed", "exit_code": proc.returncode}
