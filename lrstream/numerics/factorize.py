"""Classic low-rank tools that users compare learned sketches against.

* :func:`truncated_svd`: the Eckart-Young optimum [A]_k = U_k Sigma_k V_k^T.
* :func:`uv_factorize`: A ~ U V by gradient descent (Adam) on ||A - UV||_F^2.
* :func:`complete_matrix`: masked matrix completion, fitting U V on the
  observed entries only, with the error reported on held-out entries.

Each public function validates and then calls a private body that computes.
Inputs are numpy arrays or torch tensors of shape (n, d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UsageError
from .checks import check_rank, resolve_device


def _as_matrix(A, name: str = "A", allow_nan: bool = False) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(A)) if isinstance(A, np.ndarray) else A
    if not isinstance(t, torch.Tensor):
        raise UsageError(f"{name} must be a numpy array or a torch tensor, got {type(A).__name__}")
    if t.ndim != 2:
        raise UsageError(f"{name} must be a matrix (n, d), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise DataError(f"{name} is empty (shape {tuple(t.shape)})")
    t = t.to(torch.float64) if not t.is_floating_point() else t
    if not allow_nan and not bool(torch.isfinite(t).all()):
        raise DataError(f"{name} contains NaN or Inf")
    return t


def _check_steps(steps: int, lr: float | None) -> None:
    if int(steps) < 1:
        raise UsageError(f"steps must be >= 1, got {steps}")
    if lr is not None and not lr > 0:
        raise UsageError(f"lr must be positive, got {lr}")


@dataclass(frozen=True, eq=False)
class Factorization:
    """A ~ L R with L (n, k), R (k, d), and how good it is.

    Metrics:
        fro_error: ||A - LR||_F.
        relative_error: fro_error / ||A||_F (0 for an all-zero A).
        optimal_error: sqrt(sum_{i>k} sigma_i(A)^2), the Eckart-Young bound.
        compression_ratio: n d / (k (n + d)), numbers stored before / after.
        mean_percent_error: 100 * mean|A - LR| / mean|A| (0 for an all-zero A):
            an entry-wise error relative to the typical entry, defined even
            where individual entries are zero.
    """

    L: torch.Tensor
    R: torch.Tensor
    fro_error: float
    relative_error: float
    optimal_error: float
    compression_ratio: float
    mean_percent_error: float
    steps: int = 0

    def metrics(self) -> dict[str, Any]:
        return {
            "fro_error": self.fro_error,
            "relative_error": self.relative_error,
            "optimal_error": self.optimal_error,
            "compression_ratio": self.compression_ratio,
            "mean_percent_error": self.mean_percent_error,
            "steps": self.steps,
        }


def _factorization(A: torch.Tensor, L: torch.Tensor, R: torch.Tensor, k: int, steps: int = 0) -> Factorization:
    A64 = A.to(torch.float64)
    diff = A64 - L.to(torch.float64) @ R.to(torch.float64)
    norm_a = float(torch.linalg.norm(A64))
    mean_abs = float(A64.abs().mean())
    s = torch.linalg.svdvals(A64)
    n, d = A.shape
    return Factorization(
        L=L,
        R=R,
        fro_error=float(torch.linalg.norm(diff)),
        relative_error=float(torch.linalg.norm(diff)) / norm_a if norm_a > 0 else 0.0,
        optimal_error=float(s[k:].square().sum().sqrt()),
        compression_ratio=n * d / (k * (n + d)),
        mean_percent_error=100.0 * float(diff.abs().mean()) / mean_abs if mean_abs > 0 else 0.0,
        steps=steps,
    )


def truncated_svd(A, k: int) -> Factorization:
    """Best rank-k approximation (Eckart-Young): L = U_k Sigma_k (n, k), R = V_k^T (k, d).

    Computed in float64; the factors come back in A's floating dtype.
    """
    t = _as_matrix(A)
    k = check_rank(k, n=t.shape[0], d=t.shape[1])
    U, s, Vh = torch.linalg.svd(t.to(torch.float64), full_matrices=False)
    L = (U[:, :k] * s[:k]).to(t.dtype)  # (n, k)
    R = Vh[:k].to(t.dtype)  # (k, d)
    return _factorization(t, L, R, k)


def _init_factors(n: int, d: int, k: int, scale: float, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    # Entries of UV then have the magnitude of A's entries: with N(0, s^2/sqrt(k))
    # factors, (UV)_ij has variance s^2, so Adam starts at the right scale.
    std = math.sqrt(scale / math.sqrt(k))
    U = torch.randn(n, k, generator=gen, dtype=torch.float32) * std
    V = torch.randn(k, d, generator=gen, dtype=torch.float32) * std
    return U.to(device).requires_grad_(True), V.to(device).requires_grad_(True)


# Below this many entries of A a CPU step's kernels take microseconds, and
# waking the intra-op thread pool for each costs more than it saves: on a
# 2-core machine with one core busy, 2,000 steps on 200 x 150 took 26 s with
# two threads and 1.9 s with one.
_ONE_THREAD_MAX = 1 << 20


def _adam_fit(loss_fn, params: list[torch.Tensor], steps: int, lr: float, entries: int) -> None:
    """Adam with cosine decay to 1% of ``lr``: fast early progress, precise end; ``entries`` is A's size (n d)."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.01)
    threads = torch.get_num_threads()
    one = params[0].device.type == "cpu" and entries <= _ONE_THREAD_MAX
    if one:
        torch.set_num_threads(1)
    try:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()
            sched.step()
    finally:
        if one:
            torch.set_num_threads(threads)


def _uv_body(A: torch.Tensor, k: int, steps: int, lr: float, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    Ad = A.to(device=device, dtype=torch.float32)  # (n, d)
    scale = float(Ad.square().mean().sqrt()) or 1.0
    U, V = _init_factors(A.shape[0], A.shape[1], k, scale, gen, device)  # (n, k), (k, d)
    # The loss is scaled to mean squared error / scale^2 so one lr fits any magnitude.
    _adam_fit(lambda: ((U @ V - Ad) / scale).square().mean(), [U, V], steps, lr, A.numel())
    return U.detach().cpu(), V.detach().cpu()


def uv_factorize(A, k: int, steps: int = 2000, lr: float | None = None, seed: int = 0, device: str = "cpu") -> Factorization:
    """Rank-k factorisation A ~ U V (U (n, k), V (k, d)) by Adam on ||A - UV||_F^2.

    Non-convex but benign: every local minimum of the unregularised problem
    is global (Baldi & Hornik 1989), so gradient descent from a small random
    start reaches the Eckart-Young error up to optimisation accuracy.

    Args:
        A: (n, d) finite matrix.
        k: rank, 1 <= k <= min(n, d).
        steps: Adam steps (default 2000), cosine-decayed learning rate.
        lr: initial learning rate (default 0.02, for the scale-free loss used here).
        seed: initialisation seed.
        device: "cpu" or "cuda".
    """
    t = _as_matrix(A)
    k = check_rank(k, n=t.shape[0], d=t.shape[1])
    _check_steps(steps, lr)
    dev = resolve_device(device)
    U, V = _uv_body(t, k, int(steps), lr or 0.02, int(seed), dev)
    return _factorization(t, U.to(t.dtype), V.to(t.dtype), k, int(steps))


@dataclass(frozen=True, eq=False)
class Completion:
    """Masked completion A ~ L R fitted on observed entries; errors on held-out ones.

    Metrics:
        train_rmse: RMSE on the observed entries used for fitting.
        heldout_rmse: RMSE on the held-out observed entries (NaN if none).
        heldout_relative_error: ||(A - LR)_H|| / ||A_H|| over the held-out set H.
        observed / heldout: entry counts.
    """

    L: torch.Tensor
    R: torch.Tensor
    train_rmse: float
    heldout_rmse: float
    heldout_relative_error: float
    observed: int
    heldout: int
    steps: int

    def metrics(self) -> dict[str, Any]:
        nan_to_none = lambda x: None if math.isnan(x) else x  # noqa: E731  (JSON has no NaN)
        return {
            "train_rmse": self.train_rmse,
            "heldout_rmse": nan_to_none(self.heldout_rmse),
            "heldout_relative_error": nan_to_none(self.heldout_relative_error),
            "observed": self.observed,
            "heldout": self.heldout,
            "compression_ratio": self.L.shape[0] * self.R.shape[1] / (self.L.shape[1] * (self.L.shape[0] + self.R.shape[1])),
            "steps": self.steps,
        }


def _complete_body(A: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fit: torch.Tensor, k: int, steps: int, lr: float, reg: float, seed: int, device):
    gen = torch.Generator().manual_seed(seed)
    vals = A[rows, cols].to(device=device, dtype=torch.float32)  # (nnz,)
    r_fit, c_fit, v_fit = rows[fit].to(device), cols[fit].to(device), vals[fit.to(device)]
    scale = float(v_fit.square().mean().sqrt()) or 1.0
    U, V = _init_factors(A.shape[0], A.shape[1], k, scale, gen, device)  # (n, k), (k, d)

    def loss() -> torch.Tensor:
        pred = (U[r_fit] * V[:, c_fit].T).sum(-1)  # (nnz_fit,): only the observed entries of UV
        data = ((pred - v_fit) / scale).square().mean()
        return data + reg * (U.square().mean() + V.square().mean()) / scale

    _adam_fit(loss, [U, V], steps, lr, A.numel())
    with torch.no_grad():
        pred = (U[rows.to(device)] * V[:, cols.to(device)].T).sum(-1)  # (nnz,)
        err = (pred - vals).double()
        fitv, hold = fit.to(device), ~fit.to(device)
        train_rmse = float(err[fitv].square().mean().sqrt())
        if bool(hold.any()):
            held_rmse = float(err[hold].square().mean().sqrt())
            denom = float(vals[hold].double().norm())
            held_rel = float(err[hold].norm()) / denom if denom > 0 else 0.0
        else:
            held_rmse = held_rel = math.nan
    return U.detach().cpu(), V.detach().cpu(), train_rmse, held_rmse, held_rel


def complete_matrix(
    A,
    mask,
    k: int,
    steps: int = 3000,
    lr: float | None = None,
    reg: float = 1e-4,
    holdout: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
) -> Completion:
    """Fit a rank-k U V to the observed entries of A and report held-out error.

    Minimises mean_{(i,j) in Omega_fit} (A_ij - u_i . v_j)^2 + reg (|U|^2 + |V|^2)
    with Adam, where Omega_fit is the observed set minus a seeded ``holdout``
    fraction kept aside for evaluation. Vectorised over the observed entries
    (index tensors), never a Python loop over entries.

    Args:
        A: (n, d); entries where ``mask`` is False may be NaN.
        mask: (n, d) bool, True where A is observed.
        k: rank.
        steps: Adam steps (default 3000).
        lr: initial learning rate (default 0.02).
        reg: weight of the Frobenius regulariser on the factors.
        holdout: fraction of observed entries held out, in [0, 1).
    """
    t = _as_matrix(A, allow_nan=True)
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if tuple(m.shape) != tuple(t.shape):
        raise UsageError(f"mask shape {tuple(m.shape)} differs from A's {tuple(t.shape)}")
    m = m.to(torch.bool)
    k = check_rank(k, n=t.shape[0], d=t.shape[1])
    _check_steps(steps, lr)
    if not 0 <= holdout < 1:
        raise UsageError(f"holdout must lie in [0, 1), got {holdout}")
    if reg < 0:
        raise UsageError(f"reg must be nonnegative, got {reg}")
    rows, cols = m.nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise DataError("no observed entries (mask is all False)")
    if not bool(torch.isfinite(t[rows, cols]).all()):
        raise DataError("observed entries of A contain NaN or Inf")
    gen = torch.Generator().manual_seed(int(seed) + 1)
    fit = torch.rand(rows.numel(), generator=gen) >= holdout
    if not bool(fit.any()):
        raise DataError("every observed entry was held out; lower holdout")
    dev = resolve_device(device)
    U, V, tr, hr, hrel = _complete_body(t, rows, cols, fit, k, int(steps), lr or 0.02, float(reg), int(seed), dev)
    return Completion(U.to(t.dtype), V.to(t.dtype), tr, hr, hrel, int(rows.numel()), int((~fit).sum()), int(steps))
