"""The spectral start, chosen by forward validation, over matrices that may be split into shares.

S = U_m^T with U_m the top-m eigenvectors of the weighted spectral Gram

    G(p, h) = sum_i w_i (A_i A_i^T)^{p/2} = sum_i w_i U_i diag(sigma_i^p) U_i^T,
    w_i = 2^{-(N-1-i) / (h N)}   (i = 0 oldest, ..., N-1 newest),

with (p, h) chosen from small grids (see :mod:`lrstream.numerics.starts`).
Fold j fits every candidate on the first c_j = N - (j+1) H matrices and
scores it by the rank-k SCW gap on the next H. Every quantity involved is a
sum over matrices, so the matrices can sit in shares (one per worker, each
knowing the time positions of its rows): a share returns its partial
candidate Grams (:meth:`SpectralShare.fold_grams`) and then its partial error
sums (:meth:`SpectralShare.fold_errors`), and :func:`select_spectral_from`
adds them up. :func:`select_spectral` is the one-share case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UsageError
from .scw import sketch_errors
from .sketch import DenseSketch
from .starts import Gather, _spectra, _weighted_gram, local_gather, recency_weights, spectral_gram, top_eigenvectors

_TERMS_BYTES = 2 << 30  # a share keeps its per-matrix spectral terms in memory up to 2 GiB

Candidate = tuple[float, float | None]  # (power, half-life)


@dataclass(frozen=True)
class FoldPlan:
    """The forward-validation folds over N matrices: fold cut c scores on matrices [c, c + horizon)."""

    total: int
    k: int
    m: int
    horizon: int
    cuts: tuple[int, ...]
    grid: tuple[Candidate, ...]

    @property
    def powers(self) -> tuple[float, ...]:
        return tuple(dict.fromkeys(p for p, _ in self.grid))

    @property
    def half_lives(self) -> tuple[float | None, ...]:
        return tuple(dict.fromkeys(h for _, h in self.grid))

    @property
    def validated(self) -> bool:
        return len(self.grid) > 1 and bool(self.cuts)


def fold_plan(total: int, k: int, m: int, powers, half_lives, folds: int = 3, horizon: int | None = None) -> FoldPlan:
    if not powers or not half_lives:
        raise UsageError("select_spectral needs at least one power and one half-life")
    if horizon is not None and horizon < 1:
        raise UsageError(f"horizon must be at least one matrix, got {horizon}")
    H = max(1, round(0.1 * total)) if horizon is None else int(horizon)
    cuts = tuple(total - H * (j + 1) for j in range(folds) if total - H * (j + 1) >= max(H, 1))  # each fold fits on >= H matrices
    grid = tuple((float(p), None if h is None else float(h)) for p in powers for h in half_lives)
    return FoldPlan(total, k, m, H, cuts, grid)


class SpectralShare:
    """Some of the training matrices, A (N_s, n, d) scaled to sigma_1 = 1, at time positions ``rows`` (N_s,) of all N."""

    def __init__(self, A: torch.Tensor, rows: torch.Tensor, batch_size: int = 8):
        self.A, self.rows, self.batch_size = A, torch.as_tensor(rows, dtype=torch.long), batch_size
        self._U = self._s = None

    def _spectra(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._U is None:
            self._U, self._s = _spectra(self.A, self.batch_size)  # (N_s, n, r), (N_s, r)
        return self._U, self._s

    def fold_grams(self, power: float, plan: FoldPlan) -> dict[tuple[int, float | None], torch.Tensor]:
        """This share's part of G(power, h) fitted on the first c matrices, for every fold cut c and half-life h: (n, n) float64 each."""
        U, s = self._spectra()
        N_s, n = U.shape[0], U.shape[1]
        # Every candidate Gram is a weighted sum of the per-matrix terms U_i diag(sigma_i^p) U_i^T: with
        # those (N_s, n, n) kept, each (cut, half-life) costs N_s n^2, not N_s n^2 r. Scoring only ranks
        # candidates, so the terms drop to float32 where float64 would not fit.
        terms_dtype = next((t for t in (torch.float64, torch.float32) if N_s * n * n * t.itemsize <= _TERMS_BYTES), None)
        terms = None
        if terms_dtype is not None:
            terms = torch.stack([_weighted_gram(U[i : i + 1], s[i : i + 1] ** power).to(terms_dtype) for i in range(N_s)]) if N_s else None
        out = {}
        for cut in plan.cuts:
            used = self.rows < cut  # (N_s,)
            for h in plan.half_lives:
                w = recency_weights(cut, h)[self.rows[used]]  # ages counted back from the fold's newest matrix
                if not bool(used.any()):
                    out[(cut, h)] = torch.zeros(n, n, dtype=torch.float64)
                elif terms is not None:
                    out[(cut, h)] = torch.einsum("i,inm->nm", w.to(terms_dtype), terms[used]).double()
                else:
                    out[(cut, h)] = _weighted_gram(U[used], s[used] ** power * w[:, None], self.batch_size)
        return out

    def fold_errors(self, candidates: dict[tuple[float, float | None, int], torch.Tensor], plan: FoldPlan) -> tuple[dict, dict]:
        """Sums over this share's matrices in each fold's horizon: SCW errors per candidate (p, h, cut), optimal errors per cut."""
        _, s = self._spectra()
        errors, optimal = {}, {}
        for cut in plan.cuts:
            inside = (self.rows >= cut) & (self.rows < cut + plan.horizon)
            optimal[cut] = float(s[inside, plan.k :].square().sum(-1).sqrt().sum())  # Eckart-Young
            for (p, h, c), S in candidates.items():
                if c == cut:
                    errors[(p, h, c)] = float(sketch_errors(DenseSketch(S), self.A[inside], plan.k).sum()) if bool(inside.any()) else 0.0
        return errors, optimal

    def gram(self, power: float, half_life: float | None, total: int) -> torch.Tensor:
        """This share's part of G(power, half_life) over all ``total`` matrices: (n, n) float64."""
        return spectral_gram(self.A, power, recency_weights(total, half_life)[self.rows], self.batch_size).cpu()


def select_spectral_from(gather: Gather, plan: FoldPlan) -> tuple[torch.Tensor, dict]:
    """S (m, n) and the selection record, from shares reached through ``gather`` (SpectralShare's method names).

    A candidate's score is its gap divided by the fold's mean gap over all
    candidates, averaged over the folds (one fold alone is too noisy to
    choose by). With one candidate, or data too short for a fold, that
    candidate (the first of each grid) is used unvalidated.
    """
    scores = {c: 0.0 for c in plan.grid}
    if plan.validated:
        candidates = {}
        for p in plan.powers:
            parts = gather("fold_grams", p, plan)
            for cut in plan.cuts:
                for h in plan.half_lives:
                    candidates[(p, h, cut)] = top_eigenvectors(sum(part[(cut, h)] for part in parts), plan.m)
        errs, opts = zip(*gather("fold_errors", candidates, plan))
        for cut in plan.cuts:
            optimal = sum(o[cut] for o in opts) / plan.horizon
            gaps = {(p, h): sum(e[(p, h, cut)] for e in errs) / plan.horizon - optimal for p, h in plan.grid}
            mean = sum(gaps.values()) / len(plan.grid)
            for c in plan.grid:
                scores[c] += gaps[c] / mean / len(plan.cuts)
    best = min(plan.grid, key=lambda c: scores[c])  # ties keep grid order, so the first candidate wins them
    record = {
        "power": best[0],
        "half_life": best[1],
        "folds": len(plan.cuts) if len(plan.grid) > 1 else 0,
        "horizon": plan.horizon,
        "scores": [[p, h, scores[(p, h)]] for p, h in plan.grid],
    }
    final = sum(gather("gram", best[0], best[1], plan.total))  # (n, n), float64 throughout
    return top_eigenvectors(final, plan.m), record


def select_spectral(
    A: torch.Tensor,
    k: int,
    m: int,
    powers: tuple[float, ...] = (2.0, 1.5, 1.0),
    half_lives: tuple[float | None, ...] = (None, 1.0, 0.5, 0.25),
    folds: int = 3,
    horizon: int | None = None,
    batch_size: int = 8,
) -> tuple[torch.Tensor, dict]:
    """S (m, n) = top-m eigenvectors of G(p, h) (module docstring), with (p, h) chosen by forward validation.

    Args:
        A: (N, n, d) matrices in time order, oldest first, scaled to sigma_1 = 1.
        k, m: rank and sketch rows, 1 <= k <= m <= min(n, d).
        horizon: matrices each fold scores on (default a tenth of N).

    Returns:
        S (m, n) with orthonormal rows, and a record: the chosen power and
        half-life, and every candidate's score.
    """
    N, n, d = A.shape
    if not 1 <= k <= m <= min(n, d):
        raise UsageError(f"need 1 <= k <= m <= min(n, d); got k={k}, m={m}, n={n}, d={d}")
    plan = fold_plan(N, k, m, powers, half_lives, folds, horizon)
    return select_spectral_from(local_gather([SpectralShare(A, torch.arange(N), batch_size)]), plan)
