"""Sketch sizing: the smallest m whose learned sketch meets a target error gap.

The error gap of a learned sketch falls as m grows (more rows, a larger row
space for SA), so the smallest m with gap(m) <= target is found by doubling m
from k until the target is met, then bisecting between the last miss and the
first hit. Each probe learns a sketch on ``train`` and measures its gap on
``val``, so the answer is about held-out data, as production will use it.
The search assumes gap(m) is non-increasing; a learned sketch's gap can
wobble by a few percent between neighbouring m, so the answer is the
smallest m that the search saw meet the target, not a certificate that no
smaller m could.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import UsageError
from ..numerics.checks import as_batch, check_rank
from ..numerics.scw import error_gap, prepare
from .config import LearnConfig
from .learn import learn


@dataclass(frozen=True)
class PlanResult:
    """The outcome of :func:`plan_sketch_size`.

    Attributes:
        m: the smallest sketch size that met the target, or None.
        gap: its validation gap (None when no m met the target).
        target: the target gap.
        probes: every (m, gap, seconds) tried, in order.
    """

    m: int | None
    gap: float | None
    target: float
    k: int
    kind: str
    probes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.m is not None

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def plan_sketch_size(train, val, k: int, target: float, *, m_max: int | None = None, config: LearnConfig | None = None, log=None) -> PlanResult:
    """Find the smallest m in [k, m_max] whose learned sketch has validation gap <= ``target``.

    Args:
        train: (N, n, d) training matrices (raw; scaled to sigma_1 = 1 inside).
        val: (V, n, d) held-out matrices the gap is measured on.
        k: target rank.
        target: the error gap to meet (mean SCW error minus mean optimum, sigma_1-normalised).
        m_max: the largest m to try (default min(n, d)).
        config: training settings for every probe (its k and m are replaced); default LearnConfig defaults.
    """
    A = as_batch(train, "train")
    V = as_batch(val, "val")
    n, d = A.shape[-2:]
    if tuple(V.shape[-2:]) != (n, d):
        raise UsageError(f"validation matrices are {tuple(V.shape[-2:])}, training matrices ({n}, {d})")
    check_rank(k, n=n, d=d)
    if not target > 0:
        raise UsageError(f"the target gap must be positive, got {target}")
    m_max = min(n, d) if m_max is None else int(m_max)
    if m_max < k:
        raise UsageError(f"m_max={m_max} is below k={k}")
    base = config or LearnConfig(k=k, m=k)
    log = log or (lambda msg: None)
    held = prepare(V)
    probes: list[dict[str, Any]] = []
    cache: dict[int, float] = {}

    def gap_at(m: int) -> float:
        if m not in cache:
            t0 = time.perf_counter()
            cfg = replace(base, k=k, m=m, progress=False)
            cache[m] = float(error_gap(learn(A, config=cfg, val=V), held, k))
            probes.append({"m": m, "gap": cache[m], "seconds": time.perf_counter() - t0})
            log(f"m={m}: validation gap {cache[m]:.5g} ({'meets' if cache[m] <= target else 'misses'} {target:g})")
        return cache[m]

    lo, hi = k - 1, None  # lo: largest m known to miss (k - 1: none yet); hi: smallest known to meet
    m = max(k, 2 if base.kind in ("mixed-j", "mixed-s") else 1)
    while m <= m_max:
        if gap_at(m) <= target:
            hi = m
            break
        lo = m
        m = m_max if m < m_max < 2 * m else 2 * m
    if hi is None:
        return PlanResult(None, None, target, k, base.kind, probes)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gap_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    return PlanResult(hi, cache[hi], target, k, base.kind, probes)
