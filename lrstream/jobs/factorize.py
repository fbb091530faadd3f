"""The factorize job: a classic rank-k factorisation of one matrix file, written as L.npy, R.npy and metrics.json."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.sources import read_matrix
from ..data.store import Store
from ..errors import UsageError
from ..numerics import factorize as fz

METHODS = ("svd", "uv", "complete")


@dataclass(frozen=True)
class FactorizeJob:
    """One factorisation; the ``factorize`` flags mirror these fields."""

    input: str = field(metadata={"help": "path or fsspec URL of a .npy, .csv or image file"})
    k: int = field(metadata={"help": "target rank"})
    out: str = field(metadata={"help": "output folder (path or fsspec URL) for L.npy, R.npy and metrics.json"})
    method: str = field(default="svd", metadata={"help": "truncated SVD, gradient U.V, or masked completion", "choices": METHODS})
    steps: int = field(default=2000, metadata={"help": "optimiser steps for uv/complete"})
    lr: float | None = field(default=None, metadata={"help": "learning rate for uv/complete (default: the method's own)"})
    mask: str | None = field(default=None, metadata={"help": "complete: .npy bool mask of observed entries (default: the finite entries)"})
    observed: float | None = field(default=None, metadata={"help": "complete: observe this seeded random fraction of the entries instead"})
    holdout: float = field(default=0.1, metadata={"help": "complete: fraction of observed entries held out to report error"})
    seed: int = field(default=0, metadata={"help": "seeds the factors' start and the observed/held-out draws"})
    device: str = field(default="cpu", metadata={"help": "torch device of uv/complete"})


def _factorize(job: FactorizeJob, A: np.ndarray):
    if job.method == "svd":
        return fz.truncated_svd(A, job.k)
    if job.method == "uv":
        return fz.uv_factorize(A, job.k, steps=job.steps, lr=job.lr, seed=job.seed, device=job.device)
    if job.method != "complete":
        raise UsageError(f"unknown method {job.method!r}; choose one of {', '.join(METHODS)}")
    if job.mask and job.observed is not None:
        raise UsageError("give either --mask or --observed, not both")
    if job.mask:
        mask = read_matrix(job.mask).astype(bool)
    elif job.observed is not None:
        if not 0 < job.observed <= 1:
            raise UsageError("--observed must lie in (0, 1]")
        mask = np.random.default_rng(job.seed).random(A.shape) < job.observed
    else:
        mask = np.isfinite(A)
    return fz.complete_matrix(A, mask, job.k, steps=job.steps, lr=job.lr, holdout=job.holdout, seed=job.seed, device=job.device)


def run_factorize(job: FactorizeJob, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Factorise ``job.input`` as L (n, k) @ R (k, d); writes them and the metrics under ``job.out``; returns the metrics."""
    A = read_matrix(job.input)
    if A.ndim != 2:
        raise UsageError(f"factorize takes one matrix, {job.input} holds a stack of shape {A.shape}")
    res = _factorize(job, A.astype(np.float64))
    out = Store(job.out)  # the folder is a root of its own: L.npy, R.npy and metrics.json directly in it
    for name, arr in (("L", res.L), ("R", res.R)):
        buf = io.BytesIO()
        np.save(buf, arr.detach().cpu().numpy(), allow_pickle=False)
        out.write_bytes(f"{out.base}/{name}.npy", buf.getvalue())
    metrics = {"input": job.input, "method": job.method, "k": job.k, "shape": list(A.shape), **res.metrics()}
    out.write_bytes(f"{out.base}/metrics.json", json.dumps(metrics, indent=1).encode())
    for key, value in metrics.items():
        log(f"{key:>24}: {value}")
    log(f"factors and metrics written to {job.out}")
    return {**metrics, "out": job.out}
