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
* :func:`spectral_gram` (lrstream's own; chosen by forward validation in
  :mod:`lrstream.numerics.spectral`): S = U_m^T with U_m the top-m
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
* greedy positions (Li et al., ICLR 2023): :mod:`lrstream.numerics.greedy`.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import UsageError

# A start computed over matrices split into shares (one per worker) reaches them through a
# gather: gather(method, *args) returns that method's result from every share, in rank order.
Gather = Callable[..., list]


def local_gather(shares: list) -> Gather:
    """A gather over shares held in this process."""
    return lambda method, *args: [getattr(share, method)(*args) for share in shares]


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
