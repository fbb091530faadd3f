"""Factor shards: every frame's stored rank-k factors, the product users read back.

One hour of one stream, approximated with sketch version V, is written as

    store.factors_dir(S, H, V)/attempt=ID/part-NNNNN.arrow
    store.factors_dir(S, H, V)/_MANIFEST.json            published last

with the exactly-once protocol of :mod:`lrstream.data.parts` (the one frame
shards use). Each row holds one frame:

    frame_index int64, timestamp (UTC, from the frame's shard),
    L  fixed_shape_tensor (n, k)  float16 or float32,
    R  fixed_shape_tensor (k, d)  same dtype,
    error      float64  ||A - L R||_F, with L and R as stored,
    rel_error  float64  error / ||A||_F,
    norm       float64  ||A||_F,

where A is the frame as a matrix (channels stacked as rows, (C*H, W), or
(H, W) luminance for a gray sketch). L R approximates A in the frames' own
units (0..255 for 8-bit video). The manifest carries the sketch version,
kind, k and m, the raw and factor bytes, the compression ratio raw/factors
and the mean errors. Plain pyarrow reads a part:
``pyarrow.ipc.open_file(path).read_all()``; :func:`reconstruct` turns a
row back into a uint8 (H, W, C) frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import DataError, NothingToDoError
from .parts import publish_manifest, read_json_manifest, read_part
from .store import MANIFEST, Store

FORMAT = "lrstream-factors"
FORMAT_VERSION = 1


def factor_schema(n: int, k: int, d: int, dtype: str) -> pa.Schema:
    value = pa.from_numpy_dtype(np.dtype(dtype))
    return pa.schema(
        [
            pa.field("frame_index", pa.int64()),
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("L", pa.fixed_shape_tensor(value, (n, k))),
            pa.field("R", pa.fixed_shape_tensor(value, (k, d))),
            pa.field("error", pa.float64()),
            pa.field("rel_error", pa.float64()),
            pa.field("norm", pa.float64()),
        ]
    )


def factor_table(frame_index: np.ndarray, timestamps: pa.Array, L: np.ndarray, R: np.ndarray, errors: np.ndarray, rel_errors: np.ndarray, norms: np.ndarray) -> pa.Table:
    """One part's rows: L (B, n, k), R (B, k, d) in the storage dtype, the rest (B,)."""
    B, n, k = L.shape
    schema = factor_schema(n, k, R.shape[-1], str(L.dtype))
    return pa.table(
        {
            "frame_index": pa.array(frame_index, pa.int64()),
            "timestamp": timestamps.cast(pa.timestamp("us", tz="UTC")),
            "L": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(L)),
            "R": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(R)),
            "error": pa.array(errors, pa.float64()),
            "rel_error": pa.array(rel_errors, pa.float64()),
            "norm": pa.array(norms, pa.float64()),
        },
        schema=schema,
    )


def _what(stream: str, hour: str, version: int) -> str:
    return f"factors of stream {stream} hour {hour} version {version}"


def read_factors_manifest(store: Store | str, stream: str, hour: str, version: int) -> dict[str, Any] | None:
    """The published factors manifest of (hour, version), or None if that hour was not applied with that version."""
    store = Store.of(store)
    return read_json_manifest(store, store.factors_dir(stream, hour, version), FORMAT, _what(stream, hour, version))


def factor_versions(store: Store | str, stream: str, hour: str) -> list[int]:
    """Sketch versions with published factors for ``hour``, ascending (folders without a manifest are skipped)."""
    store = Store.of(store)
    base = store.factors_hour_dir(stream, hour)
    found = []
    for path in store.fs.glob(f"{base}/v=*/{MANIFEST}"):
        m = re.fullmatch(r"v=(\d+)", path.rsplit("/", 2)[-2])
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def publish_factors(store: Store | str, stream: str, hour: str, version: int, attempt: str, entries: list[dict[str, Any]], info: dict[str, Any], old: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Publish the manifest of parts already written under ``attempt``; returns (status, manifest).

    ``entries`` are :func:`lrstream.data.parts.write_part` entries carrying
    ``first_row``, ``error_sum`` and ``rel_error_sum``; they are listed in row
    order. ``info`` holds the sketch and frame fields (kind, k, m, n, d,
    frame_shape, gray, dtype, raw_bytes, frames_attempt). ``old`` is the
    manifest being replaced (force). status: "written", "replaced" or
    "concurrent" (another run published first; its manifest is returned).
    """
    store = Store.of(store)
    if not entries:
        raise DataError(f"no factors to publish for stream {stream} hour {hour}")
    entries = sorted(entries, key=lambda e: e["first_row"])
    rows = sum(int(e["rows"]) for e in entries)
    factor_bytes = sum(int(e["bytes"]) for e in entries)
    raw = int(info["raw_bytes"])
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stream": stream,
        "hour": hour,
        "version": int(version),
        "attempt": attempt,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
        "rows": rows,
        "factor_bytes": factor_bytes,
        "ratio": raw / factor_bytes if factor_bytes else None,
        "mean_error": sum(float(e["error_sum"]) for e in entries) / rows,
        "mean_rel_error": sum(float(e["rel_error_sum"]) for e in entries) / rows,
        "files": entries,
    }
    folder = store.factors_dir(stream, hour, version)
    status = publish_manifest(store, folder, doc, old)
    if status == "concurrent":
        return status, read_factors_manifest(store, stream, hour, version)
    return status, doc


def iter_factor_tables(store: Store | str, stream: str, hour: str, version: int, verify: bool = True) -> Iterator[pa.Table]:
    """The table of each part the (hour, version) manifest names, in row order."""
    store = Store.of(store)
    doc = read_factors_manifest(store, stream, hour, version)
    if doc is None:
        raise NothingToDoError(f"stream {stream} hour {hour} has no factors for sketch version {version} (run `lrstream apply`)")
    folder = store.factors_dir(stream, hour, version)
    for entry in doc["files"]:
        yield read_part(store, folder, entry, _what(stream, hour, version), verify=verify)


def read_factor_errors(store: Store | str, stream: str, hour: str, version: int) -> dict[str, np.ndarray]:
    """frame_index, error, rel_error and norm of every stored frame of (hour, version), each (rows,)."""
    cols: dict[str, list[np.ndarray]] = {name: [] for name in ("frame_index", "error", "rel_error", "norm")}
    for table in iter_factor_tables(store, stream, hour, version):
        for name, parts in cols.items():
            parts.append(table.column(name).to_numpy())
    return {name: np.concatenate(parts) for name, parts in cols.items()}


def read_frame_factors(store: Store | str, stream: str, hour: str, version: int, frame_index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(L (n, k), R (k, d), row) of one stored frame; the row has frame_index, timestamp, error, rel_error, norm."""
    for table in iter_factor_tables(store, stream, hour, version):
        hits = np.flatnonzero(table.column("frame_index").to_numpy() == int(frame_index))
        if hits.size:
            row = table.slice(int(hits[0]), 1)
            L = row.column("L").combine_chunks().to_numpy_ndarray()[0]
            R = row.column("R").combine_chunks().to_numpy_ndarray()[0]
            meta = {name: row.column(name)[0].as_py() for name in ("frame_index", "timestamp", "error", "rel_error", "norm")}
            return L, R, meta
    raise NothingToDoError(f"stream {stream} hour {hour} has no stored factors for frame {frame_index}")


def matrix_to_frame(A: np.ndarray, frame_shape, gray: bool = False) -> np.ndarray:
    """Matrices (..., C*H, W) (channels stacked as rows) or (..., H, W) gray back to uint8 frames (..., H, W, C), rounded and clipped to [0, 255]."""
    A = np.asarray(A)
    H, W = int(frame_shape[0]), int(frame_shape[1])
    C = 1 if gray or len(frame_shape) < 3 else int(frame_shape[2])
    if A.shape[-2:] != (C * H, W):
        raise DataError(f"factors give {A.shape[-2]}x{A.shape[-1]} matrices, frames of shape {tuple(frame_shape)} need {C * H}x{W}")
    frames = np.moveaxis(A.reshape(*A.shape[:-2], C, H, W), -3, -1)  # (..., H, W, C)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def reconstruct(L: np.ndarray, R: np.ndarray, frame_shape, gray: bool = False) -> np.ndarray:
    """The frame L @ R back as uint8 (H, W, C), rounded and clipped to [0, 255].

    Args:
        L: (n, k) and R: (k, d), or batched (B, n, k), (B, k, d).
        frame_shape: the stored frames' (H, W, C).
        gray: the factors approximate (H, W) luminance; the result is (H, W, 1).
    """
    return matrix_to_frame(np.asarray(L, dtype=np.float32) @ np.asarray(R, dtype=np.float32), frame_shape, gray)  # (..., n, d) first
