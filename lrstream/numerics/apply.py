"""The production apply: SCW factors of raw (uint8) frames, with each frame's error for the stored precision.

For a batch of frames A (B, n, d) and a sketch S (m, n) this computes the
Sarlos-Clarkson-Woodruff factors of :mod:`lrstream.numerics.scw`,

    SA (B, m, d),  Q = orth(rowspace(SA)) (B, d, m),  AQ = U Sigma W^T,
    L = AQ W_k (B, n, k),  R = W_k^T Q^T (B, k, d),  L R = [AQ]_k Q^T,

without ever holding a float copy of a frame. Frames arrive as uint8, and a
uint8 -> float32 conversion of a whole 2160 x 1280 frame costs more than
``S A`` itself (it writes four times the bytes it reads). So the two passes
over A (for SA, then for AQ) convert ``tile_rows`` rows at a time, small
enough to stay in cache, and feed each tile straight to its GEMM:
``SA += S[:, rows] @ A[rows]`` and ``AQ[rows] = A[rows] @ Q``.

No sigma_1 normalisation: SCW(S, cA) = c SCW(S, A), so raw pixel values give
the same approximation, scaled.

Stored factors are balanced before rounding: the columns of L have norms
sigma_i(AQ) and the rows of R are orthonormal, so L diag(sigma)^(-1/2) and
diag(sigma)^(1/2) R have the same product with entries of comparable size;
for 8-bit frames both stay far inside float16's range (|entries| <= ~100)
instead of L reaching 255 sqrt(d).

The error is reported for what is stored: a third pass forms the residual
A - L_s R_s with the rounded factors explicitly, tile by tile, in float32
with each row's sum of squares accumulated in float64. A float64 residual
agreed with it to 1e-9 relative on 2160 x 1280 frames and ran 6x slower;
forming the residual (instead of ||A||^2 - 2 <A, LR> + ||LR||^2) keeps the
error accurate when it is tiny.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, UsageError
from .checks import check_rank, resolve_device
from .linalg import gram_basis
from .sketch import Sketch

STORAGE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True, eq=False)
class FrameFactors:
    """Rank-k factors of a batch of frames, as stored.

    Attributes:
        L: (B, n, k) in the storage dtype.
        R: (B, k, d) in the storage dtype; L @ R approximates each frame.
        errors: (B,) float64, ||A - L R||_F with L and R as stored.
        norms: (B,) float64, ||A||_F.
    """

    L: torch.Tensor
    R: torch.Tensor
    errors: torch.Tensor
    norms: torch.Tensor

    @property
    def rel_errors(self) -> torch.Tensor:
        """||A - L R||_F / ||A||_F per frame (0 for an all-zero frame): (B,) float64."""
        return torch.where(self.norms > 0, self.errors / self.norms.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(self.errors))


def _as_frames(A) -> torch.Tensor:
    if isinstance(A, np.ndarray):
        A = torch.from_numpy(np.ascontiguousarray(A))
    if not isinstance(A, torch.Tensor):
        raise UsageError(f"frames must be a numpy array or a torch tensor, got {type(A).__name__}")
    if A.ndim == 2:
        A = A.unsqueeze(0)
    if A.ndim != 3:
        raise DataError(f"frames must be (B, n, d) matrices, got shape {tuple(A.shape)}")
    return _check_values(A)


def _check_values(A: torch.Tensor) -> torch.Tensor:
    if A.dtype.is_complex or A.dtype == torch.bool:
        raise DataError(f"frames must be real numbers, got {A.dtype}")
    if A.dtype.is_floating_point and not bool(torch.isfinite(A).all()):
        raise DataError("frames contain NaN or Inf")
    return A


def _check_options(dtype: str, tile_rows: int) -> None:
    if dtype not in STORAGE_DTYPES:
        raise UsageError(f"factor dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    if tile_rows < 1:
        raise UsageError(f"tile_rows must be >= 1, got {tile_rows}")


def apply_sketch(sketch: Sketch, A, k: int, dtype: str = "float16", tile_rows: int = 128, device: str | torch.device = "cpu") -> FrameFactors:
    """SCW factors of every frame of A for storage, and their errors.

    Args:
        sketch: S (m, n), sparse or dense.
        A: (B, n, d) or (n, d) frames as matrices, numpy or torch; uint8
            stays uint8 until a tile is multiplied (float frames are fine).
        k: target rank, 1 <= k <= min(m, n, d).
        dtype: storage precision of L and R, "float16" (default) or "float32".
        tile_rows: rows of A converted to float32 at a time on the CPU (on CUDA
            the whole batch is one tile: the device has the bandwidth).
        device: where the numerics run; A moves there as it is (uint8 moves a
            quarter of the bytes of float32).

    Returns:
        :class:`FrameFactors` with L (B, n, k), R (B, k, d) on the CPU.

    Raises:
        DataError: n differs from the sketch's, non-finite float frames, or
            factors that overflow float16 (use dtype="float32").
        UsageError: bad k, dtype or tile size.
    """
    _check_options(dtype, tile_rows)
    A = _as_frames(A)
    if A.shape[-2] != sketch.n:
        raise DataError(f"frames give matrices with n={A.shape[-2]} rows; the sketch was learned for n={sketch.n}")
    k = check_rank(k, m=sketch.m, n=A.shape[-2], d=A.shape[-1])
    dev = resolve_device(device)
    A = A.to(dev)
    t = A.shape[-2] if dev.type == "cuda" else tile_rows
    tiles = [(r, A[:, r : r + t]) for r in range(0, A.shape[-2], t)]
    return _finish(_apply_body(sketch, tiles, tuple(A.shape), k, STORAGE_DTYPES[dtype], dev), dtype)


def _finish(parts, dtype: str) -> FrameFactors:
    L, R, errors, norms = parts
    if dtype == "float16" and not (bool(torch.isfinite(L).all()) and bool(torch.isfinite(R).all())):
        raise DataError("the factors overflow float16 (frames with values beyond ~1e4); store them as float32")
    return FrameFactors(L.cpu(), R.cpu(), errors.cpu(), norms.cpu())


@torch.no_grad()
def _apply_body(sketch: Sketch, tiles: list, shape: tuple[int, int, int], k: int, store_dtype: torch.dtype, dev: torch.device):
    """The three passes over the row tiles of A (B, n, d); ``tiles`` lists (first row, (B, t, d) view) covering every row once."""
    B, n, d = shape
    S = sketch.to_dense().to(device=dev, dtype=torch.float32)  # (m, n), explicit: one GEMM per tile
    m = S.shape[0]
    SA = torch.zeros(B, m, d, device=dev)  # (B, m, d)
    norm2 = torch.zeros(B, dtype=torch.float64, device=dev)
    for r, view in tiles:
        T = view.to(torch.float32)  # (B, t, d), in cache
        SA.baddbmm_(S[:, r : r + T.shape[1]].expand(B, -1, -1), T)
        norm2 += (T * T).sum(-1).to(torch.float64).sum(-1)
    Q = gram_basis(SA)  # (B, d, m)
    AQ = torch.empty(B, n, m, device=dev)  # (B, n, m)
    for r, view in tiles:
        torch.matmul(view.to(torch.float32), Q, out=AQ[:, r : r + view.shape[1]])
    # The m x m eigenproblem is tiny: solve it in float64 so the top-k split is as exact as the data allows.
    lam, W = torch.linalg.eigh((AQ.mT @ AQ).to(torch.float64))  # (B, m), (B, m, m), ascending
    Wk = W[..., -k:].flip(-1).to(torch.float32)  # (B, m, k), largest first
    sigma = lam[..., -k:].flip(-1).clamp_min(0).sqrt().to(torch.float32)  # (B, k) = column norms of L
    scale = torch.where(sigma > 0, sigma.sqrt(), torch.ones_like(sigma))  # (B, k)
    L = ((AQ @ Wk) / scale.unsqueeze(-2)).to(store_dtype)  # (B, n, k)
    R = ((Wk.mT @ Q.mT) * scale.unsqueeze(-1)).to(store_dtype)  # (B, k, d)
    Lf, Rf = L.to(torch.float32), R.to(torch.float32)
    err2 = torch.zeros(B, dtype=torch.float64, device=dev)
    for r, view in tiles:
        D = torch.baddbmm(view.to(torch.float32), Lf[:, r : r + view.shape[1]], Rf, alpha=-1)  # (B, t, d) residual tile
        err2 += (D * D).sum(-1).to(torch.float64).sum(-1)
    return L, R, err2.sqrt(), norm2.sqrt()
