"""Differentiable linear-algebra building blocks for sketched low-rank approximation.

Two quantities make every loss in lrstream, and both are ill-conditioned when
differentiated naively:

* the orthonormal basis Q of the row space of B = SA. Differentiating
  Householder QR divides by the diagonal of R, which is zero for rank-deficient
  B (empty buckets, duplicate rows, all-zero frames). :class:`_RowSpaceBasis`
  uses the projector identity instead: for P = Q Q^T and B with pseudo-inverse
  B^+, dP = (I - P) dB^T (B^+)^T + transpose, so the gradient of any loss that
  depends on Q only through its span is ``T G_Q^T (I - Q Q^T)`` with
  Q = B^T T. No division by a singular value of B ever happens beyond the
  rank cut-off.
* the projector onto the top-k eigenvectors of a symmetric M. Its derivative
  couples only a kept eigenvector i with a dropped one j, through
  1 / (lambda_i - lambda_j); ties *inside* the kept or dropped sets (repeated
  singular values) contribute nothing, and a tie *across* the cut-off (where
  the function has no derivative) is given the zero subgradient.

All functions are batched over leading dimensions and work on CPU and CUDA.
"""

from __future__ import annotations

import torch

# Relative rank cut-off, in units of the dtype's machine epsilon times the
# largest dimension, as in numpy.linalg.matrix_rank.
_RANK_RTOL_FACTOR = 1.0


def _rank_tol(x: torch.Tensor, smax: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(x.dtype).eps
    return smax * (max(x.shape[-2:]) * eps * _RANK_RTOL_FACTOR)


def _basis_and_dual(B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (Q, T) with Q = B^T T an orthonormal basis of rowspace(B).

    B is (..., m, d) with m <= d. Columns of Q (and T) beyond the numerical
    rank are exactly zero, so Q always has m columns and shapes stay static.
    Rows are normalised first: the row space does not change, and a bucket
    whose rows happen to carry little energy is not mistaken for a dependent
    one by the rank cut-off.
    """
    norms = B.norm(dim=-1, keepdim=True)  # (..., m, 1)
    inv_norms = torch.where(norms > 0, 1.0 / norms.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(norms))
    Bn = B * inv_norms  # (..., m, d)
    U, s, Vh = torch.linalg.svd(Bn, full_matrices=False)  # (..., m, m), (..., m), (..., m, d)
    keep = s > _rank_tol(Bn, s[..., :1])  # (..., m)
    s_inv = torch.where(keep, 1.0 / s.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(s))
    Q = Vh.mT * keep.to(B.dtype).unsqueeze(-2)  # (..., d, m)
    # Bn = U diag(s) Vh and Bn = D B, so Q = B^T D U diag(1/s) on the kept part.
    T = inv_norms * (U * s_inv.unsqueeze(-2))  # (..., m, m)
    return Q, T


class _RowSpaceBasis(torch.autograd.Function):
    @staticmethod
    def forward(ctx, B):
        Q, T = _basis_and_dual(B)
        ctx.save_for_backward(Q, T)
        return Q

    @staticmethod
    def backward(ctx, gQ):
        Q, T = ctx.saved_tensors
        # dQ = (I - QQ^T) dB^T T + Q*skew; the skew part is invisible to any
        # loss that depends on span(Q) only, which is every loss here.
        gQt = gQ.mT  # (..., m, d)
        residual = gQt - (gQt @ Q) @ Q.mT  # (..., m, d)
        return T @ residual


def row_space_basis(B: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the row space of B, differentiable and rank-safe.

    Args:
        B: (..., m, d) with m <= d.

    Returns:
        Q: (..., d, m) with orthonormal columns spanning rowspace(B); columns
        past the numerical rank are zero. Its gradient is the span-only
        gradient derived in the module docstring; use it only in losses that
        are invariant to rotations of Q (all SCW losses are).
    """
    return _RowSpaceBasis.apply(B)


def gram_basis(B: torch.Tensor, passes: int = 2) -> torch.Tensor:
    """Orthonormal basis of rowspace(B) from m x m Gram matrices only (inference; no autograd).

    With X = B^T (d, m) and X^T X = U diag(lam) U^T, the columns of
    X U diag(lam)^(-1/2) are orthonormal and span the row space; directions
    with lam <= lam_max * m * eps are dropped (their columns set to zero),
    since below that level the Gram matrix holds only rounding. Squaring the
    condition number costs orthogonality, so further passes follow
    (CholeskyQR2-style): the first pass leaves X^T X = I + O(cond(B)^2 eps)
    on the kept columns, with cond(B)^2 <= 1 / (m eps) by the cutoff, so a
    Cholesky factor R of it exists and X R^-1 is orthonormal to working
    precision. Dropped columns are exactly zero; they get a unit pivot and
    stay zero. Those passes use Cholesky rather than a second eigh because
    torch's eigh checks convergence on the host: one device sync less per
    batch (on an H100, SCW at batch 512 went from 60,100 to 65,915 frames/s). Cost: about three (d, m) x (m, m)
    products, one m x m eigh and one m x m Cholesky per matrix, against an
    SVD of a (m, d) matrix for :func:`row_space_basis`, which is what makes it
    fast on GPUs.

    Args:
        B: (..., m, d) with m <= d.
        passes: orthonormalisation passes, >= 1 (the first by eigh, the rest by Cholesky).

    Returns:
        Q: (..., d, m), orthonormal columns spanning rowspace(B), zero past its rank.
    """
    norms = B.norm(dim=-1, keepdim=True)  # (..., m, 1)
    X = (B * torch.where(norms > 0, 1.0 / norms.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(norms))).mT  # (..., d, m)
    cutoff = B.shape[-2] * torch.finfo(B.dtype).eps
    lam, U = torch.linalg.eigh(X.mT @ X)  # (..., m), (..., m, m)
    keep = lam > lam[..., -1:] * cutoff
    X = X @ (U * torch.where(keep, lam.clamp_min(torch.finfo(B.dtype).tiny).rsqrt(), torch.zeros_like(lam)).unsqueeze(-2))  # (..., d, m)
    for _ in range(passes - 1):
        G = X.mT @ X  # (..., m, m), I + small on kept columns, 0 on dropped ones
        G = G + torch.diag_embed((G.diagonal(dim1=-2, dim2=-1) == 0).to(G.dtype))
        R, _ = torch.linalg.cholesky_ex(G, upper=True)  # (..., m, m); _ex: no host sync
        X = torch.linalg.solve_triangular(R, X, upper=True, left=False)  # X R^-1
    return X


class _TopKProjector(torch.autograd.Function):
    @staticmethod
    def forward(ctx, M, k):
        lam, W = torch.linalg.eigh(M)  # ascending: (..., r), (..., r, r)
        Wk = W[..., -k:]  # (..., r, k)
        ctx.save_for_backward(lam, W)
        ctx.k = k
        return Wk @ Wk.mT

    @staticmethod
    def backward(ctx, G):
        lam, W = ctx.saved_tensors
        k = ctx.k
        r = lam.shape[-1]
        Gs = 0.5 * (G + G.mT)
        Gw = W.mT @ Gs @ W  # (..., r, r)
        top = torch.zeros(r, dtype=torch.bool, device=lam.device)
        top[r - k :] = True
        cross = (~top).unsqueeze(-1) & top.unsqueeze(-2)  # [j tail, i top]
        gap = lam.unsqueeze(-2) - lam.unsqueeze(-1)  # [j, i] = lam_i - lam_j
        scale = lam.abs().amax(dim=-1, keepdim=True).unsqueeze(-1)
        tol = scale * (r * torch.finfo(lam.dtype).eps * 10) + torch.finfo(lam.dtype).tiny
        ok = cross & (gap > tol)
        K = torch.where(ok, 2.0 * Gw / torch.where(ok, gap, torch.ones_like(gap)), torch.zeros_like(Gw))
        gM = W @ K @ W.mT
        return 0.5 * (gM + gM.mT), None


def top_k_projector(M: torch.Tensor, k: int) -> torch.Tensor:
    """Projector W_k W_k^T onto the top-k eigenvectors of a symmetric M.

    Args:
        M: (..., r, r) symmetric positive semi-definite.
        k: 1 <= k <= r.

    Returns:
        (..., r, r) projector. Gradients stay finite with repeated or zero
        eigenvalues (see the module docstring).
    """
    return _TopKProjector.apply(M, k)


def singular_values(A: torch.Tensor) -> torch.Tensor:
    """Singular values of each matrix, descending: (..., n, d) -> (..., min(n, d))."""
    return torch.linalg.svdvals(A)


def sigma1(A: torch.Tensor) -> torch.Tensor:
    """Top singular value of each matrix: (..., n, d) -> (...)."""
    return torch.linalg.matrix_norm(A, ord=2)


def sigma1_estimate(A: torch.Tensor, iters: int = 8, block: int = 4, seed: int = 0) -> torch.Tensor:
    """Top singular value by block subspace iteration: (..., n, d) -> (...).

    X <- orth(A^T A X) for ``iters`` rounds from a seeded Gaussian (d, block)
    start, then sigma_1(A X) (Rayleigh-Ritz). It never exceeds sigma_1 and its
    relative error decays like (sigma_{block+1} / sigma_1)^(4 iters); for
    natural images, where sigma_1 (the mean image) dominates, it is exact to
    float precision at a small fraction of a full SVD's cost. Used to scale
    training data, where a full SVD per matrix per epoch would dominate.
    """
    d = A.shape[-1]
    b = min(block, d)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, b, generator=g, dtype=A.dtype).to(A.device).expand(*A.shape[:-2], d, b)  # (..., d, b)
    for _ in range(iters):
        X, _ = torch.linalg.qr(A.mT @ (A @ X))  # (..., d, b)
    return torch.linalg.matrix_norm(A @ X, ord=2)


def normalize_by_sigma1(A: torch.Tensor, s1: torch.Tensor | None = None) -> torch.Tensor:
    """Scale each matrix so that its top singular value is 1 (zero matrices stay zero)."""
    if s1 is None:
        s1 = sigma1(A)
    scale = torch.where(s1 > 0, 1.0 / s1.clamp_min(torch.finfo(A.dtype).tiny), torch.zeros_like(s1))
    return A * scale[..., None, None]


def optimal_error(s: torch.Tensor, k: int) -> torch.Tensor:
    """Eckart-Young: ||A - [A]_k||_F = sqrt(sum_{i>k} sigma_i^2), from descending singular values (..., r)."""
    return s[..., k:].square().sum(-1).sqrt()


def normalize_batch(A: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Scale each matrix of (N, n, d) to sigma_1 = 1, sigma_1 estimated by :func:`sigma1_estimate` in chunks of ``chunk`` matrices."""
    s1 = torch.cat([sigma1_estimate(A[i : i + chunk]) for i in range(0, A.shape[0], chunk)])  # (N,)
    return normalize_by_sigma1(A, s1)
