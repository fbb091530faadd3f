"""The exactly-once part protocol that frame shards and factor shards share.

A dataset folder (one hour of frames, or one hour's factors for one sketch
version) is written as

    FOLDER/attempt=ID/part-NNNNN.arrow   Arrow IPC files, each with its sha256
    FOLDER/_MANIFEST.json                names the parts; published last, atomically

Readers trust only the parts the manifest names, so a killed writer leaves
nothing visible; two concurrent writers both write parts under their own
attempt, exactly one publishes (create-exclusive) and the loser removes its
attempt; ``force`` replaces the manifest atomically, then removes the parts
it named before.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa
from pyarrow import ipc

from ..errors import DataError, UsageError
from .store import MANIFEST, Store


def ipc_bytes(table: pa.Table, compression: str) -> pa.Buffer:
    """``table`` as one Arrow IPC file ("zstd", "lz4" or "none"), in an Arrow buffer (bytes-like: hashlib and file writes take it).

    Arrow's own output stream grows without the copies a BytesIO makes, and
    hands the buffer over without another.
    """
    sink = pa.BufferOutputStream()
    opts = ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    with ipc.new_file(sink, table.schema, options=opts) as writer:
        writer.write_table(table)
    return sink.getvalue()


def check_level(compression: str, level: int) -> int:
    """``level`` if the codec takes it, else a UsageError naming the codec's range."""
    if compression == "none" or not pa.Codec.supports_compression_level(compression):
        raise UsageError(f"compression {compression} takes no level")
    lo, hi = pa.Codec.minimum_compression_level(compression), pa.Codec.maximum_compression_level(compression)
    if not lo <= level <= hi:
        raise UsageError(f"{compression} level must be in [{lo}, {hi}], got {level}")
    return level


def write_part(store: Store, folder: str, attempt: str, number: int, data, rows: int, **extra: Any) -> dict[str, Any]:
    """Write part ``number`` of ``attempt`` under ``folder``; returns its manifest entry (path relative to ``folder``)."""
    name = f"attempt={attempt}/part-{number:05d}.arrow"
    store.write_bytes(f"{folder}/{name}", data)
    return {"path": name, "rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), **extra}


class _HashingFile:
    """A write-only file object that feeds what it writes to sha256 on the way (Arrow's writer takes any such object)."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)  # hashlib and file writes release the GIL for large buffers
        self.f.write(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self.f.closed

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class PartWriter:
    """Part ``number`` of ``attempt`` written as it comes: record batches stream into the Arrow IPC file on the store.

    The bytes are hashed as they are written, so no part is ever held
    whole in memory and nothing is read twice; :meth:`close` gives the same
    manifest entry as :func:`write_part`. Nothing opens before the first
    batch. Used by one thread at a time.
    """

    def __init__(self, store: Store, folder: str, attempt: str, number: int, schema: pa.Schema, compression: str, level: int | None = None):
        self.path = f"{folder}/attempt={attempt}/part-{number:05d}.arrow"
        self.name = self.path[len(folder) + 1 :]
        self.store, self.schema, self.rows = store, schema, 0
        self.codec = None if compression == "none" else pa.Codec(compression, compression_level=level)
        self.file = self.writer = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self.writer is None:
            self.file = _HashingFile(self.store.open_write(self.path))
            self.writer = ipc.new_file(self.file, self.schema, options=ipc.IpcWriteOptions(compression=self.codec, use_threads=False))
        self.writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self, **extra: Any) -> dict[str, Any]:
        """Finish the file (footer, close); its manifest entry, path relative to the folder."""
        self.writer.close()
        self.file.close()
        return {"path": self.name, "rows": self.rows, "bytes": self.file.size, "sha256": self.file.sha.hexdigest(), **extra}

    def discard(self) -> None:
        """Close without finishing (the attempt is being removed)."""
        if self.file is not None and not self.file.closed:
            self.file.close()


def read_part(store: Store, folder: str, entry: dict[str, Any], what: str, verify: bool = True) -> pa.Table:
    """The table of one manifest entry; a missing, damaged or unreadable part is a one-line DataError naming ``what``."""
    data = store.read_bytes(f"{folder}/{entry['path']}")
    if data is None:
        raise DataError(f"shard {entry['path']} of {what} is missing")
    if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"shard {entry['path']} of {what} is corrupted (checksum mismatch)")
    try:
        return ipc.open_file(pa.BufferReader(data)).read_all()
    except pa.ArrowInvalid as exc:
        raise DataError(f"shard {entry['path']} of {what} is unreadable: {exc}") from None


def part_bounds(files: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The row range [lo, hi) of each part a manifest lists, in order (rows are counted across the parts)."""
    bounds, first = [], 0
    for entry in files:
        bounds.append((first, first + int(entry["rows"])))
        first += int(entry["rows"])
    return bounds


def read_json_manifest(store: Store, folder: str, format_name: str, what: str) -> dict[str, Any] | None:
    """The published manifest of ``folder`` if it is one of ``format_name``; None if none is published."""
    raw = store.read_bytes(f"{folder}/{MANIFEST}")
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != format_name:
            raise ValueError(f"not an {format_name} manifest")
        return doc
    except ValueError as exc:
        raise DataError(f"manifest of {what} is corrupted: {exc}") from None


def publish_manifest(store: Store, folder: str, doc: dict[str, Any], old: dict[str, Any] | None) -> str:
    """Publish ``doc`` (its parts already written under ``attempt=doc["attempt"]``) as the folder's manifest.

    With ``old`` (the manifest being replaced, i.e. force) the swap is atomic
    and the old attempt's parts go afterwards: "replaced". Otherwise the
    manifest is created only if absent: "written", or "concurrent" when
    another writer published first (this attempt's parts are removed).
    """
    path = f"{folder}/{MANIFEST}"
    payload = json.dumps(doc, indent=1).encode()
    if old is not None:
        store.publish(path, payload, exclusive=False)
        if old.get("attempt") != doc["attempt"]:
            store.remove(f"{folder}/attempt={old.get('attempt')}")
        return "replaced"
    if not store.publish(path, payload, exclusive=True):
        store.remove(f"{folder}/attempt={doc['attempt']}")
        return "concurrent"
    return "written"
