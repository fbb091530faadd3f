"""fsspec helpers and the storage layout shared by every reader and writer.

Layout under one ROOT URL (DESIGN.md):

    frames/stream=S/hour=YYYY-MM-DDTHH/attempt=ID/part-NNNNN.arrow
    frames/stream=S/hour=YYYY-MM-DDTHH/_MANIFEST.json        written last
    quarantine/stream=S/hour=H/attempt=ID/...                 rejected frames
    sketches/stream=S/v=VERSION/ + LATEST
    reports/stream=S/...

Publishing is the only step that makes data visible, and it is atomic on
every backend: on a local disk a fully written temporary file is hard-linked
into place (create-if-absent) or renamed over the old one (replace); on
object stores, which have no rename, the object is written in one PUT with
create-exclusive semantics (fsspec mode "xb") or plain overwrite.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import UsageError

_STREAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOUR_FORMAT = "%Y-%m-%dT%H"


def url_to_fs(url: str):
    """(filesystem, path without trailing slash) for a local path or any fsspec URL."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")


def check_stream(stream: str) -> str:
    if not isinstance(stream, str) or not _STREAM_RE.match(stream):
        raise UsageError(f"bad stream name {stream!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit)")
    return stream


def check_hour(hour: str) -> str:
    """Validate an hour label YYYY-MM-DDTHH and return it unchanged."""
    try:
        if not isinstance(hour, str) or len(hour) != 13:
            raise ValueError
        datetime.strptime(hour, _HOUR_FORMAT)
    except ValueError:
        raise UsageError(f"bad hour {hour!r}: expected YYYY-MM-DDTHH, e.g. 2026-11-22T13") from None
    return hour


def hour_start(hour: str) -> datetime:
    return datetime.strptime(check_hour(hour), _HOUR_FORMAT)


def frames_dir(root: str, stream: str, hour: str) -> str:
    return f"{root}/frames/stream={check_stream(stream)}/hour={check_hour(hour)}"


def quarantine_dir(root: str, stream: str, hour: str) -> str:
    return f"{root}/quarantine/stream={check_stream(stream)}/hour={check_hour(hour)}"


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:16]


def numbered_children(fs, path: str, prefix: str) -> list[int]:
    """Sorted N of the entries named ``PREFIXN`` (N decimal) directly under ``path``; [] if it does not exist."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)


def publish(fs, path: str, data: bytes, exclusive: bool) -> bool:
    """Make ``data`` visible at ``path`` in one atomic step.

    exclusive=True creates the file only if it does not exist and returns
    False if another writer got there first; exclusive=False replaces it.
    Readers never observe a partially written file.
    """
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.{new_attempt_id()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            if exclusive:
                try:
                    os.link(tmp, path)  # atomic create-if-absent, content complete
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
                return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True
    try:
        with fs.open(path, "xb" if exclusive else "wb") as f:
            f.write(data)
    except FileExistsError:
        return False
    return True
