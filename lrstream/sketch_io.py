"""Sketch persistence: plain .npy arrays plus a JSON manifest on any fsspec URL.

Layout of a saved sketch at URL (a folder):

    URL/positions.npy, URL/values.npy, URL/trainable.npy   (sparse)
    URL/matrix.npy                                          (dense)
    URL/meta.json        written last; names every array with dtype, shape, sha256

Readers trust only what meta.json names, and verify each array's checksum,
so a half-written or tampered sketch is refused with a one-line error.
Arrays are read with ``allow_pickle=False``: nothing on this path unpickles.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import torch

from .errors import DataError, NothingToDoError
from .sketch import DenseSketch, SparseSketch
from .storage import url_to_fs

FORMAT = "lrstream-sketch"
FORMAT_VERSION = 1
META = "meta.json"


def _arrays(sketch) -> dict[str, np.ndarray]:
    if isinstance(sketch, SparseSketch):
        return {
            "positions": sketch.positions.cpu().numpy().astype(np.int64),
            "values": sketch.values.detach().cpu().numpy(),
            "trainable": sketch.trainable.cpu().numpy().astype(np.bool_),
        }
    return {"matrix": sketch.matrix.detach().cpu().numpy()}


def write_arrays(fs, root: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write each array as root/NAME.npy; returns the entries (file, dtype, shape, sha256) for a manifest."""
    fs.makedirs(root, exist_ok=True)
    entries: dict[str, Any] = {}
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        raw = buf.getvalue()
        fname = f"{name}.npy"
        with fs.open(f"{root}/{fname}", "wb") as f:
            f.write(raw)
        entries[name] = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": hashlib.sha256(raw).hexdigest()}
    return entries


def save_sketch(sketch, url: str) -> None:
    """Write ``sketch`` under ``url``; meta.json goes last so readers never see a partial sketch."""
    fs, root = url_to_fs(url)
    entries = write_arrays(fs, root, _arrays(sketch))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "type": "sparse" if isinstance(sketch, SparseSketch) else "dense",
        "m": sketch.m,
        "n": sketch.n,
        "arrays": entries,
        "meta": sketch.meta,
    }
    with fs.open(f"{root}/{META}", "w") as f:
        json.dump(doc, f, indent=1, allow_nan=False)


def read_array(fs, root: str, name: str, entry: dict) -> np.ndarray:
    """Read one array a manifest names, verifying its checksum, shape and dtype (never unpickles)."""
    path = f"{root}/{entry['file']}"
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{root} is missing its array file {entry['file']}") from None
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise DataError(f"array {entry['file']} at {root} is corrupted (checksum mismatch)")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"array {entry['file']} at {root} is unreadable: {exc}") from None
    if list(arr.shape) != list(entry["shape"]) or str(arr.dtype) != entry["dtype"]:
        raise DataError(f"array {name} at {root} has shape {arr.shape} {arr.dtype}, meta says {entry['shape']} {entry['dtype']}")
    return arr


def load_sketch(url: str):
    """Load a sketch saved by :meth:`SparseSketch.save` / :meth:`DenseSketch.save`.

    Raises NothingToDoError (exit 4) when there is no sketch at ``url`` and
    DataError (exit 3) when it is truncated, corrupted or inconsistent.
    """
    fs, root = url_to_fs(url)
    try:
        with fs.open(f"{root}/{META}", "r") as f:
            text = f.read()
    except FileNotFoundError:
        raise NothingToDoError(f"no sketch at {url} ({META} not found)") from None
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise DataError(f"{url} is not an lrstream sketch (format {doc.get('format')!r})")
        if int(doc.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(f"sketch at {url} has format version {doc['format_version']}, newer than this lrstream reads ({FORMAT_VERSION})")
        kind, m, n, entries, meta = doc["type"], int(doc["m"]), int(doc["n"]), doc["arrays"], doc.get("meta", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"sketch metadata at {url} is corrupted: {exc.__class__.__name__}: {exc}") from None
    needed = ("positions", "values", "trainable") if kind == "sparse" else ("matrix",)
    if kind not in ("sparse", "dense") or any(name not in entries for name in needed):
        raise DataError(f"sketch metadata at {url} does not describe a {kind!r} sketch")
    arrays = {name: read_array(fs, root, name, entries[name]) for name in needed}
    if kind == "dense":
        mat = arrays["matrix"]
        if mat.shape != (m, n) or not np.isfinite(mat).all():
            raise DataError(f"dense sketch at {url} is inconsistent: shape {mat.shape}, meta says ({m}, {n}), or non-finite")
        return DenseSketch(torch.from_numpy(mat.copy()), meta)
    pos, vals, train = arrays["positions"], arrays["values"], arrays["trainable"]
    if pos.ndim != 2 or pos.shape[1] != n or vals.shape != pos.shape or train.shape != pos.shape:
        raise DataError(f"sparse sketch at {url} has inconsistent array shapes")
    if pos.size and (pos.min() < 0 or pos.max() >= m):
        raise DataError(f"sparse sketch at {url} has positions outside [0, {m})")
    if not np.isfinite(vals).all():
        raise DataError(f"sparse sketch at {url} has non-finite values")
    return SparseSketch(torch.from_numpy(pos.copy()), torch.from_numpy(vals.copy()), torch.from_numpy(train.copy()), m, meta)
