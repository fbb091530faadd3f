"""Scoring a sketch on a stream of matrices next to random sketches of the same size (storage-free).

Two ways: :func:`evaluate_batches` scores every matrix with exact singular
values; :func:`score_sample` scores a seeded sample (:func:`sample_rows`) of
an hour's frames against the optimum (block Krylov,
:mod:`lrstream.numerics.spectrum`) and the random sketches, with the
sketch's own errors supplied by the apply pass, and reports each gap with its
standard error (:class:`SampleScore`, whose ``drift`` is the sampled rule).

Over N matrices, each A scaled to sigma_1 = 1,

    gap(S)  = mean_A ||A - SCW(S, A, k)||_F - mean_A ||A - [A]_k||_F,

for the sketch under test, a sparse random and a dense Gaussian sketch of the
same m (fixed seeds, recorded), and, for a mixed sketch, its random half
alone. Errors form the residual explicitly in float64; the optimum comes from
exact singular values (Eckart-Young). ``seconds_per_frame`` times the
production apply alone: SCW in float32 with the Gram-matrix
orthonormalisation, producing the rank-k factors.

:func:`sparse_baseline` is the one sparse random sketch every comparison
uses (evaluation here, training's validation report), so a gap ratio means
the same thing wherever it is printed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, UsageError
from .apply import apply_sketch
from .checks import check_rank, resolve_device
from .scw import prepare, scw, sketch_errors
from .sketch import Sketch, SparseSketch, dense_random, random_half, sparse_random
from .spectrum import optimal_errors

SPARSE_SEED = 1_000_001
DENSE_SEED = 1_000_002


def sparse_baseline(n: int, m: int) -> SparseSketch:
    """The sparse random (CountSketch) baseline of size m x n that every report compares against."""
    return sparse_random(n, m, seed=SPARSE_SEED)


@dataclass(frozen=True)
class Gaps:
    """Mean sigma_1-normalised errors of a sketch and of random sketches of the same m on a set of frames."""

    frames: int
    k: int
    m: int
    optimal_error: float
    gap_sketch: float
    gap_sparse_random: float
    gap_dense_random: float
    gap_random_half: float | None
    sparse_seed: int
    dense_seed: int
    device: str

    @property
    def ratio(self) -> float | None:
        """How many times smaller the sketch's gap is than sparse random's."""
        return self.gap_sparse_random / self.gap_sketch if self.gap_sketch > 0 else None  # None: the sketch is optimal here


@dataclass(frozen=True)
class EvalResult(Gaps):
    """:class:`Gaps` over every matrix of a set (exact singular values), with the apply time per frame."""

    seconds_per_frame: float

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


# ------------------------------------------------------------------ sampled scoring


def sample_rows(count: int, size: int, seed: int) -> list[int]:
    """A seeded sample of ``size`` distinct row positions out of ``count``, sorted; all of them when count <= size.

    Deterministic in (count, size, seed): a re-run of an evaluation scores the same frames.
    """
    for name, v in (("count", count), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise UsageError(f"{name} must be an integer, got {v!r}")
    if count < 0 or size < 1:
        raise UsageError(f"need count >= 0 and size >= 1, got count={count}, size={size}")
    if count <= size:
        return list(range(int(count)))
    picked = np.random.default_rng(int(seed)).choice(int(count), size=int(size), replace=False)
    return sorted(int(i) for i in picked)


def _mean_se(x: torch.Tensor, population: int) -> tuple[float, float]:
    """Mean of the per-frame values x (s,) and its standard error as an estimate of the mean over ``population`` frames.

    SE = std(x, ddof=1) / sqrt(s) * sqrt(1 - s / population): the sample is
    drawn without replacement, so the finite-population correction makes the
    SE 0 when the sample is the whole population (and it is 0 for s = 1, where
    no spread can be estimated).
    """
    s = x.shape[0]
    mean = float(x.mean())
    if s < 2 or s >= population:
        return mean, 0.0
    return mean, float(x.std(correction=1)) / math.sqrt(s) * math.sqrt(1.0 - s / population)


@dataclass(frozen=True)
class SampleScore(Gaps):
    """Error gaps on a sample of an hour's frames, each frame scaled to sigma_1 = 1, with standard errors.

    Attributes:
        frames: frames in the hour (the population).
        sample: frames scored (s <= frames).
        k, m: rank and sketch size.
        optimal_error: mean ||A - [A]_k||_F / sigma_1 over the sample.
        gap_*: mean (error - optimum) / sigma_1 of the sketch, sparse random,
            dense random and (mixed sketches only, else None) the random half.
        se_*: the standard error of each gap as an estimate of the hour's
            gap (finite-population corrected: 0 when every frame is scored).
        se_difference: standard error of gap_sketch - gap_sparse_random,
            from the per-frame paired differences.
        sparse_seed, dense_seed: seeds of the random sketches.
        device: where the baselines ran.
    """

    sample: int
    se_sketch: float
    se_sparse_random: float
    se_dense_random: float
    se_random_half: float | None
    se_difference: float

    def drift(self, margin: float = 0.0, z: float = 2.0) -> bool:
        """True when the sketch lost to sparse random beyond the margin and the sampling error.

        The rule: drift iff

            gap_sketch - gap_sparse_random > margin * gap_sparse_random + z * se_difference.

        The left side is the mean over the sampled frames of the per-frame
        difference d_i = (err_sketch,i - err_sparse,i) / sigma_1,i, an
        unbiased estimate of the hour's mean difference; se_difference is its
        standard error. The difference is paired: both sketches are scored on
        the same frames, so the part of the frame-to-frame spread that the
        two gaps share cancels, and se_difference is the right error for a
        difference measured on one sample (below sqrt(se_sketch^2 +
        se_sparse^2) whenever the two gaps rise and fall together).
        With z = 2, a sketch exactly at the margin is flagged about 2% of the
        time by sampling alone (one-sided normal tail); with every frame
        scored, se_difference = 0 and the rule is the plain margin of
        :meth:`EvalResult.drift`.
        """
        return self.gap_sketch - self.gap_sparse_random > margin * self.gap_sparse_random + z * self.se_difference


def score_sample(
    sketch: Sketch,
    A,
    sketch_errors,
    k: int,
    population: int,
    sparse_seed: int = SPARSE_SEED,
    dense_seed: int = DENSE_SEED,
    device: str = "cpu",
    batch_size: int = 8,
) -> SampleScore:
    """Score a sample of an hour's frames: the optimum and the random sketches here, the sketch's own errors given.

    Args:
        sketch: the sketch under test, S (m, n).
        A: (s, n, d) raw sampled frames as matrices, numpy or torch, uint8 or
            float; not normalised (SCW is scale invariant, and each frame's
            gap is divided by its own sigma_1 here).
        sketch_errors: (s,) raw errors ||A - SCW(S, A, k)||_F of ``sketch`` on
            those frames, from the apply pass (not recomputed here).
        k: rank, 1 <= k <= min(m, n, d).
        population: frames in the hour (>= s), for the finite-population correction.
        sparse_seed, dense_seed: seeds of the sparse and dense random sketches.
        device: where the spectrum and the baselines run.
        batch_size: frames per batch.

    Per frame: sigma_1 and opt = ||A - [A]_k||_F by block Krylov
    (:func:`lrstream.numerics.spectrum.optimal_errors`), the raw errors of a
    sparse random, a dense random and, for a mixed sketch, its random half
    (:func:`lrstream.numerics.apply.apply_sketch`, the production apply that
    gave the sketch under test its errors: float32 factors, the residual
    formed tile by tile with its sums in float64), and the gaps d_X = (err_X - opt) / sigma_1
    (0 for a zero frame). Each gap is the mean of d_X with its standard
    error, see :class:`SampleScore`.
    """
    dev = resolve_device(device)
    if isinstance(A, np.ndarray):
        A = torch.from_numpy(np.ascontiguousarray(A))
    if not isinstance(A, torch.Tensor) or A.ndim != 3:
        raise UsageError(f"A must be a (s, n, d) array, got {getattr(A, 'shape', type(A).__name__)}")
    s, n, d = A.shape
    if s == 0:
        raise DataError("there are no sampled frames to score")
    if n != sketch.n:
        raise DataError(f"frames give matrices with n={n} rows; the sketch was learned for n={sketch.n}")
    own = torch.as_tensor(np.asarray(sketch_errors, dtype=np.float64)).reshape(-1)
    if own.shape[0] != s:
        raise UsageError(f"got {own.shape[0]} sketch errors for {s} sampled frames")
    if not bool(torch.isfinite(own).all()) or bool((own < 0).any()):
        raise DataError("the sketch errors must be finite and non-negative")
    if isinstance(population, bool) or not isinstance(population, (int, np.integer)) or population < s:
        raise UsageError(f"population must be an integer >= the sample size {s}, got {population!r}")
    k = check_rank(k, m=sketch.m, n=n, d=d)
    others = {"sparse": sparse_random(n, sketch.m, seed=sparse_seed), "dense": dense_random(n, sketch.m, seed=dense_seed)}
    if sketch.meta.get("m_learned"):
        others["half"] = random_half(sketch)
    A = A.to(dev)
    s1, opt = (x.cpu() for x in optimal_errors(A, k))
    errs = {name: [] for name in others}
    for i in range(0, s, batch_size):
        for name, other in others.items():
            # The production apply, as the sketch under test was applied: uint8 tiles, the residual's sums in float64.
            errs[name].append(apply_sketch(other, A[i : i + batch_size], k, dtype="float32", device=dev).errors)
    scale = torch.where(s1 > 0, 1.0 / torch.where(s1 > 0, s1, torch.ones_like(s1)), torch.zeros_like(s1))

    def gap(err: torch.Tensor) -> torch.Tensor:
        return (err - opt) * scale  # (s,) per-frame gaps, sigma_1-normalised

    d_sketch = gap(own)
    per_frame = {name: gap(torch.cat(e)) for name, e in errs.items()}
    stats = {name: _mean_se(x, int(population)) for name, x in {"sketch": d_sketch, **per_frame}.items()}
    half = stats.get("half")
    return SampleScore(
        frames=int(population),
        sample=int(s),
        k=k,
        m=int(sketch.m),
        optimal_error=float((opt * scale).mean()),
        gap_sketch=stats["sketch"][0],
        gap_sparse_random=stats["sparse"][0],
        gap_dense_random=stats["dense"][0],
        gap_random_half=half[0] if half else None,
        se_sketch=stats["sketch"][1],
        se_sparse_random=stats["sparse"][1],
        se_dense_random=stats["dense"][1],
        se_random_half=half[1] if half else None,
        se_difference=_mean_se(d_sketch - per_frame["sparse"], int(population))[1],
        sparse_seed=int(sparse_seed),
        dense_seed=int(dense_seed),
        device=str(dev),
    )
