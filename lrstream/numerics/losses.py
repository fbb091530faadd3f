"""Training losses of a sketch, differentiable in its values.

For one matrix A (n, d), sketch S and the SCW output A_hat = [AQ]_k Q^T:

* ``fro``  : ||A - A_hat||_F, the IVY19 loss (the metric's own norm). Computed
  without the residual through the exact identity
  ||A - A_hat||_F^2 = ||A||_F^2 - sum_{i<=k} lambda_i((AQ)^T AQ),
  whose gradient only needs the eigenvalues of an r x r matrix: the backward
  of eigenvalues is W diag(g) W^T, free of eigen-gap divisions.
* ``v``    : sum_i ||(A - A_hat)_i||_2, the row-wise "V-norm".
* ``wfro`` : sqrt(sum_ij W_ij (A - A_hat)_ij^2) for a nonnegative weight W (n, d).

``v`` and ``wfro`` need the residual itself, built from the top-k projector
of (AQ)^T AQ with the tie-safe backward of :mod:`lrstream.linalg`.

Two routes:

* ``exact`` (default): rank-safe row-space basis, symmetric eigen-solves.
* ``power``: the papers' unrolled power method with deflation, ``iters``
  iterations per singular vector, differentiated by autograd through the
  iterations. Slower and approximate; kept for fidelity with IVY19.

Square roots are taken as sqrt(max(x, eps * ||A||_F^2)) so that a frame that
the sketch reconstructs exactly (e.g. an all-zero frame) has a zero, finite
gradient instead of 1/0.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .linalg import row_space_basis, top_k_projector
from .sketch import Sketch

LOSSES = ("fro", "v", "wfro")
ROUTES = ("exact", "power")


def _safe_sqrt(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    floor = scale * torch.finfo(x.dtype).eps + torch.finfo(x.dtype).tiny
    return torch.maximum(x, floor).sqrt()


def _normalize_columns(v: torch.Tensor) -> torch.Tensor:
    n = v.norm(dim=-2, keepdim=True)
    return v / n.clamp_min(torch.finfo(v.dtype).tiny)


def power_right_vectors(X: torch.Tensor, r: int, iters: int, seed: int = 0) -> torch.Tensor:
    """Top-r right singular vectors of X (..., p, q) by power iteration with deflation.

    Vector j starts from a fixed pseudo-random vector (the same on every call,
    so the unrolled map is a deterministic function of X), is iterated
    ``iters`` times as v <- X^T X v, and is kept orthogonal to the vectors
    already found (projection deflation). Returns (..., q, r).
    """
    q = X.shape[-1]
    g = torch.Generator().manual_seed(seed)
    init = torch.randn(q, r, generator=g, dtype=X.dtype).to(X.device)  # (q, r)
    found: list[torch.Tensor] = []
    for j in range(r):
        v = init[:, j : j + 1].expand(*X.shape[:-2], q, 1)  # (..., q, 1)
        for _ in range(iters):
            v = X.mT @ (X @ v)  # (..., q, 1)
            for u in found:
                v = v - u * (u.mT @ v)
            v = _normalize_columns(v)
        found.append(v)
    return torch.cat(found, dim=-1)  # (..., q, r)


def _residual(A: torch.Tensor, AQ: torch.Tensor, Q: torch.Tensor, Pk: torch.Tensor) -> torch.Tensor:
    return A - (AQ @ Pk) @ Q.mT  # (N, n, d)


def _residual_loss(R: torch.Tensor, A: torch.Tensor, loss: str, weight: torch.Tensor | None) -> torch.Tensor:
    fro2 = torch.linalg.vector_norm(A, dim=(-2, -1)).square()  # (N,)
    if loss == "fro":
        return _safe_sqrt(R.square().sum((-2, -1)), fro2)
    if loss == "v":
        row2 = R.square().sum(-1)  # (N, n)
        return _safe_sqrt(row2, fro2.unsqueeze(-1)).sum(-1)
    w = weight.to(device=R.device, dtype=R.dtype)
    return _safe_sqrt((w * R.square()).sum((-2, -1)), fro2)


def check_loss(loss: str, weight, n: int | None = None, d: int | None = None) -> None:
    if loss not in LOSSES:
        raise UsageError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if loss == "wfro":
        if weight is None:
            raise UsageError("loss 'wfro' needs a weight matrix W of shape (n, d)")
        w = torch.as_tensor(weight)
        if w.ndim != 2 or (n is not None and tuple(w.shape) != (n, d)):
            raise UsageError(f"weight must have shape (n, d) = ({n}, {d}), got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise UsageError("weight must be finite and nonnegative")


def sketch_loss(
    sketch: Sketch,
    A: torch.Tensor,
    k: int,
    loss: str = "fro",
    values: torch.Tensor | None = None,
    route: str = "exact",
    weight: torch.Tensor | None = None,
    power_iters: int = 20,
) -> torch.Tensor:
    """Per-matrix loss of SCW(S, A, k): (N, n, d) -> (N,), differentiable in ``values``.

    ``values`` replaces the sketch's stored values (a sparse sketch's (c, n)
    or a dense sketch's (m, n)); pass a tensor that requires grad to learn it.
    Inputs are assumed validated and normalised by the caller.
    """
    B = sketch.apply(A, values)  # (N, m, d)
    r = min(B.shape[-2], B.shape[-1])
    kk = min(k, r)
    if route == "exact":
        Q = row_space_basis(B)  # (N, d, r)
        AQ = A @ Q  # (N, n, r)
        M = AQ.mT @ AQ  # (N, r, r)
        if loss == "fro":
            lam = torch.linalg.eigvalsh(M)  # (N, r) ascending
            fro2 = torch.linalg.vector_norm(A, dim=(-2, -1)).square()
            return _safe_sqrt(fro2 - lam[..., -kk:].sum(-1), fro2)
        Pk = top_k_projector(M, kk)  # (N, r, r)
    elif route == "power":
        Q = power_right_vectors(B, r, power_iters)  # (N, d, r)
        AQ = A @ Q  # (N, n, r)
        Wk = power_right_vectors(AQ, kk, power_iters, seed=1)  # (N, r, k)
        Pk = Wk @ Wk.mT
    else:
        raise UsageError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    return _residual_loss(_residual(A, AQ, Q, Pk), A, loss, weight)
