"""Checksummed .npy arrays in a folder of a :class:`~lrstream.data.store.Store`.

A writer stores each array as ``FOLDER/NAME.npy`` and records, in a JSON
document it publishes last (a sketch's meta.json, a checkpoint's
state.json), one entry per array: file, dtype, shape and sha256. A reader
loads only what such an entry names and refuses any mismatch, so a
truncated, flipped or swapped file is a one-line DataError. Arrays are read
with ``allow_pickle=False``: nothing on this path unpickles.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from ..errors import DataError
from .store import Store


def write_arrays(store: Store | str, folder: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write each array as folder/NAME.npy; returns the entries {name: {file, dtype, shape, sha256}} for a manifest."""
    store = Store.of(store)
    entries: dict[str, Any] = {}
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        raw = buf.getvalue()
        fname = f"{name}.npy"
        store.write_bytes(f"{folder}/{fname}", raw)
        entries[name] = {"file": fname, "dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": hashlib.sha256(raw).hexdigest()}
    return entries


def read_array(store: Store | str, folder: str, name: str, entry: dict) -> np.ndarray:
    """Read the array ``entry`` names, verifying its checksum, shape and dtype (never unpickles)."""
    store = Store.of(store)
    raw = store.read_bytes(f"{folder}/{entry['file']}")
    if raw is None:
        raise DataError(f"{folder} is missing its array file {entry['file']}")
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise DataError(f"array {entry['file']} at {folder} is corrupted (checksum mismatch)")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"array {entry['file']} at {folder} is unreadable: {exc}") from None
    if list(arr.shape) != list(entry["shape"]) or str(arr.dtype) != entry["dtype"]:
        raise DataError(f"array {name} at {folder} has shape {arr.shape} {arr.dtype}, meta says {entry['shape']} {entry['dtype']}")
    return arr


def read_arrays(store: Store | str, folder: str, entries: dict[str, dict]) -> dict[str, np.ndarray]:
    """Every array a manifest's ``entries`` name, each checked as :func:`read_array` does."""
    store = Store.of(store)
    return {name: read_array(store, folder, name, entry) for name, entry in entries.items()}
