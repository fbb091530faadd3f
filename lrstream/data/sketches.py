"""Sketch persistence: plain .npy arrays plus a JSON manifest in any folder of a store.

Layout of a saved sketch in FOLDER (a URL, or a version folder of the store):

    FOLDER/positions.npy, FOLDER/values.npy, FOLDER/trainable.npy   (sparse)
    FOLDER/matrix.npy                                               (dense)
    FOLDER/update_gram.npy ...                                      (optional extra arrays, e.g. update statistics)
    FOLDER/meta.json     published last; names every array with dtype, shape, sha256

The arrays are the numerics' own plain form
(:func:`lrstream.numerics.sketch.sketch_arrays` and its inverse
:func:`~lrstream.numerics.sketch.sketch_from_arrays`, which checks shapes,
ranges and finiteness); this module only stores them. Readers trust only
what meta.json names and verify each array's checksum
(:mod:`lrstream.data.arrays`), so a half-written or tampered sketch is
refused with a one-line error. Nothing on this path unpickles.
"""

from __future__ import annotations

import json

from ..errors import DataError, NothingToDoError
from ..numerics.sketch import (
    DENSE_ARRAYS,
    SPARSE_ARRAYS,
    Sketch,
    sketch_arrays,
    sketch_from_arrays,
)
from .arrays import read_array, read_arrays, write_arrays
from .store import Store

FORMAT = "lrstream-sketch"
FORMAT_VERSION = 1
META = "meta.json"


def write_sketch(store: Store | str, folder: str, sketch: Sketch, extra: dict | None = None) -> None:
    """Write ``sketch`` into ``folder`` of ``store``; meta.json goes last so readers never see a partial sketch.

    ``extra`` names further plain arrays stored beside it (checksummed under meta.json's "extra_arrays";
    readers of the sketch alone ignore them, and folders written without them still load).
    """
    store = Store.of(store)
    type_, arrays = sketch_arrays(sketch)
    if extra and set(extra) & set(arrays):
        raise DataError(f"extra arrays {sorted(set(extra) & set(arrays))} clash with the sketch's own")
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "type": type_,
        "m": sketch.m,
        "n": sketch.n,
        "arrays": write_arrays(store, folder, arrays),
        "meta": sketch.meta,
    }
    if extra:
        doc["extra_arrays"] = write_arrays(store, folder, extra)
    store.publish(f"{folder}/{META}", json.dumps(doc, indent=1, allow_nan=False).encode(), exclusive=False)


def read_sketch(store: Store | str, folder: str) -> Sketch:
    """The sketch saved in ``folder`` of ``store``.

    Raises NothingToDoError (exit 4) when there is no sketch there and
    DataError (exit 3) when it is truncated, corrupted or inconsistent;
    messages name the folder's URL.
    """
    store = Store.of(store)
    url = store.url(folder)
    raw = store.read_bytes(f"{folder}/{META}")
    if raw is None:
        raise NothingToDoError(f"no sketch at {url} ({META} not found)")
    try:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise DataError(f"{url} is not an lrstream sketch (format {doc.get('format')!r})")
        if int(doc.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError(f"sketch at {url} has format version {doc['format_version']}, newer than this lrstream reads ({FORMAT_VERSION})")
        type_, m, n, entries, meta = doc["type"], int(doc["m"]), int(doc["n"]), doc["arrays"], doc.get("meta", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"sketch metadata at {url} is corrupted: {exc.__class__.__name__}: {exc}") from None
    needed = SPARSE_ARRAYS if type_ == "sparse" else DENSE_ARRAYS
    if type_ not in ("sparse", "dense") or not isinstance(entries, dict) or any(name not in entries for name in needed):
        raise DataError(f"sketch metadata at {url} does not describe a {type_!r} sketch")
    arrays = {name: read_array(store, folder, name, entries[name]) for name in needed}
    try:
        return sketch_from_arrays(type_, m, n, arrays, meta)
    except DataError as exc:
        raise DataError(f"{url}: {exc}") from None


def read_extra_arrays(store: Store | str, folder: str) -> dict:
    """The extra arrays stored beside the sketch in ``folder`` ({} for a folder written without them), each checksum-verified."""
    store = Store.of(store)
    raw = store.read_bytes(f"{folder}/{META}")
    if raw is None:
        raise NothingToDoError(f"no sketch at {store.url(folder)} ({META} not found)")
    try:
        entries = json.loads(raw).get("extra_arrays") or {}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"sketch metadata at {store.url(folder)} is corrupted: {exc}") from None
    return read_arrays(store, folder, entries)


def save_sketch(sketch: Sketch, url: str) -> None:
    """Write ``sketch`` as a folder at ``url`` (any fsspec URL); :func:`load_sketch` reads it back."""
    store = Store(url)
    write_sketch(store, store.base, sketch)


def load_sketch(url: str) -> Sketch:
    """Load the sketch saved at ``url`` by :func:`save_sketch` (or a published version folder).

    Raises NothingToDoError (exit 4) when there is no sketch at ``url`` and
    DataError (exit 3) when it is truncated, corrupted or inconsistent.
    """
    store = Store(url)
    return read_sketch(store, store.base)
