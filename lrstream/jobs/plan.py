"""The plan job: the smallest sketch size m whose learned sketch meets a target gap on a stream's held-out frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..data.selection import load_segments
from ..data.store import Store
from ..distributed.plan import plan_data
from ..errors import EXIT_NOTHING, CommandFailed, UsageError
from ..training.config import LearnConfig
from ..training.plan import plan_sketch_size


def run_plan(
    store: Store | str,
    stream: str,
    cfg: LearnConfig,
    target: float,
    *,
    hours: Sequence[str] | None = None,
    last: int | None = None,
    m_max: int | None = None,
    val_fraction: float = 0.25,
    gray: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Search m in [cfg.k, m_max] with every probe trained like ``cfg`` (its m is replaced); returns the summary.

    The held-out frames are the newest selected hour, or the last
    ``val_fraction`` of a single hour. Raises CommandFailed (exit 4, with
    the summary) when no m up to ``m_max`` meets ``target``.
    """
    if not 0 < val_fraction < 1:
        raise UsageError("--val-fraction must lie in (0, 1): plan measures the gap on held-out frames")
    store = Store.of(store)
    data = plan_data(store, stream, 1, hours=hours, last=last, val_fraction=val_fraction, gray=gray)
    train = load_segments(store, stream, data.train[0], gray)
    val = load_segments(store, stream, data.val[0], gray)
    log(f"planning on {train.shape[0]} training and {val.shape[0]} held-out frames ({data.validation}); target gap {target:g}")
    result = plan_sketch_size(train, val, cfg.k, target, m_max=m_max, config=cfg, log=log)
    out = {"stream": stream, "train_hours": data.train_hours, "val_hours": data.val_hours, **result.summary()}
    if not result.met:
        tried = max(p["m"] for p in result.probes)
        best = min(p["gap"] for p in result.probes)
        raise CommandFailed(f"no sketch size up to m={tried} meets the target gap {target:g} (best {best:.5g})", EXIT_NOTHING, out)
    log(f"smallest m meeting gap {target:g}: m={result.m} (validation gap {result.gap:.5g}, {len(result.probes)} probes)")
    return out
