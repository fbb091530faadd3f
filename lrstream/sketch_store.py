"""The versioned sketch store of a stream: immutable version folders plus a LATEST pointer.

Layout under one ROOT URL (DESIGN.md):

    sketches/stream=S/v=000001/_CLAIM        created exclusively; reserves the number
    sketches/stream=S/v=000001/meta.json     written last by :func:`save_sketch`
    sketches/stream=S/v=000001/*.npy
    sketches/stream=S/v=000001/_PROMOTE      written when the version should become LATEST
    sketches/stream=S/LATEST                 JSON {"version": 1}; written after the version

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

from .errors import DataError, NothingToDoError, UsageError
from .sketch_io import META, load_sketch, save_sketch
from .storage import check_stream, numbered_children, publish, url_to_fs

LATEST = "LATEST"
_CLAIM = "_CLAIM"
_PROMOTE = "_PROMOTE"  # written once a complete version asks to become LATEST


def stream_dir(root: str, stream: str) -> str:
    _, base = url_to_fs(root)
    return f"{base}/sketches/stream={check_stream(stream)}"


def version_url(root: str, stream: str, version: int) -> str:
    """The URL of a version folder (keeps the root's protocol, unlike the bare paths fsspec returns)."""
    return f"{root.rstrip('/')}/sketches/stream={check_stream(stream)}/v={int(version):06d}"


def _claimed_versions(fs, sdir: str) -> list[int]:
    return numbered_children(fs, sdir, "v=")


def list_versions(root: str, stream: str) -> list[int]:
    """Complete versions of ``stream`` (those whose meta.json exists), oldest first."""
    fs, _ = url_to_fs(root)
    sdir = stream_dir(root, stream)
    return [v for v in _claimed_versions(fs, sdir) if fs.exists(f"{sdir}/v={v:06d}/{META}")]


def latest_version(root: str, stream: str) -> int | None:
    """The version LATEST names, or None if the stream has no published sketch."""
    fs, _ = url_to_fs(root)
    path = f"{stream_dir(root, stream)}/{LATEST}"
    try:
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        version = int(json.loads(raw)["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"sketch pointer {path} is corrupted: {exc}") from None
    return version


def publish_version(root: str, stream: str, sketch, meta: dict[str, Any] | None = None, move_latest: bool = True) -> int:
    """Store ``sketch`` as the next version of ``stream`` and point LATEST at it.

    ``meta`` is merged into the sketch's metadata (with the version number).
    Returns the new version. Once concurrent publishers return, LATEST names
    the newest version published with ``move_latest``.
    """
    fs, _ = url_to_fs(root)
    sdir = stream_dir(root, stream)
    fs.makedirs(sdir, exist_ok=True)
    version = (max(_claimed_versions(fs, sdir), default=0)) + 1
    while True:
        vdir = f"{sdir}/v={version:06d}"
        fs.makedirs(vdir, exist_ok=True)
        if publish(fs, f"{vdir}/{_CLAIM}", json.dumps({"version": version}).encode(), exclusive=True):
            break
        version += 1  # another writer claimed this number first
    merged = {**sketch.meta, **(meta or {}), "stream": stream, "version": version}
    save_sketch(replace(sketch, meta=merged), version_url(root, stream, version))
    if move_latest:
        publish(fs, f"{vdir}/{_PROMOTE}", b"{}", exclusive=False)
        _settle_latest(root, stream, fs, sdir)
    return version


def _settle_latest(root: str, stream: str, fs, sdir: str) -> None:
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
        newest = max((v for v in _claimed_versions(fs, sdir) if fs.exists(f"{sdir}/v={v:06d}/{_PROMOTE}")), default=None)
        current = latest_version(root, stream)
        if newest is None or (current is not None and current >= newest):
            return
        publish(fs, f"{sdir}/{LATEST}", json.dumps({"version": newest}).encode(), exclusive=False)


def load_version(root: str, stream: str, version: int | None = None):
    """Load version ``version`` of the stream's sketch, or the one LATEST names.

    Raises NothingToDoError (exit 4) when the stream has no sketch (or no such
    version) and DataError (exit 3) when the stored sketch is damaged.
    """
    if version is None:
        version = latest_version(root, stream)
        if version is None:
            raise NothingToDoError(f"stream {stream} has no sketch yet under {root} (run `lrstream train` first)")
    elif int(version) < 1:
        raise UsageError(f"bad sketch version {version}: versions are positive integers")
    try:
        return load_sketch(version_url(root, stream, int(version)))
    except NothingToDoError:
        raise NothingToDoError(f"stream {stream} has no sketch version {version}") from None
