"""Garbage collection: remove attempt folders that no manifest names and that are older than a threshold.

What it scans, for one stream or every stream under the root:

    frames/stream=S/hour=H/attempt=ID/              the hour's parts
    factors/stream=S/hour=H/v=V/attempt=ID/         one version's factor parts
    quarantine/stream=S/hour=H/attempt=ID/          frames an ingest rejected
    frames/..., factors/..., reports/... PATH.<id>.tmp   leftovers of a local publish

The rule. An attempt folder is removed only if

(a) the published manifest of its folder (``_MANIFEST.json``, re-read just
    before removing) does not name it: neither its ``"attempt"`` nor the
    ``attempt=ID/`` prefix of any file it lists (an unreadable manifest keeps
    every attempt of its folder), and
(b) every file in it is older than ``older_than_seconds`` (default a day) by
    the filesystem's modified time; a folder with any file of unknown age is
    kept and reported as unknown-age.

A quarantine attempt is kept while the hour's manifest names it; one the
manifest does not name (a replaced ingest's, a concurrent loser's) goes
under (b), but only once the hour *has* a manifest: the quarantine of an
hour whose ingest failed outright (every frame rejected) is the only record
of why, so it is kept ("kept_evidence") for a person to look at and remove.

Why it is safe. A writer writes all its parts under a fresh attempt and
publishes the manifest naming that attempt only after they all exist; readers
trust only the manifest. So an attempt the manifest names is never touched,
and one it does not name is either dead (a killed writer, a replaced or losing
attempt) or a live writer's, whose files are young because it keeps writing
them; a day is far longer than any attempt takes. The one residual case is a
writer that stalls without writing a file for longer than the threshold and
then publishes: its manifest would name removed parts, which readers report as
a missing shard (exit 3), never as wrong data.

Left alone: ``sketches/`` (versions, ``_CLAIM``-only folders of a possibly
live retrain, checkpoints, ``LATEST``) and ``reports/`` rows; only stale
``*.tmp`` files are removed from ``reports/``.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

from ..errors import UsageError
from .store import MANIFEST, Store

_ATTEMPT_RE = re.compile(r"^attempt=([^/]+)$")
_TMP_RE = re.compile(r"\.[0-9a-f]{16}\.tmp$")  # PATH.<new_attempt_id()>.tmp, see store.publish
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")  # local first: its "created" is ctime
TOPS = ("frames", "factors", "quarantine")


def file_time(info: dict[str, Any]) -> float | None:
    """Seconds since the epoch when the file was last written, from an fsspec info dict; None if it carries no time."""
    for key in _TIME_KEYS:
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _named_attempts(store: Store, folder: str, key: str = "files") -> set[str] | None:
    """The attempts the folder's published manifest names (empty set: no manifest); None if it is unreadable or names none."""
    raw = store.read_bytes(f"{folder}/{MANIFEST}")
    if raw is None:
        return set()
    try:
        doc = json.loads(raw)
        names = {str(doc["attempt"])} if doc.get("attempt") is not None else set()
        for entry in doc.get(key) or []:
            head = str(entry.get("path") or entry.get("file") or "").split("/", 1)[0]
            if m := _ATTEMPT_RE.match(head):
                names.add(m.group(1))
        return names or None  # a manifest that names no attempt is a format this module does not know: keep everything
    except (ValueError, TypeError, AttributeError):
        return None


def _children(store: Store, path: str, pattern: str) -> list[str]:
    """Directories directly under ``path`` whose name matches ``pattern`` (regex), sorted; [] if it does not exist."""
    try:
        entries = store.fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    rx = re.compile(pattern)
    return sorted(e["name"].rstrip("/") for e in entries if e.get("type") == "directory" and rx.match(e["name"].rstrip("/").rsplit("/", 1)[-1]))


def _streams(store: Store, area: str, stream: str | None) -> list[tuple[str, str]]:
    """(name, folder) of ``stream``, or of every stream with a folder in ``area``."""
    names = [stream] if stream is not None else store.stream_names(area)
    return [(name, store.stream_dir(area, name)) for name in names]


def _folders(store: Store, stream: str | None) -> list[tuple[str, str, str | None]]:
    """(kind, attempts' parent folder, folder whose manifest decides) for every folder that holds attempts."""
    out = []
    for _, sdir in _streams(store, "frames", stream):
        out += [("frames", h, h) for h in _children(store, sdir, r"^hour=")]
    for _, sdir in _streams(store, "factors", stream):
        for h in _children(store, sdir, r"^hour="):
            out += [("factors", v, v) for v in _children(store, h, r"^v=\d+$")]
    for name, sdir in _streams(store, "quarantine", stream):
        for h in _children(store, sdir, r"^hour="):
            out.append(("quarantine", h, f"{store.stream_frames(name)}/{h.rsplit('/', 1)[-1]}"))  # the hour's frames manifest decides
    return out


def _age_of(store: Store, path: str, now: float) -> tuple[float | None, int]:
    """(age in seconds of the youngest file under ``path`` (the folder's own if empty), None if any is unknown; total bytes)."""
    try:
        infos = store.fs.find(path, detail=True, withdirs=False)
    except FileNotFoundError:
        return None, 0
    if not infos:
        try:
            infos = {path: store.fs.info(path)}
        except FileNotFoundError:
            return None, 0
    times = [file_time(i) for i in infos.values()]
    size = sum(int(i.get("size") or 0) for i in infos.values() if i.get("type") != "directory")
    if any(t is None for t in times):
        return None, size
    return now - max(times), size


def collect_garbage(store: Store | str, stream: str | None = None, older_than_seconds: float = 86400, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
    """Remove (or with ``dry_run`` only list) unnamed, old attempt folders and stale publish leftovers; see the module docstring for the rule.

    Args:
        store: the root (a missing root has nothing to collect).
        stream: one stream, or None for every stream under the root.
        older_than_seconds: a folder goes only if every file in it is older than this (>= 0).
        dry_run: decide as usual, remove nothing.
        now: the clock (seconds since the epoch) ages are measured against; default time.time().

    Returns:
        {"removed", "kept_named", "kept_young", "kept_unknown", "kept_evidence": lists of paths,
        "bytes_freed", "counts": {list name: length}, "dry_run", "older_than_seconds"}.
        ``removed`` holds attempt folders and ``*.tmp`` files (what would go, with dry_run).
    """
    store = Store.of(store)
    if stream is not None:
        store.stream_frames(stream)  # validates the name
    if not older_than_seconds >= 0:  # also rejects NaN
        raise UsageError(f"the age threshold must be >= 0 seconds, got {older_than_seconds}")
    now = time.time() if now is None else float(now)
    out: dict[str, Any] = {"removed": [], "kept_named": [], "kept_young": [], "kept_unknown": [], "kept_evidence": [], "bytes_freed": 0}

    def drop(path: str, size: int) -> None:
        if not dry_run:
            store.remove(path)
        out["removed"].append(path)
        out["bytes_freed"] += size

    for kind, parent, decider in _folders(store, stream):
        attempts = _children(store, parent, _ATTEMPT_RE.pattern)
        if not attempts:
            continue
        key = "quarantine" if kind == "quarantine" else "files"
        named = _named_attempts(store, decider, key)
        for adir in attempts:
            attempt = adir.rsplit("/", 1)[-1].removeprefix("attempt=")
            if named is None:
                out["kept_unknown"].append(adir)  # unreadable manifest: cannot tell what it names
                continue
            if attempt in named:
                out["kept_named"].append(adir)
                continue
            age, size = _age_of(store, adir, now)
            if age is None:
                out["kept_unknown"].append(adir)
            elif age <= older_than_seconds:
                out["kept_young"].append(adir)
            elif kind == "quarantine" and not named:
                out["kept_evidence"].append(adir)  # the hour never published: the only record of a failed ingest
            else:
                recheck = _named_attempts(store, decider, key)  # a writer may have published since the first read
                if recheck is None or attempt in recheck:
                    out["kept_named" if recheck else "kept_unknown"].append(adir)
                else:
                    drop(adir, size)

    for top in ("frames", "factors", "reports"):
        for _, sdir in _streams(store, top, stream):
            try:
                infos = store.fs.find(sdir, detail=True, withdirs=False)
            except FileNotFoundError:
                continue
            for path, info in sorted(infos.items()):
                if _TMP_RE.search(path):
                    t = file_time(info)
                    if t is None:
                        out["kept_unknown"].append(path)
                    elif now - t <= older_than_seconds:
                        out["kept_young"].append(path)
                    else:
                        drop(path, int(info.get("size") or 0))

    out["counts"] = {name: len(out[name]) for name in ("removed", "kept_named", "kept_young", "kept_unknown", "kept_evidence")}
    out["dry_run"], out["older_than_seconds"] = bool(dry_run), float(older_than_seconds)
    return out
