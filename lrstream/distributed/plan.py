"""The data plan of a retrain: which stored rows train and validate, and which worker reads which.

Training rows are the selected hours' rows in time order, cut into W
contiguous shares (:func:`lrstream.data.selection.split_rows`); each worker
reads only the Arrow parts that hold its share. Validation holds out the
newest hour whole (two or more hours), or the last ``val_fraction`` of a
single hour's rows, or, with ``val_split="random"``, the seeded random
subset :func:`lrstream.training.core.holdout` picks among all the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..data.reader import hour_info, matrix_shape, select_hours
from ..data.selection import Segment, segments_of, split_rows
from ..data.store import Store
from ..errors import DataError
from ..training.core import holdout


@dataclass(frozen=True)
class DataPlan:
    """Which rows train and validate, and which worker reads which."""

    stream: str
    train_hours: tuple[str, ...]
    val_hours: tuple[str, ...]
    validation: str  # "hour", "slice", "random" or "none"
    frame_shape: tuple[int, ...]
    n: int
    d: int
    train: tuple[tuple[Segment, ...], ...]  # per worker
    val: tuple[tuple[Segment, ...], ...]  # per worker

    @property
    def train_frames(self) -> int:
        return sum(s.rows for share in self.train for s in share)

    @property
    def val_frames(self) -> int:
        return sum(s.rows for share in self.val for s in share)

    def train_positions(self) -> list[np.ndarray]:
        """Each worker's training rows as indices into all training rows in time order (shares are contiguous cuts of it)."""
        sizes = [sum(s.rows for s in share) for share in self.train]
        starts = np.cumsum([0, *sizes])
        return [np.arange(starts[r], starts[r] + sizes[r]) for r in range(len(sizes))]

    def for_refit(self) -> "DataPlan":
        """The same plan with every row, validation rows included, training in time order; the validation rows stay for scoring."""
        rows = sorted((s for share in (*self.train, *self.val) for s in share), key=lambda s: (s.hour, s.lo))  # hour labels sort in time
        merged: list[Segment] = []
        for s in rows:
            if merged and merged[-1].hour == s.hour and merged[-1].hi == s.lo:
                merged[-1] = Segment(s.hour, merged[-1].lo, s.hi)
            else:
                merged.append(s)
        return replace(self, train=split_rows(merged, len(self.train)))

    def describe(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "train_hours": list(self.train_hours),
            "val_hours": list(self.val_hours),
            "validation": self.validation,
            "frame_shape": list(self.frame_shape),
            "train_frames": self.train_frames,
            "val_frames": self.val_frames,
        }


def plan_data(
    store: Store | str,
    stream: str,
    workers: int,
    *,
    hours: Sequence[str] | None = None,
    last: int | None = None,
    start: str | None = None,
    end: str | None = None,
    val_fraction: float = 0.1,
    gray: bool = False,
    val_split: str | None = None,
    seed: int = 0,
) -> DataPlan:
    """Select the training hours and hold out validation data.

    With two or more hours the newest is held out whole (early stopping then
    favours the sketch that generalises forward in time, as evaluation will
    ask of it); with a single hour its last ``val_fraction`` of rows is;
    ``val_split="random"`` holds out a seeded random ``val_fraction`` of all
    the rows instead. ``val_fraction = 0`` trains on everything without
    validation.
    """
    store = Store.of(store)
    chosen = select_hours(store, stream, hours=hours, last=last, start=start, end=end)
    infos = [hour_info(store, stream, h) for h in chosen]
    shape = infos[0].frame_shape
    for info in infos[1:]:
        if info.frame_shape != shape:
            raise DataError(f"hour {info.hour} of stream {stream} has frames of shape {tuple(info.frame_shape)}, hour {infos[0].hour} {tuple(shape)}: one sketch needs one frame shape")
    rows = {i.hour: i.rows for i in infos}
    whole = [Segment(h, 0, rows[h]) for h in chosen]
    if val_fraction <= 0:
        train_segs, val_segs, validation = whole, [], "none"
    elif val_split == "random":
        total = sum(rows.values())
        tr_idx, val_idx = holdout(total, val_fraction, "random", seed)
        hour_rows = [(h, rows[h]) for h in chosen]
        train_segs, val_segs = segments_of(hour_rows, tr_idx.tolist()), segments_of(hour_rows, val_idx.tolist())
        validation = "random" if val_segs else "none"
    elif len(chosen) >= 2:
        train_segs, val_segs, validation = whole[:-1], whole[-1:], "hour"
    else:
        h, total = chosen[0], rows[chosen[0]]
        n_val = int(round(total * val_fraction))
        if total < 2 or n_val == 0:
            train_segs, val_segs, validation = whole, [], "none"
        else:
            train_segs, val_segs, validation = [Segment(h, 0, total - n_val)], [Segment(h, total - n_val, total)], "slice"
    n_train = sum(s.rows for s in train_segs)
    if n_train < workers:
        raise DataError(f"too few frames: {n_train} training frame(s) in {', '.join(dict.fromkeys(s.hour for s in train_segs))} cannot feed {workers} worker(s)")
    n, d = matrix_shape(shape, gray)
    val_share = split_rows(val_segs, workers) if val_segs else tuple(() for _ in range(workers))
    train_hours = tuple(dict.fromkeys(s.hour for s in train_segs))
    return DataPlan(
        stream=stream,
        train_hours=train_hours,
        val_hours=tuple(h for h in dict.fromkeys(s.hour for s in val_segs) if h not in train_hours),
        validation=validation,
        frame_shape=tuple(shape),
        n=n,
        d=d,
        train=split_rows(train_segs, workers),
        val=val_share,
    )
