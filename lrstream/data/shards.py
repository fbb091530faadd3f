"""Hourly frame shards: Arrow IPC files published exactly once through a manifest.

One hour of one stream is written as

    HOUR/attempt=ID/part-NNNNN.arrow   (Arrow IPC, zstd or lz4)
    HOUR/_MANIFEST.json                (published last, atomically)

with HOUR = ``store.hour_dir(S, H)`` (the on-disk names are :mod:`lrstream.data.store`'s).

Each row holds one raw frame in a ``fixed_shape_tensor`` column (H, W, C) of
the source dtype (uint8 stays uint8), plus frame_index, timestamp, stream and
hour. Parts go under a fresh attempt prefix and only the manifest names them,
so on any store (local disk or object store without rename):

* a crash or kill before the manifest leaves nothing that readers see;
* two concurrent writers both write parts, exactly one publishes the
  manifest (create-exclusive) and the loser removes its own attempt;
* an hour that has a manifest is never written again unless ``force``,
  which replaces the manifest atomically and then removes the old parts.

Bad frames (NaN/Inf, a shape or dtype unlike the hour's first frame, an
undecodable image) are never dropped silently: each is written under
``store.quarantine_dir(S, H)/attempt=ID/`` with its reason, and the manifest
counts them. This module knows nothing of sketches or Ray.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DataError, NothingToDoError, UsageError
from .parts import ipc_bytes, part_bounds, publish_manifest, read_json_manifest, read_part, write_part
from .sources import Frame
from .store import MANIFEST, Store, check_hour, check_stream, hour_start, new_attempt_id  # noqa: F401 (MANIFEST: re-exported for readers of the format)

FORMAT = "lrstream-hour"
FORMAT_VERSION = 1
COMPRESSIONS = ("zstd", "lz4", "none")


@dataclass(frozen=True)
class WriteOptions:
    """How an hour is written; the ingest flags mirror these fields."""

    rows_per_shard: int = field(default=32, metadata={"help": "frames per Arrow part file"})
    compression: str = field(default="zstd", metadata={"help": "compression of the Arrow IPC parts", "choices": COMPRESSIONS})
    force: bool = field(default=False, metadata={"help": "replace an hour that is already ingested (atomically)"})

    def validate(self) -> WriteOptions:
        if self.rows_per_shard < 1:
            raise UsageError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        return self


@dataclass(frozen=True)
class IngestResult:
    """What one ingest of one hour did. status: ingested, replaced, exists (no-op) or concurrent (another run won)."""

    stream: str
    hour: str
    status: str
    rows: int
    quarantined: int
    files: int
    bytes: int
    raw_bytes: int
    seconds: float
    manifest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _schema(shape: tuple[int, ...], dtype: np.dtype) -> pa.Schema:
    return pa.schema(
        [
            pa.field("frame", pa.fixed_shape_tensor(pa.from_numpy_dtype(dtype), shape)),
            pa.field("frame_index", pa.int64()),
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("stream", pa.string()),
            pa.field("hour", pa.string()),
        ]
    )


def _table(schema: pa.Schema, stack: np.ndarray, indices: list[int], stamps: list, stream: str, hour: str) -> pa.Table:
    """One part's rows from ``stack`` (rows, H, W, C), wrapped without a copy."""
    return pa.table(
        {
            "frame": pa.FixedShapeTensorArray.from_numpy_ndarray(stack),
            "frame_index": pa.array(indices, pa.int64()),
            "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "stream": pa.array([stream] * len(stack), pa.string()),
            "hour": pa.array([hour] * len(stack), pa.string()),
        },
        schema=schema,
    )


class _Staging:
    """Two reused (rows_per_shard, H, W, C) buffers: frames are copied into one while the other's part is encoded.

    Why: a fresh ``np.stack`` of a part is a new allocation every time, and
    at 32 frames of 720p its first touch (page faults) cost 9 ms a frame,
    more than the zstd encode. Encoding, hashing and writing a part run in
    one background thread (Arrow's codecs, hashlib and file writes release
    the GIL), so decoding the next frames overlaps them.
    """

    def __init__(self, rows: int, shape: tuple[int, ...], dtype: np.dtype, encode):
        self.buffers = [np.empty((rows, *shape), dtype), np.empty((rows, *shape), dtype)]
        self.pending = [None, None]  # the future still reading each buffer
        self.current, self.fill = 0, 0
        self.encode = encode
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.futures: list = []

    def add(self, arr: np.ndarray) -> int:
        if self.fill == 0 and self.pending[self.current] is not None:
            self.pending[self.current].result()  # the buffer's previous part is written: reuse it
        self.buffers[self.current][self.fill] = arr
        self.fill += 1
        return self.fill

    def flush(self, indices: list[int], stamps: list) -> None:
        if self.fill == 0:
            return
        future = self.pool.submit(self.encode, self.buffers[self.current][: self.fill], indices, stamps)
        self.pending[self.current] = future
        self.futures.append(future)
        self.current, self.fill = 1 - self.current, 0

    def results(self) -> list:
        """Every part's entry, in order; raises the first failure."""
        try:
            return [f.result() for f in self.futures]
        finally:
            self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _as_frame_array(arr: np.ndarray) -> np.ndarray:
    return arr[..., None] if arr.ndim == 2 else arr


def _check_frame(arr: np.ndarray, shape, dtype) -> str | None:
    """Why this frame cannot join the hour, or None if it can."""
    if arr.ndim != 3:
        return f"frame has {arr.ndim} dimensions, expected (H, W[, C])"
    if arr.dtype.kind not in "biuf":
        return f"frame dtype {arr.dtype} is not numeric"
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return "frame contains NaN or Inf"
    if shape is not None and arr.shape != shape:
        return f"frame shape {arr.shape} differs from the hour's first frame {shape}"
    if dtype is not None and arr.dtype != dtype:
        return f"frame dtype {arr.dtype} differs from the hour's first frame {dtype}"
    return None


def read_manifest(store: Store | str, stream: str, hour: str) -> dict[str, Any] | None:
    """The published manifest of an hour, or None if the hour is not (yet) visible."""
    store = Store.of(store)
    return read_json_manifest(store, store.hour_dir(stream, hour), FORMAT, f"stream {stream} hour {hour}")


def write_hour(store: Store | str, stream: str, hour: str, frames: Iterable[Frame], source: str, options: WriteOptions = WriteOptions()) -> IngestResult:
    """Write one hour's frames as shards and publish its manifest exactly once.

    Args:
        store: the storage root (a :class:`~lrstream.data.store.Store` or its URL).
        stream, hour: the hour's identity (hour as YYYY-MM-DDTHH).
        frames: :class:`~lrstream.data.sources.Frame` items in order (from
            :func:`lrstream.data.sources.iter_frames`); bad ones are quarantined.
        source: the source URL, recorded in the manifest.
        options: shard size, compression, force.

    Raises:
        DataError (exit 3) if the hour has no valid frame (after quarantining
        the bad ones) or the source fails to decode; nothing is published then.
    """
    check_stream(stream)
    check_hour(hour)
    options.validate()
    t0 = time.perf_counter()
    store = Store.of(store)
    hdir = store.hour_dir(stream, hour)
    manifest_path = store.hour_manifest(stream, hour)
    old = read_manifest(store, stream, hour)
    if old is not None and not options.force:
        return _result(old, "exists", manifest_path, time.perf_counter() - t0)

    attempt = new_attempt_id()
    adir = f"{hdir}/attempt={attempt}"
    qdir = f"{store.quarantine_dir(stream, hour)}/attempt={attempt}"
    start = hour_start(hour).replace(tzinfo=timezone.utc)
    shape = dtype = schema = staging = None
    idx: list[int] = []
    stamps: list[datetime | None] = []
    files: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    raw_bytes = 0

    def encode(stack: np.ndarray, indices: list[int], times: list) -> dict[str, Any]:
        data = ipc_bytes(_table(schema, stack, indices, times, stream, hour), options.compression)
        return write_part(store, hdir, attempt, number_of[indices[0]], data, len(stack), first_index=indices[0])

    number_of: dict[int, int] = {}  # a part's first frame index -> its part number

    def flush() -> None:
        nonlocal idx, stamps
        if idx:
            number_of[idx[0]] = len(number_of)
            staging.flush(idx, stamps)
            idx, stamps = [], []

    try:
        for fr in frames:
            arr = None if fr.array is None else _as_frame_array(np.asarray(fr.array))
            reason = fr.problem or _check_frame(arr, shape, dtype)
            if reason is not None:
                quarantined.append(_quarantine(store, qdir, fr, arr, reason))
                continue
            if shape is None:
                shape, dtype = arr.shape, arr.dtype
                schema = _schema(shape, dtype)
                staging = _Staging(options.rows_per_shard, shape, dtype, encode)
            staging.add(arr)
            idx.append(fr.index)
            stamps.append(None if fr.seconds is None else start + timedelta(seconds=fr.seconds))
            raw_bytes += arr.nbytes
            if len(idx) >= options.rows_per_shard:
                flush()
        if staging is not None:
            flush()
            files = staging.results()
    except BaseException:
        if staging is not None:
            staging.abort()
        store.remove(adir)  # our own attempt only; nothing was published
        raise
    if not files:
        store.remove(adir)
        extra = f" ({len(quarantined)} frames quarantined under {qdir})" if quarantined else ""
        raise DataError(f"hour {hour} of stream {stream} has no valid frames{extra}")

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stream": stream,
        "hour": hour,
        "attempt": attempt,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "frame_shape": list(shape),
        "dtype": str(dtype),
        "compression": options.compression,
        "rows": sum(f["rows"] for f in files),
        "raw_bytes": raw_bytes,
        "files": files,
        "quarantined": len(quarantined),
        "quarantine": quarantined,
    }
    status = publish_manifest(store, hdir, doc, old if options.force else None)
    if status == "concurrent":
        return _result(read_manifest(store, stream, hour), "concurrent", manifest_path, time.perf_counter() - t0)
    return _result(doc, "ingested" if status == "written" else status, manifest_path, time.perf_counter() - t0)


def _result(doc: dict, status: str, manifest: str, seconds: float) -> IngestResult:
    return IngestResult(
        stream=doc["stream"],
        hour=doc["hour"],
        status=status,
        rows=int(doc["rows"]),
        quarantined=int(doc.get("quarantined", 0)),
        files=len(doc["files"]),
        bytes=sum(int(f["bytes"]) for f in doc["files"]),
        raw_bytes=int(doc.get("raw_bytes", 0)),
        seconds=seconds,
        manifest=manifest,
    )


def _quarantine(store: Store, qdir: str, fr: Frame, arr: np.ndarray | None, reason: str) -> dict[str, Any]:
    """Store a rejected frame (as .npy, or its raw bytes if it never decoded) with its reason."""
    if arr is not None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        name, data = f"frame-{fr.index:06d}.npy", buf.getvalue()
    else:
        name, data = f"frame-{fr.index:06d}.raw", fr.raw or b""
    store.write_bytes(f"{qdir}/{name}", data)
    entry = {"frame_index": fr.index, "reason": reason, "file": f"{qdir.rsplit('/', 1)[-1]}/{name}", "origin": fr.origin}
    store.write_bytes(f"{qdir}/{name}.reason.json", json.dumps(entry).encode())
    return entry


# ----------------------------------------------------------------- reading


def list_hours(store: Store | str, stream: str) -> list[str]:
    """Hours of ``stream`` that have a published manifest, oldest first."""
    return Store.of(store).manifest_hours(stream)


def published_manifest(store: Store | str, stream: str, hour: str) -> dict[str, Any]:
    """:func:`read_manifest`, with NothingToDoError (exit 4) when the hour is not published."""
    doc = read_manifest(store, stream, hour)
    if doc is None:
        raise NothingToDoError(f"stream {stream} has no ingested hour {hour}")
    return doc


def part_urls(store: Store | str, stream: str, hour: str) -> list[str]:
    """Full paths of the part files the manifest names (for plain pyarrow.dataset reads)."""
    store = Store.of(store)
    doc = published_manifest(store, stream, hour)
    hdir = store.hour_dir(stream, hour)
    return [f"{hdir}/{f['path']}" for f in doc["files"]]


def iter_hour_tables(store: Store | str, stream: str, hour: str, verify: bool = True, rows: tuple[int, int] | None = None) -> Iterator[pa.Table]:
    """Yield the Arrow table of each part of a published hour (columns frame, frame_index, timestamp, stream, hour).

    Only files named by the manifest are read; with ``verify`` each file's
    sha256 is checked, so a damaged shard is a one-line DataError. ``rows``
    = (lo, hi) restricts the output to the hour's rows [lo, hi) and opens only
    the parts that hold them (how data-parallel workers read their share).
    """
    store = Store.of(store)
    doc = published_manifest(store, stream, hour)
    hdir = store.hour_dir(stream, hour)
    lo, hi = (0, int(doc["rows"])) if rows is None else rows
    for entry, (start, first) in zip(doc["files"], part_bounds(doc["files"])):
        if first <= lo or start >= hi:
            continue
        a, b = max(lo - start, 0), min(hi, first) - start
        table = read_part(store, hdir, entry, f"stream {stream} hour {hour}", verify=verify)
        if a > 0 or b < table.num_rows:
            table = table.slice(a, b - a)
        yield table


def iter_hour_frames(store: Store | str, stream: str, hour: str, verify: bool = True, rows: tuple[int, int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frames (rows, H, W, C), frame_index (rows,)) per part of a published hour (see :func:`iter_hour_tables`)."""
    for table in iter_hour_tables(store, stream, hour, verify=verify, rows=rows):
        yield table.column("frame").combine_chunks().to_numpy_ndarray(), table.column("frame_index").to_numpy()


def read_rows_at(store: Store | str, stream: str, hour: str, positions: list[int]) -> pa.Table:
    """The rows at the given positions of a published hour (sorted, distinct, in [0, rows)), opening only the parts that hold them."""
    store = Store.of(store)
    doc = published_manifest(store, stream, hour)
    hdir = store.hour_dir(stream, hour)
    wanted = sorted(set(int(p) for p in positions))
    if wanted and (wanted[0] < 0 or wanted[-1] >= int(doc["rows"])):
        raise DataError(f"hour {hour} of stream {stream} has {doc['rows']} rows; asked for row {wanted[-1] if wanted[-1] >= 0 else wanted[0]}")
    tables = []
    for entry, (start, first) in zip(doc["files"], part_bounds(doc["files"])):
        inside = [p - start for p in wanted if start <= p < first]
        if inside:
            tables.append(read_part(store, hdir, entry, f"stream {stream} hour {hour}").take(pa.array(inside, pa.int64())))
    if not tables:
        raise DataError(f"no rows asked for from hour {hour} of stream {stream}")
    return pa.concat_tables(tables)
