"""Input validation shared by the public numerical functions."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError, UsageError


def as_batch(x, name: str = "A", dtype: torch.dtype | None = None, device=None, check_finite: bool = True) -> torch.Tensor:
    """Turn an array-like of shape (n, d) or (N, n, d) into a float tensor (N, n, d).

    Integer data (raw uint8 frames) becomes float32; float64 stays float64
    unless ``dtype`` says otherwise. Raises DataError on empty or non-finite
    data, UsageError on a wrong number of dimensions. ``check_finite=False``
    skips the NaN/Inf scan, as in scipy.linalg: the scan is a full pass over
    the data plus a host sync, a third of the memory traffic of a two-pass
    method on a GPU.
    """
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x
    else:
        raise UsageError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise UsageError(f"{name} must have shape (n, d) or (N, n, d), got {tuple(t.shape)}")
    if t.numel() == 0:
        raise DataError(f"{name} is empty (shape {tuple(t.shape)})")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device if device is not None else t.device)
    if not check_finite:
        return t
    lo, hi = torch.aminmax(t)  # NaN propagates and Inf shows at an end: exact, and one cheap pass
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise DataError(f"{name} contains NaN or Inf")
    return t


def check_rank(k: int, m: int | None = None, n: int | None = None, d: int | None = None) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise UsageError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if m is not None and k > m:
        raise UsageError(f"k={k} exceeds the sketch size m={m}")
    if n is not None and d is not None and k > min(n, d):
        raise UsageError(f"k={k} exceeds min(n, d)={min(n, d)}")
    return k


def resolve_device(device) -> torch.device:
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but CUDA is not available")
    return dev


def check_sketch_fits(sketch, n: int, d: int, what: str, version: int | str = "?") -> None:
    """DataError unless ``what`` gives n x d matrices, the shape sketch (m, n) was learned for (its meta's d, where recorded)."""
    meta = sketch.meta
    if n != sketch.n or ("d" in meta and int(meta["d"]) != d):
        raise DataError(f"{what} gives {n}x{d} matrices; sketch version {version} was learned for {sketch.n}x{meta.get('d', '?')}")
