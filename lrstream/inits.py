"""Data-dependent starting points for sketches: where learning begins matters.

Gradient descent on the SCW loss only moves values; it cannot move a
CountSketch nonzero to another row, and for a dense sketch it converges to
the nearest of many local optima. These functions build starting points from
the training matrices A_i (n, d), each already scaled to sigma_1 = 1:

* :func:`top_subspace` (the "tensor-based" sketch of Liu, Xiao, Ding & Yang,
  ICLR 2023): S = U_m^T with U_m the top-m eigenvectors of sum_i A_i A_i^T.
  For a single matrix this is the optimal sketch, since rowspace(SA)
  contains A's top right singular space; over a distribution it is the
  best m-dim subspace on average in the Frobenius sense, but not the
  minimiser of the SCW error, which learning then refines.
* :func:`select_spectral` (lrstream's own): S = U_m^T with U_m the top-m
  eigenvectors of the weighted spectral Gram

      G(p, h) = sum_i w_i (A_i A_i^T)^{p/2} = sum_i w_i U_i diag(sigma_i^p) U_i^T,
      w_i = 2^{-(N-1-i) / (h N)}   (i = 0 oldest, ..., N-1 newest),

  with the power p and the half-life h (a fraction of the window; None =
  no decay) chosen from small grids by forward validation. p = 2, h = None
  is the tensor sketch. Why it can win: a sketch serves the *next* matrices
  of a stream, which resemble the recent past more than the average past
  (h < inf); and the SCW error only asks rowspace(SA) to hold each matrix's
  top-k right singular space, so sigma^2 weighting can let the few
  directions every matrix shares crowd out the secondary ones each matrix
  needs (p < 2 flattens that). Neither helps on every dataset, hence the
  validation.
* :func:`greedy_positions` (Li, Lin, Liu, Vakilian & Woodruff, ICLR 2023,
  "Learning the Positions in CountSketch"): visit the columns of S in a
  random order; the first m take distinct rows; every later column i tries
  every row j and every value g on a grid and keeps the pair that minimises
  the rank-k SCW error on sampled training matrices.

The greedy step is evaluated without recomputing SCW for each of the m x G
candidates. All candidates for column i only change row j of SA by g a_i^T
(a_i = row i of A), so every candidate row space lies in the (m+1)-dim span
of the rows of SA and a_i. With B (d, m+1) an orthonormal basis of that span,
X = SA B and y = a_i B its coordinates, and M = (A B)^T (A B):

    ||A - [A P]_k||_F^2 = ||A||_F^2 - sum of the k largest eigenvalues of Q^T M Q,

where Q ((m+1), r) is an orthonormal basis of rowspace(X + g e_j y^T). Each
candidate then costs O(m^3) instead of O(n d m), and one column costs one
(n, d) x (d, m+1) product per sampled matrix.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import UsageError
from .sketch import DenseSketch


def gram_sum(A: torch.Tensor, batch_size: int = 8, weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_i w_i A_i A_i^T in float64: (n, n), w_i = 1 by default. Additive over any split of the matrices, so workers can each sum their share."""
    n = A.shape[-2]
    gram = torch.zeros(n, n, dtype=torch.float64, device=A.device)  # (n, n)
    for i in range(0, A.shape[0], batch_size):
        X = A[i : i + batch_size].to(torch.float64)  # (b, n, d)
        if weights is None:
            gram += (X @ X.mT).sum(0)
        else:
            gram += torch.einsum("b,bnm->nm", weights[i : i + batch_size].to(gram), X @ X.mT)
    return gram


def top_eigenvectors(gram: torch.Tensor, m: int) -> torch.Tensor:
    """S (m, n): the top-m eigenvectors of a symmetric (n, n) matrix, in descending order of eigenvalue."""
    n = gram.shape[-1]
    if not 1 <= m <= n:
        raise UsageError(f"m={m} must lie in [1, n={n}]")
    _, U = torch.linalg.eigh(gram.cpu())  # ascending eigenvalues
    return U[:, -m:].flip(-1).mT.contiguous()  # (m, n)


def top_subspace(A: torch.Tensor, m: int, batch_size: int = 8) -> torch.Tensor:
    """S (m, n): the top-m eigenvectors of sum_i A_i A_i^T, in descending order.

    Args:
        A: (N, n, d) matrices, already scaled as the caller wants them weighted.
        m: rows, 1 <= m <= n.
    """
    if not 1 <= m <= A.shape[-2]:
        raise UsageError(f"m={m} must lie in [1, n={A.shape[-2]}]")
    return top_eigenvectors(gram_sum(A, batch_size), m)


_TERMS_BYTES = 2 << 30  # per-matrix spectral terms are kept in memory up to 2 GiB


def recency_weights(count: int, half_life: float | None) -> torch.Tensor:
    """w_i = 2^{-(count-1-i) / (half_life * count)}, float64 (count,): the newest matrix weighs 1; None gives all ones."""
    if half_life is None:
        return torch.ones(count, dtype=torch.float64)
    if not half_life > 0:
        raise UsageError(f"half_life must be positive (a fraction of the training window) or None, got {half_life}")
    age = torch.arange(count - 1, -1, -1, dtype=torch.float64)  # (count,): 0 for the newest
    return torch.exp2(-age / (half_life * count))


def _spectra(A: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors (N, n, r) and singular values (N, r) of every matrix, float64."""
    Us, ss = [], []
    for i in range(0, A.shape[0], batch_size):
        U, s, _ = torch.linalg.svd(A[i : i + batch_size].to(torch.float64), full_matrices=False)  # (b, n, r), (b, r)
        Us.append(U)
        ss.append(s)
    return torch.cat(Us), torch.cat(ss)


def _weighted_gram(U: torch.Tensor, c: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """sum_i U_i diag(c_i) U_i^T (n, n) for c (N, r) >= 0, as GEMMs over chunks of matrices."""
    N, n, r = U.shape
    G = torch.zeros(n, n, dtype=torch.float64, device=U.device)
    for i in range(0, N, batch_size):
        X = U[i : i + batch_size] * c[i : i + batch_size, None, :].sqrt()  # (b, n, r)
        Y = X.transpose(0, 1).reshape(n, -1)  # (n, b r)
        G += Y @ Y.mT
    return G


def spectral_gram(A: torch.Tensor, power: float = 2.0, weights: torch.Tensor | None = None, batch_size: int = 8) -> torch.Tensor:
    """sum_i w_i (A_i A_i^T)^{power/2}, float64 (n, n), on A's device.

    Power 2 needs no SVD: it is :func:`gram_sum` with the weights.

    Args:
        A: (N, n, d) matrices, scaled to sigma_1 = 1.
        power: p > 0, the exponent applied to each matrix's singular values.
        weights: (N,) non-negative, e.g. :func:`recency_weights`; default all ones.
    """
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64, device=A.device)
    if power == 2.0:
        return gram_sum(A, batch_size, w)
    if w is None:
        w = torch.ones(A.shape[0], dtype=torch.float64, device=A.device)
    U, s = _spectra(A, batch_size)
    return _weighted_gram(U, s**power * w[:, None], batch_size)


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

    The matrices are taken in time order, oldest first. Fold j fits every
    candidate on the first c_j = N - (j+1) H matrices (H = ``horizon``,
    default a tenth of N) and scores it by the rank-k SCW gap on the next H,
    as deployment would use it; a candidate's score is its gap divided by
    the fold's mean gap over all candidates, averaged over the folds (one
    fold alone is too noisy to choose by). The winner is then computed on
    all N matrices. With one candidate, or data too short for a fold, that
    candidate (the first of each grid) is used unvalidated.

    Returns:
        S (m, n) with orthonormal rows, and a record: the chosen power and
        half-life, and every candidate's score.
    """
    N, n, d = A.shape
    if not 1 <= k <= m <= min(n, d):
        raise UsageError(f"need 1 <= k <= m <= min(n, d); got k={k}, m={m}, n={n}, d={d}")
    if not powers or not half_lives:
        raise UsageError("select_spectral needs at least one power and one half-life")
    if horizon is not None and horizon < 1:
        raise UsageError(f"horizon must be at least one matrix, got {horizon}")
    H = max(1, round(0.1 * N)) if horizon is None else int(horizon)
    cuts = [N - H * (j + 1) for j in range(folds) if N - H * (j + 1) >= max(H, 1)]  # each fold fits on >= H matrices
    grid = [(float(p), None if h is None else float(h)) for p in powers for h in half_lives]
    U, s = _spectra(A, batch_size)  # (N, n, r), (N, r)
    # Every candidate Gram is a weighted sum of the per-matrix terms U_i diag(sigma_i^p) U_i^T: with
    # those (N, n, n) kept for one power at a time, each (cut, half-life) costs N n^2, not N n^2 r.
    # Scoring only ranks candidates, so the terms drop to float32 where float64 would not fit.
    terms_dtype = next((t for t in (torch.float64, torch.float32) if N * n * n * t.itemsize <= _TERMS_BYTES), None)

    def grams(p: float) -> Callable[[int, float | None], torch.Tensor]:
        if terms_dtype is not None:
            terms = torch.stack([_weighted_gram(U[i : i + 1], s[i : i + 1] ** p).to(terms_dtype) for i in range(N)])  # (N, n, n)
            return lambda count, h: torch.einsum("i,inm->nm", recency_weights(count, h).to(terms_dtype), terms[:count]).double()
        return lambda count, h: _weighted_gram(U[:count], s[:count] ** p * recency_weights(count, h)[:, None], batch_size)

    scores = {c: 0.0 for c in grid}
    if len(grid) > 1 and cuts:
        from .scw import sketch_errors  # scw builds on sketches; imported here to keep inits light

        gaps = {cut: {} for cut in cuts}
        for p in dict.fromkeys(c[0] for c in grid):
            gram = grams(p)
            for cut in cuts:
                optimal = s[cut : cut + H, k:].square().sum(-1).sqrt().mean()  # Eckart-Young, mean over the fold
                for h in dict.fromkeys(c[1] for c in grid):
                    S = top_eigenvectors(gram(cut, h), m)
                    gaps[cut][(p, h)] = float(sketch_errors(DenseSketch(S), A[cut : cut + H], k).mean() - optimal)
        for cut in cuts:
            mean = sum(gaps[cut].values()) / len(grid)
            for c in grid:
                scores[c] += gaps[cut][c] / mean / len(cuts)
    best = min(grid, key=lambda c: scores[c])  # ties keep grid order, so the first candidate wins them
    record = {
        "power": best[0],
        "half_life": best[1],
        "folds": len(cuts) if len(grid) > 1 else 0,
        "horizon": H,
        "scores": [[p, h, scores[(p, h)]] for p, h in grid],
    }
    final = _weighted_gram(U, s ** best[0] * recency_weights(N, best[1])[:, None], batch_size)  # (n, n), float64 throughout
    return top_eigenvectors(final, m), record


def _candidate_losses(X: torch.Tensor, y: torch.Tensor, M: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    """-(sum of the top-k eigenvalues of Q^T M Q) for every (row j, value g); shape (m, G).

    X (m, r) and y (r,) are coordinates in an orthonormal basis of dimension
    r = m + 1; M (r, r) is the Gram matrix of A in that basis.
    """
    m, r = X.shape
    G = grid.shape[0]
    cand = X.expand(m, G, m, r).clone()  # (m, G, m, r): candidate (j, g) adds g y to row j
    idx = torch.arange(m)
    cand[idx, :, idx, :] += grid[None, :, None] * y  # (m, G, r)
    _, s, Vh = torch.linalg.svd(cand, full_matrices=False)  # Vh (m, G, m, r)
    keep = (s > s[..., :1] * (r * torch.finfo(s.dtype).eps * 10)).to(X.dtype)  # (m, G, m)
    Q = Vh.mT * keep.unsqueeze(-2)  # (m, G, r, m)
    K = Q.mT @ M @ Q  # (m, G, m, m)
    top = torch.linalg.eigvalsh(K)[..., -k:].sum(-1)  # (m, G)
    return -top


def greedy_positions(
    A: torch.Tensor, m: int, k: int, *, samples: int = 1, grid: int = 10, seed: int = 0, order: str = "random"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy position (and value) search for a CountSketch; returns positions (n,) and values (n,).

    Args:
        A: (N, n, d) training matrices, scaled to sigma_1 = 1.
        m, k: sketch rows and target rank.
        samples: training matrices the error is averaged over (the paper uses 1).
        grid: number of candidate values, evenly spaced in [-1, 1] (the paper's 10).
        seed: fixes the sampled matrices, the visiting order and the first m values.
        order: "random" (the paper's default) or "norm" (decreasing total row norm).
    """
    N, n, d = A.shape
    if not 1 <= k <= m <= min(n, d):
        raise UsageError(f"need 1 <= k <= m <= min(n, d); got k={k}, m={m}, n={n}, d={d}")
    if order not in ("random", "norm"):
        raise UsageError(f"unknown order {order!r}; choose random or norm")
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randperm(N, generator=g)[: max(1, min(int(samples), N))]
    S = A[pick].to(torch.float64)  # (s, n, d)
    if order == "random":
        visit = torch.randperm(n, generator=g)
    else:
        visit = torch.argsort(S.square().sum((0, 2)), descending=True)
    values_grid = torch.linspace(-1.0, 1.0, int(grid), dtype=torch.float64)  # (G,)
    pos = torch.zeros(n, dtype=torch.long)
    val = torch.zeros(n, dtype=torch.float64)
    first = visit[:m]
    pos[first] = torch.arange(m)
    val[first] = torch.randint(0, 2, (m,), generator=g).to(torch.float64) * 2 - 1
    SA = torch.zeros(S.shape[0], m, d, dtype=torch.float64)  # (s, m, d)
    SA[:, torch.arange(m)] = S[:, first] * val[first, None]
    for i in visit[m:].tolist():
        total = torch.zeros(m, values_grid.shape[0], dtype=torch.float64)  # (m, G)
        for t in range(S.shape[0]):
            a = S[t, i]  # (d,)
            B, _ = torch.linalg.qr(torch.cat([SA[t], a[None]]).mT)  # (d, m+1)
            AB = S[t] @ B  # (n, m+1)
            total += _candidate_losses(SA[t] @ B, a @ B, AB.mT @ AB, values_grid, k)
        j, gi = divmod(int(torch.argmin(total)), values_grid.shape[0])
        pos[i], val[i] = j, values_grid[gi]
        SA[:, j] += val[i] * S[:, i]
    return pos, val
