"""The Sarlos-Clarkson-Woodruff algorithm and the error-gap metric.

SCW(S, A, k) (Clarkson & Woodruff 2009; Sarlos 2006; Algorithm 1 of Indyk,
Vakilian & Yuan, NeurIPS 2019):

1. B = SA                          (m, d)
2. Q = orthonormal basis of rowspace(B)   (d, r), r = rank(B) <= m
3. return [AQ]_k Q^T, the best rank-k approximation of A inside rowspace(B).

With AQ = U Sigma W^T, [AQ]_k Q^T = (AQ W_k)(W_k^T Q^T), so the factors are
L = AQ W_k (n, k) and R = W_k^T Q^T (k, d); W_k are the top-k eigenvectors of
the r x r matrix M = (AQ)^T AQ. Because Q is orthonormal,

    ||A - [AQ]_k Q^T||_F^2 = ||A||_F^2 - sum of the k largest eigenvalues of M,

which is what training differentiates; reported errors form the residual
explicitly (in float64 by default), which stays accurate when it is tiny.

Headline metric (IVY19): with every matrix scaled so that sigma_1 = 1,

    Err(Te, S) = mean_A ||A - SCW(S, A)||_F - mean_A ||A - [A]_k||_F.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError, UsageError
from .checks import as_batch, check_rank
from .linalg import gram_basis, normalize_by_sigma1, optimal_error, row_space_basis, singular_values
from .sketch import Sketch

METHODS = ("svd", "gram")


def _scw_eig(sketch: Sketch, A: torch.Tensor, method: str = "svd") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared body: returns (Q, AQ, eigenvalues, eigenvectors) of M = (AQ)^T AQ, ascending."""
    B = sketch.apply(A)  # (N, m, d)
    Q = row_space_basis(B) if method == "svd" else gram_basis(B)  # (N, d, r)
    AQ = A @ Q  # (N, n, r)
    lam, W = torch.linalg.eigh(AQ.mT @ AQ)  # (N, r), (N, r, r)
    return Q, AQ, lam, W


def _check_sketch_fits(sketch: Sketch, A: torch.Tensor, k: int) -> int:
    if A.shape[-2] != sketch.n:
        raise DataError(f"matrices have n={A.shape[-2]} rows but the sketch was built for n={sketch.n}")
    return check_rank(k, m=sketch.m, n=A.shape[-2], d=A.shape[-1])


def scw(sketch: Sketch, A, k: int, product: bool = False, method: str = "svd", check_finite: bool = True):
    """Rank-k approximation of A inside the row space of SA, as factors.

    Args:
        sketch: S of shape (m, n).
        A: (n, d) or (N, n, d), numpy or torch.
        k: target rank, 1 <= k <= min(m, n, d).
        product: also return the dense (…, n, d) approximation L @ R.
        method: how the row space of SA is orthonormalised: "svd" (an SVD of
            the row-normalised SA, the reference) or "gram" (two passes through
            the m x m Gram matrix, :func:`lrstream.linalg.gram_basis`; the fast
            path on GPUs, agreeing with "svd" to about sqrt(eps) relative in
            the error).
        check_finite: scan A for NaN/Inf first (DataError). Turn it off only
            for data already validated (ingest quarantines non-finite frames):
            the scan reads A once more and waits for the device.

    Returns:
        (L, R) with L (…, n, k) and R (…, k, d), leading batch dimension kept
        only if A had one; or L @ R when ``product`` is true. Columns of L are
        in decreasing order of energy.
    """
    if method not in METHODS:
        raise UsageError(f"unknown SCW method {method!r}; choose one of {', '.join(METHODS)}")
    batched = getattr(A, "ndim", 0) == 3
    A = as_batch(A, check_finite=check_finite)
    k = _check_sketch_fits(sketch, A, k)
    with torch.no_grad():
        Q, AQ, _, W = _scw_eig(sketch, A, method)
        Wk = W[..., -k:].flip(-1)  # (N, r, k)
        L = AQ @ Wk  # (N, n, k)
        R = Wk.mT @ Q.mT  # (N, k, d)
    if not batched:
        L, R = L[0], R[0]
    return L @ R if product else (L, R)


def _errors_body(sketch: Sketch, A: torch.Tensor, k: int) -> torch.Tensor:
    # The residual is formed explicitly: ||A||^2 - sum(lambda) loses half the
    # digits to cancellation when the error is tiny (A nearly inside the
    # sketched row space), and the metric must be exact there too.
    Q, AQ, _, W = _scw_eig(sketch, A)
    Wk = W[..., -k:]  # (N, r, k)
    residual = A - (AQ @ Wk) @ (Wk.mT @ Q.mT)  # (N, n, d)
    return torch.linalg.vector_norm(residual, dim=(-2, -1))


def sketch_errors(sketch: Sketch, A, k: int, batch_size: int = 8, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """||A - SCW(S, A, k)||_F for every matrix, unnormalised: (N,) in ``dtype``."""
    A = as_batch(A)
    k = _check_sketch_fits(sketch, A, k)
    out = []
    with torch.no_grad():
        for i in range(0, A.shape[0], batch_size):
            out.append(_errors_body(sketch, A[i : i + batch_size].to(dtype), k))
    return torch.cat(out)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A set of matrices normalised to sigma_1 = 1, with their singular values.

    Computing singular values dominates evaluation cost, so a test set is
    prepared once and scored against many sketches.

    Attributes:
        matrices: (N, n, d) float32, each scaled to sigma_1 = 1 (zero matrices stay 0).
        singular_values: (N, min(n, d)) float64, descending, of the scaled matrices.
    """

    matrices: torch.Tensor
    singular_values: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.matrices.shape[-2])

    def optimal_errors(self, k: int) -> torch.Tensor:
        """Eckart-Young ||A - [A]_k||_F = sqrt(sum_{i>k} sigma_i^2), per matrix: (N,)."""
        return optimal_error(self.singular_values, k)


def prepare(matrices, batch_size: int = 8) -> Prepared:
    """Normalise every matrix to sigma_1 = 1 and compute its exact singular values.

    Args:
        matrices: (N, n, d) or (n, d), numpy or torch, any real dtype (uint8 frames too).
    """
    if isinstance(matrices, Prepared):
        return matrices
    A = as_batch(matrices)
    scaled, svs = [], []
    for i in range(0, A.shape[0], batch_size):
        a = A[i : i + batch_size].to(torch.float64)  # (b, n, d)
        s = singular_values(a)  # (b, r)
        a = normalize_by_sigma1(a, s[..., 0])
        s = s / torch.where(s[..., :1] > 0, s[..., :1], torch.ones_like(s[..., :1]))
        scaled.append(a.to(torch.float32))
        svs.append(s)
    return Prepared(torch.cat(scaled), torch.cat(svs))


@dataclass(frozen=True)
class GapReport:
    """Mean errors over a test set, each matrix scaled to sigma_1 = 1."""

    k: int
    m: int
    matrices: int
    sketch_error: float
    optimal_error: float

    @property
    def gap(self) -> float:
        return self.sketch_error - self.optimal_error


def evaluate(sketch: Sketch, test, k: int, batch_size: int = 8) -> GapReport:
    """Mean SCW error and mean optimum over ``test`` (raw matrices or :class:`Prepared`)."""
    P = prepare(test)
    errs = sketch_errors(sketch, P.matrices, k, batch_size=batch_size)
    opt = P.optimal_errors(k)
    return GapReport(k, sketch.m, int(errs.shape[0]), float(errs.mean()), float(opt.mean()))


def error_gap(sketch: Sketch, test, k: int, batch_size: int = 8) -> float:
    """Err(Te, S) = mean ||A - SCW(S,A)||_F - mean ||A - [A]_k||_F, sigma_1-normalised.

    Args:
        sketch: S (m, n).
        test: (N, n, d) or (n, d) raw matrices (normalised here), or a :class:`Prepared` set.
        k: target rank.
    """
    return evaluate(sketch, test, k, batch_size).gap
