"""The factorize job: a classic rank-k factorisation of one matrix file, written as L.npy, R.npy and metrics.json."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..data.factors import matrix_to_frame
from ..data.sources import IMAGE_SUFFIXES, frames_to_matrices, read_image, read_matrix
from ..data.store import Store
from ..errors import UsageError
from ..numerics import factorize as fz
from .pictures import draw_comparison

METHODS = ("svd", "uv", "complete")


@dataclass(frozen=True)
class FactorizeJob:
    """One factorisation; the ``factorize`` flags mirror these fields."""

    input: str = field(metadata={"help": "path or fsspec URL of a .npy, .csv or image file"})
    k: int = field(metadata={"help": "target rank"})
    out: str = field(metadata={"help": "output folder (path or fsspec URL) for L.npy, R.npy and metrics.json"})
    method: str = field(default="svd", metadata={"help": "truncated SVD, gradient U.V, or masked completion", "choices": METHODS})
    steps: int | None = field(default=None, metadata={"help": "most iterations for uv/complete (default: the solver's own)"})
    lr: float | None = field(default=None, metadata={"help": "step size of uv's gd or adam, complete's adam (default: the solver's own)"})
    solver: str | None = field(default=None, metadata={"help": "uv: gd (scaled gradient, default), als or adam; complete: als (default) or adam", "choices": ("gd", "als", "adam")})
    mask: str | None = field(default=None, metadata={"help": "complete: .npy bool mask of observed entries (default: the finite entries)"})
    observed: float | None = field(default=None, metadata={"help": "complete: observe this seeded random fraction of the entries instead"})
    holdout: float = field(default=0.1, metadata={"help": "complete: fraction of observed entries held out to report error"})
    seed: int = field(default=0, metadata={"help": "seeds the factors' start and the observed/held-out draws"})
    device: str = field(default="cpu", metadata={"help": "torch device of uv/complete"})
    picture: str | None = field(default=None, metadata={"help": "also draw the original, each method's rank-k approximation and the residual as a PNG (path or fsspec URL)"})


def _factorize(job: FactorizeJob, A: np.ndarray):
    if job.method == "svd":
        return fz.truncated_svd(A, job.k)
    if job.method == "uv":
        return fz.uv_factorize(A, job.k, steps=job.steps, lr=job.lr, seed=job.seed, device=job.device, solver=job.solver or "gd")
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
    solver = job.solver or "als"
    return fz.complete_matrix(A, mask, job.k, steps=job.steps, lr=job.lr, holdout=job.holdout, seed=job.seed, device=job.device, solver=solver)


def _is_image(url: str) -> bool:
    return os.path.splitext(url.split("?")[0])[1].lower() in IMAGE_SUFFIXES


def _display(M: np.ndarray, image_shape: tuple[int, ...] | None, lo: float, hi: float) -> np.ndarray:
    """A matrix (n, d) as the uint8 picture it stands for: an image's (H, W, C) again (channels were
    stacked as rows), or any other matrix mapped linearly from [lo, hi] to [0, 255] as (n, d) gray."""
    if image_shape is not None:
        return matrix_to_frame(M, image_shape)
    scaled = (M - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(M)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _picture(job: FactorizeJob, A: np.ndarray, first, image_shape: tuple[int, ...] | None, log: Callable[[str], None]) -> dict[str, float]:
    """Draw one row per method (the job's own result ``first`` reused, the others with the job's k and seed, their own solver defaults)
    into ``job.picture``; returns each method's relative error ||A - LR||_F / ||A||_F."""
    lo, hi = float(A.min()), float(A.max())
    original = _display(A, image_shape, lo, hi)
    norm = float(np.linalg.norm(A)) or 1.0
    rows, errors = [], {}
    for method in METHODS:
        if method == job.method:
            res, other = first, job
        else:  # completion needs unobserved entries to be a completion: half by default, the job's own fraction if given
            other = replace(job, method=method, solver=None, steps=None, lr=None, observed=job.observed if job.observed is not None or job.mask else 0.5)
            res = _factorize(other, A)
        approx = (res.L @ res.R).detach().cpu().double().numpy()  # (n, d)
        errors[method] = float(np.linalg.norm(A - approx)) / norm
        observed = f", {other.observed:.0%} observed" if method == "complete" and other.observed is not None else ""
        observed = ", masked" if method == "complete" and other.mask else observed
        label = f"{method} (rank {job.k}{observed})" + (", stored" if method == job.method else "")
        rows.append((label, original, _display(approx, image_shape, lo, hi), f"rel. error {errors[method]:.4g}"))
        log(f"{'picture ' + method:>24}: relative error {errors[method]:.6g}")
    n, d = A.shape
    title = f"{os.path.basename(job.input.split('?')[0])}: {n}x{d} matrix, rank {job.k}, compression {n * d / (job.k * (n + d)):.3g}x"
    draw_comparison(rows, job.picture, title)
    log(f"picture written to {job.picture}")
    return errors


def run_factorize(job: FactorizeJob, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Factorise ``job.input`` as L (n, k) @ R (k, d); writes them and the metrics under ``job.out``; returns the metrics.

    With ``job.picture`` also draws every method's approximation next to the
    original (:func:`lrstream.jobs.pictures.draw_comparison`); the factors
    written stay those of ``job.method``.
    """
    image_shape = None
    if job.picture and _is_image(job.input):
        img = read_image(job.input)  # (H, W, C) uint8, kept to turn the factors back into pictures
        image_shape, A = img.shape, frames_to_matrices(img[None])[0]
    else:
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
    extra = {"picture": job.picture, "picture_errors": _picture(job, A.astype(np.float64), res, image_shape, log)} if job.picture else {}
    return {**metrics, "out": job.out, **extra}
