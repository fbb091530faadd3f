"""Hourly frame shards: Arrow IPC files published exactly once through a manifest.

One hour of one stream is written as

    HOUR/attempt=ID/part-NNNNN.arrow   (Arrow IPC, lz4, zstd or uncompressed)
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
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DataError, NothingToDoError, UsageError
from .parts import PartWriter, check_level, part_bounds, publish_manifest, read_json_manifest, read_part
from .sources import Frame
from .store import MANIFEST, Store, check_hour, check_stream, hour_start, new_attempt_id  # noqa: F401 (MANIFEST: re-exported for readers of the format)

FORMAT = "lrstream-hour"
FORMAT_VERSION = 1
COMPRESSIONS = ("zstd", "lz4", "none")
# zstd's default level here: on 720p video frames it encodes at about twice
# Arrow's default (level 1) speed for shards ~9% larger; see README, Ingest.
ZSTD_LEVEL = -5


@dataclass(frozen=True)
class WriteOptions:
    """How an hour is written; the ingest flags mirror rows_per_shard, compression and force."""

    rows_per_shard: int = field(default=32, metadata={"help": "frames per Arrow part file"})
    compression: str = field(default="zstd", metadata={"help": f"compression of the Arrow IPC parts (zstd at level {ZSTD_LEVEL} unless a level is given)", "choices": COMPRESSIONS})
    force: bool = field(default=False, metadata={"help": "replace an hour that is already ingested (atomically)"})
    compression_level: int | None = field(default=None, metadata={"help": f"codec level (zstd: negative is faster, up to 22; lz4: 1 to 12); None: zstd {ZSTD_LEVEL}, lz4 1"})
    encode_threads: int = field(default=2, metadata={"help": "parts compressed, hashed and written at once, beside the decoding thread"})

    def validate(self) -> WriteOptions:
        if self.rows_per_shard < 1:
            raise UsageError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.compression_level is not None:
            check_level(self.compression, self.compression_level)
        if self.encode_threads < 1:
            raise UsageError(f"encode_threads must be >= 1, got {self.encode_threads}")
        return self

    @property
    def level(self) -> int | None:
        """The codec level parts are written with: compression_level, else zstd ZSTD_LEVEL, lz4 1 (None: no compression)."""
        return {"zstd": ZSTD_LEVEL, "lz4": 1}.get(self.compression) if self.compression_level is None else self.compression_level


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


def _batch(schema: pa.Schema, stream: str, hour: str, frames: list[np.ndarray], indices: list[int], stamps: list, buf: np.ndarray | None) -> pa.RecordBatch:
    """Rows from ``frames`` (each (H, W, C)): one frame is wrapped without a copy, more are stacked into ``buf``."""
    stack = np.ascontiguousarray(frames[0]).reshape(1, *frames[0].shape) if len(frames) == 1 else np.stack(frames, out=buf[: len(frames)])
    n = len(frames)
    columns = [pa.FixedShapeTensorArray.from_numpy_ndarray(stack), pa.array(indices, pa.int64()), pa.array(stamps, pa.timestamp("us", tz="UTC")), pa.array([stream] * n, pa.string()), pa.array([hour] * n, pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


BATCH_BYTES = 16 << 20  # a part's frames go out in record batches of about this size (at least one frame)


class _Encoder:
    """Parts compressed, hashed and written by ``threads`` threads while the caller decodes the next frames.

    Frames leave in record batches of about BATCH_BYTES (six 720p frames, a
    whole part of small ones) as soon as a batch is full, so only the last
    batch is left to encode when the source ends (32 frames were, with one
    batch a part). Part p's batches go, in order, to thread p % threads,
    which stacks them into its own reused buffer and streams them into the
    part's IPC file; consecutive parts go to different threads, so parts
    are encoded side by side. Codecs, hashlib and file writes release the
    GIL. At most a part per thread waits: the decoder runs a part ahead.
    """

    def __init__(self, new_part, batch, threads: int, rows_per_shard: int, shape: tuple[int, ...], dtype: np.dtype):
        self.new_part, self.batch, self.rows_per_shard = new_part, batch, rows_per_shard
        self.batch_rows = max(1, min(rows_per_shard, BATCH_BYTES // max(1, int(np.prod(shape)) * dtype.itemsize)))
        self.pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lrstream-encode-{i}") for i in range(threads)]
        self.buffers = [np.empty((self.batch_rows, *shape), dtype) if self.batch_rows > 1 else None for _ in range(threads)]  # one per thread, reused
        self.frames, self.indices, self.stamps = [], [], []  # the batch being filled
        self.waiting: deque = deque()
        self.parts: list = []  # [PartWriter, future of its manifest entry] in part order
        self.part_rows = self.first = 0
        self.max_waiting = len(self.pools) * -(-rows_per_shard // self.batch_rows)  # a part per thread: the decoder runs a part ahead

    def add(self, arr: np.ndarray, index: int, stamp) -> None:
        if self.part_rows == 0:
            self.first = index
        self.frames.append(arr)
        self.indices.append(index)
        self.stamps.append(stamp)
        self.part_rows += 1
        if len(self.frames) == self.batch_rows or self.part_rows == self.rows_per_shard:
            self._send()
        if self.part_rows == self.rows_per_shard:
            self._close()

    def _send(self) -> None:
        if len(self.parts) == 0 or self.parts[-1][1] is not None:
            self.parts.append([self.new_part(len(self.parts)), None])
        part, t = self.parts[-1][0], (len(self.parts) - 1) % len(self.pools)
        args = (self.frames, self.indices, self.stamps, self.buffers[t])
        self.waiting.append(self.pools[t].submit(lambda: part.write(self.batch(*args))))
        self.frames, self.indices, self.stamps = [], [], []
        while self.waiting and (self.waiting[0].done() or len(self.waiting) > self.max_waiting):
            self.waiting.popleft().result()  # a failed batch raises here, early

    def _close(self) -> None:
        t = (len(self.parts) - 1) % len(self.pools)
        self.parts[-1][1] = self.pools[t].submit(self.parts[-1][0].close, first_index=self.first)
        self.part_rows = 0

    def results(self) -> list[dict[str, Any]]:
        """Every part's manifest entry, in order, once all are written; raises the first failure."""
        if self.frames:
            self._send()
        if self.part_rows:
            self._close()
        try:
            for f in self.waiting:
                f.result()
            return [f.result() for _, f in self.parts]
        finally:
            self.abort()

    def abort(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)
        for part, _ in self.parts:
            part.discard()


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
            Arrays are encoded after they are yielded: a source must not reuse them.
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
    shape = dtype = encoder = None
    files, quarantined, raw_bytes = [], [], 0
    try:
        for fr in frames:
            arr = None if fr.array is None else np.asarray(fr.array)
            arr = arr[..., None] if arr is not None and arr.ndim == 2 else arr
            reason = fr.problem or _check_frame(arr, shape, dtype)
            if reason is not None:
                quarantined.append(_quarantine(store, qdir, fr, arr, reason))
                continue
            if shape is None:
                shape, dtype = arr.shape, arr.dtype
                schema = _schema(shape, dtype)
                new_part = partial(PartWriter, store, hdir, attempt, schema=schema, compression=options.compression, level=options.level)
                encoder = _Encoder(new_part, partial(_batch, schema, stream, hour), options.encode_threads, options.rows_per_shard, shape, dtype)
            encoder.add(arr, fr.index, None if fr.seconds is None else start + timedelta(seconds=fr.seconds))
            raw_bytes += arr.nbytes
        if encoder is not None:
            files = encoder.results()
    except BaseException:
        if encoder is not None:
            encoder.abort()
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
        "compression_level": options.level,
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
