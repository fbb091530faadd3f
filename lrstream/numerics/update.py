"""Hourly continual update of a dense sketch: fold one new hour into the start's sufficient statistics.

A dense sketch started from the tensor or spectral start is S = U_m^T, U_m the
top-m eigenvectors of the decayed spectral Gram (:mod:`lrstream.numerics.starts`)

    G = sum_i w_i (A_i A_i^T)^{p/2}   (n, n), float64,   W = sum_i w_i,

over matrices A_i (n, d) scaled to sigma_1 = 1. Both are sums, so a new hour
with matrices B_1..B_F, ``elapsed`` hours after the newest one folded, updates
them in time proportional to F (not to the window):

    G <- 2^(-elapsed / h) G + sum_j (B_j B_j^T)^{p/2},   W <- 2^(-elapsed / h) W + F,

h the half-life in hours (None: no decay, plain sums). The sketch is then
re-taken from G: rows [0, m_learned) are its top-m_learned eigenvectors
scaled to norm sqrt(n) (entries of RMS 1, as training's ``dense_as_blocks``
scales them); rows [m_learned, m) (a mixed-dense sketch's fixed random rows)
are kept unchanged. At retrain time the weights are per frame
(w_i = 2^(-age_i / (h_frac N)), h_frac a fraction of the window of N frames);
with H hours in the window that half-life is h = h_frac H hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UsageError
from .starts import Gather, spectral_gram, top_eigenvectors

GRAM = "update_gram"  # the array name the statistics travel under


@dataclass(frozen=True)
class UpdateStats:
    """The sufficient statistics of a dense sketch's start.

    gram: (n, n) float64, the decayed G; weight: the decayed total W; power: p;
    half_life_hours: h in hours (None: no decay); hours: hours folded so far;
    last_hour: label of the newest folded hour; frames: frames folded so far.
    """

    gram: torch.Tensor
    weight: float
    power: float
    half_life_hours: float | None
    hours: int
    last_hour: str
    frames: int

    def __post_init__(self) -> None:
        g = self.gram
        if g.ndim != 2 or g.shape[0] != g.shape[1] or g.dtype != torch.float64:
            raise DataError(f"update statistics need a square float64 Gram, got {tuple(g.shape)} {g.dtype}")
        if not bool(torch.isfinite(g).all()) or not math.isfinite(self.weight) or self.weight < 0:
            raise DataError("update statistics are not finite")
        if not self.power > 0 or (self.half_life_hours is not None and not self.half_life_hours > 0):
            raise DataError(f"update statistics have power {self.power} and half-life {self.half_life_hours}: both must be positive")

    @property
    def n(self) -> int:
        return int(self.gram.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (no pickle): the Gram."""
        return {GRAM: self.gram.cpu().numpy()}

    def record(self) -> dict[str, Any]:
        """The JSON-ready scalars."""
        return {"weight": float(self.weight), "power": float(self.power), "half_life_hours": self.half_life_hours, "hours": int(self.hours), "last_hour": self.last_hour, "frames": int(self.frames)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], record: dict[str, Any]) -> "UpdateStats":
        try:
            h = record["half_life_hours"]
            return cls(torch.from_numpy(np.array(arrays[GRAM], dtype=np.float64)), float(record["weight"]), float(record["power"]), None if h is None else float(h), int(record["hours"]), str(record["last_hour"]), int(record["frames"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"update statistics are incomplete: {exc.__class__.__name__}: {exc}") from None


def hour_terms(A: torch.Tensor, power: float, batch_size: int = 8) -> torch.Tensor:
    """sum_j (A_j A_j^T)^{power/2} (n, n) float64 over one hour's matrices A (F, n, d), already scaled to sigma_1 = 1."""
    return spectral_gram(A, power, None, batch_size).cpu()


def decay(elapsed_hours: float, half_life_hours: float | None) -> float:
    """2^(-elapsed / h), 1 without a half-life."""
    return 1.0 if half_life_hours is None else 2.0 ** (-float(elapsed_hours) / float(half_life_hours))


def fold(stats: UpdateStats, terms: torch.Tensor, frames: int, hour: str, elapsed_hours: float) -> UpdateStats:
    """G <- 2^(-elapsed/h) G + terms, W <- 2^(-elapsed/h) W + frames (module docstring); ``terms`` from :func:`hour_terms`."""
    if terms.shape != stats.gram.shape:
        raise DataError(f"the new hour's Gram is {tuple(terms.shape)}, the sketch's statistics {tuple(stats.gram.shape)}")
    if not elapsed_hours > 0:
        raise UsageError(f"hour {hour} is not after the newest folded hour {stats.last_hour}")
    c = decay(elapsed_hours, stats.half_life_hours)
    return replace(stats, gram=c * stats.gram + terms.to(torch.float64), weight=c * stats.weight + frames, hours=stats.hours + 1, last_hour=hour, frames=stats.frames + int(frames))


def refreshed_matrix(matrix: torch.Tensor, stats: UpdateStats, m_learned: int | None = None) -> torch.Tensor:
    """S (m, n) in ``matrix``'s dtype: rows [0, m_learned) the top eigenvectors of G scaled to norm sqrt(n), the rest of ``matrix`` kept.

    ``m_learned`` defaults to every row (a plain dense sketch).
    """
    m, n = matrix.shape
    if n != stats.n:
        raise DataError(f"the sketch has n={n} columns, its statistics n={stats.n}")
    m_learned = m if m_learned is None else int(m_learned)
    if not 1 <= m_learned <= m:
        raise DataError(f"m_learned={m_learned} must lie in [1, m={m}]")
    U = top_eigenvectors(stats.gram, m_learned)  # (m_learned, n), orthonormal rows
    U = U * (n**0.5 / U.norm(dim=1, keepdim=True).clamp_min(1e-30))
    out = matrix.detach().cpu().clone()
    out[:m_learned] = U.to(out.dtype)
    return out


def learned_rows(meta: dict[str, Any], m: int) -> int:
    """Rows of a stored dense sketch that its start learned: ``m_learned`` for mixed-dense, else all m."""
    return int(meta.get("m_learned", m)) if meta.get("kind") == "mixed-dense" else m


def start_parameters(meta: dict[str, Any]) -> tuple[float, float | None] | None:
    """(power p, half-life as a fraction of the window) of a stored sketch's start, or None when it has no Gram start.

    Dense and mixed-dense sketches (an ``auto`` one is stored as its chosen
    kind) started from the tensor start (p = 2, no decay) or the spectral one
    (its ``spectral`` record) have one; sparse kinds and random starts do not.
    """
    if meta.get("kind") not in ("dense", "mixed-dense"):
        return None
    init = meta.get("init") or (meta.get("config") or {}).get("init") or "tensor"
    if init == "tensor":
        return 2.0, None
    if init == "spectral" and isinstance(meta.get("spectral"), dict):
        h = meta["spectral"].get("half_life")
        return float(meta["spectral"]["power"]), None if h is None else float(h)
    return None


def window_stats(gather: Gather, meta: dict[str, Any], total: int, hours: int, last_hour: str) -> UpdateStats | None:
    """The statistics of a freshly trained sketch's start over its ``total`` training frames in ``hours`` hours.

    ``gather("spectral_gram", p, h, total)`` returns each share's part of G (per-frame weights, h a fraction of
    the window); the half-life becomes h x hours in hours. None when the sketch has no Gram start.
    """
    params = start_parameters(meta)
    if params is None or total < 1 or hours < 1:
        return None
    p, h = params
    gram = sum(torch.as_tensor(part, dtype=torch.float64).cpu() for part in gather("spectral_gram", p, h, total))
    weights = torch.ones(total, dtype=torch.float64) if h is None else torch.exp2(-torch.arange(total, dtype=torch.float64) / (h * total))
    return UpdateStats(gram, float(weights.sum()), p, None if h is None else h * hours, int(hours), last_hour, int(total))
