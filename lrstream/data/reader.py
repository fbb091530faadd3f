"""Reading a stream's published hours as float32 matrices for training and evaluation.

Frames are stored raw (uint8 stays uint8); here they become float32 matrices:
(C*H, W) with the channels stacked as rows (the default, as in the paper's
video experiments), or (H, W) luminance with ``gray``. Batches are streamed
part by part, so an hour never has to fit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, NothingToDoError
from .parts import part_bounds
from .shards import iter_hour_frames, iter_hour_tables, list_hours, published_manifest
from .sources import frames_to_matrices
from .store import Store


@dataclass(frozen=True)
class HourInfo:
    hour: str
    rows: int
    frame_shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        """Bytes of the hour's frames as stored, uncompressed: rows x prod(frame_shape) x itemsize."""
        return self.rows * int(np.prod(self.frame_shape)) * np.dtype(self.dtype).itemsize


def matrix_shape(frame_shape: Sequence[int], gray: bool) -> tuple[int, int]:
    """(n, d) of the matrices made from frames of ``frame_shape`` (H, W[, C]): (C*H, W), or (H, W) with ``gray``."""
    H, W = int(frame_shape[0]), int(frame_shape[1])
    C = int(frame_shape[2]) if len(frame_shape) > 2 else 1
    return (H, W) if gray else (C * H, W)


def hour_info(store: Store | str, stream: str, hour: str) -> HourInfo:
    """Rows, frame shape (H, W, C) and dtype of a published hour, from its manifest alone."""
    doc = published_manifest(store, stream, hour)
    return HourInfo(hour, int(doc["rows"]), tuple(doc["frame_shape"]), doc["dtype"])


def select_hours(store: Store | str, stream: str, hours: Sequence[str] | None = None, last: int | None = None, start: str | None = None, end: str | None = None) -> list[str]:
    """Published hours of ``stream``: an explicit list, the last N, or a [start, end] range (inclusive)."""
    store = Store.of(store)
    available = list_hours(store, stream)
    if not available:
        raise NothingToDoError(f"stream {stream} has no ingested hours under {store.root}")
    if hours is not None:
        missing = [h for h in hours if h not in available]
        if missing:
            raise NothingToDoError(f"stream {stream} has no ingested hour(s) {', '.join(missing)}")
        return list(hours)
    chosen = [h for h in available if (start is None or h >= start) and (end is None or h <= end)]
    if last is not None:
        chosen = chosen[-last:]
    if not chosen:
        raise NothingToDoError(f"stream {stream} has no ingested hours in the range asked for")
    return chosen


def iter_matrices(
    store: Store | str,
    stream: str,
    hours: Sequence[str],
    batch_size: int = 8,
    gray: bool = False,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """Yield float32 batches (B, C*H, W) (or (B, H, W) with ``gray``) over the given hours in order.

    All hours must share one frame shape; a mismatch is a DataError naming the hour.
    """
    store = Store.of(store)
    shape = None
    pending: list[np.ndarray] = []
    for hour in hours:
        info = hour_info(store, stream, hour)
        if shape is None:
            shape = info.frame_shape
        elif info.frame_shape != shape:
            raise DataError(f"hour {hour} of stream {stream} has frames of shape {info.frame_shape}, earlier hours {shape}")
        for frames, _ in iter_hour_frames(store, stream, hour):
            mats = frames_to_matrices(frames, gray=gray)  # (rows, C*H, W)
            pending.extend(mats)
            while len(pending) >= batch_size:
                batch, pending = pending[:batch_size], pending[batch_size:]
                yield torch.from_numpy(np.stack(batch).astype(np.float32)).to(device)
    if pending:
        yield torch.from_numpy(np.stack(pending).astype(np.float32)).to(device)


def read_rows(store: Store | str, stream: str, hour: str, lo: int, hi: int, gray: bool = False) -> torch.Tensor:
    """Rows [lo, hi) of a published hour as one float32 tensor (hi - lo, n, d), reading only their parts."""
    mats = [frames_to_matrices(frames, gray=gray) for frames, _ in iter_hour_frames(store, stream, hour, rows=(lo, hi))]
    if not mats:
        raise DataError(f"hour {hour} of stream {stream} has no rows in [{lo}, {hi})")
    return torch.from_numpy(np.concatenate(mats).astype(np.float32, copy=False))


def _candidate_rows(files: list[dict], frame_index: int) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of the parts that may hold ``frame_index``: the one part whose index range covers it
    when every part records its ``first_index`` in ascending order (indices grow within an hour, with gaps where
    frames were quarantined), else every part (a scan)."""
    bounds = part_bounds(files)
    starts = [entry.get("first_index") for entry in files]
    if any(s is None for s in starts) or starts != sorted(starts):
        return bounds
    part = max((i for i, s in enumerate(starts) if int(s) <= frame_index), default=None)
    return [] if part is None else [bounds[part]]


def read_frame(store: Store | str, stream: str, hour: str, frame_index: int) -> np.ndarray:
    """The raw frame (H, W, C), in its stored dtype, of a published hour whose ``frame_index`` column equals ``frame_index``.

    Opens only the part that holds it (from the manifest's ``rows`` and
    ``first_index``). NothingToDoError (exit 4) when the hour is not
    published or has no such frame (never ingested, or quarantined).
    """
    store = Store.of(store)
    doc = published_manifest(store, stream, hour)
    for lo, hi in _candidate_rows(doc["files"], int(frame_index)):
        for table in iter_hour_tables(store, stream, hour, rows=(lo, hi)):
            hits = np.flatnonzero(table.column("frame_index").to_numpy() == int(frame_index))
            if hits.size:
                return table.slice(int(hits[0]), 1).column("frame").combine_chunks().to_numpy_ndarray()[0]
    quarantined = any(int(q.get("frame_index", -1)) == int(frame_index) for q in doc.get("quarantine", []))
    why = " (it was quarantined at ingest)" if quarantined else ""
    raise NothingToDoError(f"hour {hour} of stream {stream} has no frame {frame_index}{why}")


class HourReader:
    """A re-iterable view of some hours, as ``lrstream.learn`` accepts for training (one pass = one epoch)."""

    def __init__(self, store: Store | str, stream: str, hours: Sequence[str], batch_size: int = 8, gray: bool = False, device="cpu"):
        self.store, self.stream, self.hours = Store.of(store), stream, list(hours)
        self.batch_size, self.gray, self.device = batch_size, gray, device

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter_matrices(self.store, self.stream, self.hours, self.batch_size, self.gray, self.device)

    def load(self) -> torch.Tensor:
        """Every selected frame as one (N, n, d) float32 tensor."""
        batches = list(self)
        if not batches:
            raise DataError(f"hours {', '.join(self.hours)} of stream {self.stream} hold no frames")
        return torch.cat(batches)
