"""The versioned sketch store of a stream: immutable version folders plus a LATEST pointer.

Paths come from :class:`~lrstream.data.store.Store` (DESIGN.md's layout):

    store.version_dir(S, 1)/_CLAIM       created exclusively; reserves the number
    store.version_dir(S, 1)/meta.json    published last by :func:`~lrstream.data.sketches.write_sketch`
    store.version_dir(S, 1)/*.npy
    store.version_dir(S, 1)/_PROMOTE     written when the version should become LATEST
    store.latest_pointer(S)              JSON {"version": 1}; written after the version

Versions are positive integers, allocated by creating ``_CLAIM``
exclusively (a hard link on local disk, an ``xb`` PUT on object stores),
so two concurrent retrains never write into the same folder. A version is
visible once its meta.json exists; LATEST is replaced atomically and only
ever moves to a complete version, so a reader that follows it never sees a
half-written sketch. Concurrent publishers settle LATEST on the newest
version any of them promoted (see :func:`_settle_latest`). A crash between
the two leaves a complete version that LATEST does not name yet; the next
publish moves past it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..errors import DataError, NothingToDoError, UsageError
from .sketches import META, read_extra_arrays, read_sketch, write_sketch
from .store import Store

LATEST = "LATEST"  # the name store.latest_pointer ends in
_CLAIM = "_CLAIM"
_PROMOTE = "_PROMOTE"  # written once a complete version asks to become LATEST


def version_url(store: Store | str, stream: str, version: int) -> str:
    """The URL of a version folder (keeps the root's protocol, unlike the bare paths fsspec returns)."""
    store = Store.of(store)
    return store.url(store.version_dir(stream, version))


def list_versions(store: Store | str, stream: str) -> list[int]:
    """Complete versions of ``stream`` (those whose meta.json exists), oldest first."""
    store = Store.of(store)
    return [v for v in store.version_numbers(stream) if store.fs.exists(f"{store.version_dir(stream, v)}/{META}")]


def latest_version(store: Store | str, stream: str) -> int | None:
    """The version LATEST names, or None if the stream has no published sketch."""
    store = Store.of(store)
    path = store.latest_pointer(stream)
    raw = store.read_bytes(path)
    if raw is None:
        return None
    try:
        version = int(json.loads(raw)["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"sketch pointer {path} is corrupted: {exc}") from None
    return version


def publish_version(store: Store | str, stream: str, sketch, meta: dict[str, Any] | None = None, move_latest: bool = True, extra: dict | None = None) -> int:
    """Store ``sketch`` as the next version of ``stream`` and point LATEST at it.

    ``meta`` is merged into the sketch's metadata (with the version number);
    ``extra`` names plain arrays stored with it (e.g. the update statistics,
    read back by :func:`load_version_arrays`).
    Returns the new version. Once concurrent publishers return, LATEST names
    the newest version published with ``move_latest``.
    """
    store = Store.of(store)
    store.fs.makedirs(store.sketches_dir(stream), exist_ok=True)
    version = (max(store.version_numbers(stream), default=0)) + 1
    while True:
        vdir = store.version_dir(stream, version)
        if store.publish(f"{vdir}/{_CLAIM}", json.dumps({"version": version}).encode(), exclusive=True):
            break
        version += 1  # another writer claimed this number first
    merged = {**sketch.meta, **(meta or {}), "stream": stream, "version": version}
    write_sketch(store, vdir, replace(sketch, meta=merged), extra)
    if move_latest:
        store.publish(f"{vdir}/{_PROMOTE}", b"{}", exclusive=False)
        _settle_latest(store, stream)
    return version


def _settle_latest(store: Store, stream: str) -> None:
    """Point LATEST at the newest version asked to become current, until a re-read agrees.

    A plain check-then-write lets a slower publisher of an older version
    overwrite a newer LATEST (no compare-and-swap on object stores). Every
    publisher instead marks its version (_PROMOTE, written after the
    sketch is complete) and then loops: write the newest marked version,
    re-read, stop when LATEST names it. The last publisher to stop has read
    LATEST equal to the newest marked version after every other write, so
    once publishers finish LATEST names the newest; meanwhile a reader may
    briefly see an older complete version, never a half-written one.
    """
    while True:
        marked = (v for v in store.version_numbers(stream) if store.fs.exists(f"{store.version_dir(stream, v)}/{_PROMOTE}"))
        newest = max(marked, default=None)
        current = latest_version(store, stream)
        if newest is None or (current is not None and current >= newest):
            return
        store.publish(store.latest_pointer(stream), json.dumps({"version": newest}).encode(), exclusive=False)


def load_version(store: Store | str, stream: str, version: int | None = None):
    """Load version ``version`` of the stream's sketch, or the one LATEST names.

    Raises NothingToDoError (exit 4) when the stream has no sketch (or no such
    version) and DataError (exit 3) when the stored sketch is damaged.
    """
    store = Store.of(store)
    if version is None:
        version = latest_version(store, stream)
        if version is None:
            raise NothingToDoError(f"stream {stream} has no sketch yet under {store.root} (run `lrstream train` first)")
    elif int(version) < 1:
        raise UsageError(f"bad sketch version {version}: versions are positive integers")
    try:
        return read_sketch(store, store.version_dir(stream, int(version)))
    except NothingToDoError:
        raise NothingToDoError(f"stream {stream} has no sketch version {version}") from None


def load_version_arrays(store: Store | str, stream: str, version: int) -> dict:
    """The extra arrays published with a version ({} for one published without any), checksum-verified."""
    store = Store.of(store)
    return read_extra_arrays(store, store.version_dir(stream, int(version)))
