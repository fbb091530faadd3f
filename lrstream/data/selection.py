"""Row selections over a stream's hours: contiguous segments, balanced shares, and reading them.

A training or validation set is a sequence of :class:`Segment` (rows
[lo, hi) of one hour), in time order. Data-parallel workers each read one
share: a contiguous cut of those rows, opening only the Arrow parts that
hold it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .reader import read_rows
from .store import Store


@dataclass(frozen=True)
class Segment:
    """Rows [lo, hi) of one hour."""

    hour: str
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo


def split_rows(segments: Sequence[Segment], parts: int) -> tuple[tuple[Segment, ...], ...]:
    """Cut the concatenated rows of ``segments`` into ``parts`` contiguous shares of sizes differing by at most 1."""
    total = sum(s.rows for s in segments)
    bounds = [total * p // parts for p in range(parts + 1)]
    shares = []
    for p in range(parts):
        lo, hi, offset, share = bounds[p], bounds[p + 1], 0, []
        for s in segments:
            a, b = max(lo - offset, 0), min(hi - offset, s.rows)
            if a < b:
                share.append(Segment(s.hour, s.lo + a, s.lo + b))
            offset += s.rows
        shares.append(tuple(share))
    return tuple(shares)


def segments_of(hour_rows: Sequence[tuple[str, int]], indices: Sequence[int]) -> list[Segment]:
    """The rows ``indices`` (ascending, into the hours' rows concatenated in order) as maximal runs per hour."""
    starts, offset = {}, 0
    for hour, rows in hour_rows:
        starts[hour] = (offset, offset + rows)
        offset += rows
    out: list[Segment] = []
    for hour, (first, last) in starts.items():
        local = [int(i) - first for i in indices if first <= int(i) < last]
        run_lo = None
        for j, r in enumerate(local):
            if run_lo is None:
                run_lo = r
            if j + 1 == len(local) or local[j + 1] != r + 1:
                out.append(Segment(hour, run_lo, r + 1))
                run_lo = None
    return out


def load_segments(store: Store | str, stream: str, segments: Sequence[Segment], gray: bool) -> torch.Tensor:
    """The raw float32 matrices (N, n, d) of some segments, in order."""
    if not segments:
        return torch.zeros(0)
    store = Store.of(store)
    return torch.cat([read_rows(store, stream, s.hour, s.lo, s.hi, gray) for s in segments])
