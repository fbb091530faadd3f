"""Scoring a sketch on a stream of matrices next to random sketches of the same size (storage-free).

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

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..errors import DataError
from .checks import check_rank, resolve_device
from .scw import prepare, scw, sketch_errors
from .sketch import Sketch, SparseSketch, dense_random, random_half, sparse_random

SPARSE_SEED = 1_000_001
DENSE_SEED = 1_000_002


def sparse_baseline(n: int, m: int) -> SparseSketch:
    """The sparse random (CountSketch) baseline of size m x n that every report compares against."""
    return sparse_random(n, m, seed=SPARSE_SEED)


@dataclass(frozen=True)
class EvalResult:
    """Mean errors over one set of matrices (each scaled to sigma_1 = 1)."""

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
