"""One storage root: its filesystem and every path of the layout (DESIGN.md).

Layout under one ROOT URL:

    frames/stream=S/hour=YYYY-MM-DDTHH/attempt=ID/part-NNNNN.arrow
    frames/stream=S/hour=YYYY-MM-DDTHH/_MANIFEST.json        written last
    quarantine/stream=S/hour=H/attempt=ID/...                 rejected frames
    sketches/stream=S/v=VERSION/ + LATEST                     immutable versions, the current one
    sketches/stream=S/_runs/run=ID/step=N/                    checkpoints of a running retrain
    factors/stream=S/hour=H/v=V/part-NNNNN.arrow + _MANIFEST.json
    reports/stream=S/hour=H-v=VERSION.parquet

:class:`Store` resolves the root once (``fsspec.core.url_to_fs``) and is
the only place these names are spelled; readers and writers take a Store
and ask it for paths. Paths are the filesystem's own (no protocol);
:meth:`Store.url` turns one back into a URL that keeps the root's protocol.

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

from ..errors import UsageError

_STREAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOUR_FORMAT = "%Y-%m-%dT%H"
MANIFEST = "_MANIFEST.json"
AREAS = ("frames", "quarantine", "factors", "reports")


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


def new_attempt_id() -> str:
    return uuid.uuid4().hex[:16]


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


class Store:
    """A storage root URL (local folder, ``s3://``, ``memory://``...), resolved once.

    Attributes:
        root: the URL as given, without a trailing slash.
        fs: the fsspec filesystem.
        base: the root's path on ``fs``.
    """

    def __init__(self, root: str):
        if not isinstance(root, str) or not root:
            raise UsageError(f"a storage root must be a path or URL, got {root!r}")
        self.root = root.rstrip("/") or "/"
        self.fs, self.base = url_to_fs(self.root)

    @classmethod
    def of(cls, root: Store | str) -> Store:
        """``root`` itself if it is a Store, else a Store for that URL (the public API accepts either)."""
        return root if isinstance(root, Store) else cls(root)

    def __reduce__(self):
        # Crossing a process boundary (a Ray actor's arguments) sends the URL only; the other side resolves it.
        return (Store, (self.root,))

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def url(self, path: str) -> str:
        """The URL of a path under this root, with the root's protocol (fsspec paths drop it)."""
        if path == self.base:
            return self.root
        if not path.startswith(self.base + "/"):
            raise ValueError(f"{path} is not under {self.base}")
        return self.root + path[len(self.base) :]

    # ------------------------------------------------------------- areas: one folder per stream in each

    def _area(self, area: str) -> str:
        if area not in AREAS:
            raise ValueError(f"unknown area {area!r}; the layout has {', '.join(AREAS)}")
        return f"{self.base}/{area}"

    def stream_dir(self, area: str, stream: str) -> str:
        """The folder of ``stream`` in one area of the layout: frames, quarantine, factors or reports."""
        return f"{self._area(area)}/stream={check_stream(stream)}"

    def stream_names(self, area: str) -> list[str]:
        """Names of the streams that have a folder in ``area``, sorted (folders that only look like one are skipped)."""
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._area(area), detail=False)]
        except FileNotFoundError:
            return []
        return sorted(n.removeprefix("stream=") for n in names if n.startswith("stream=") and _STREAM_RE.match(n.removeprefix("stream=")))

    # ------------------------------------------------------------- frames

    def stream_frames(self, stream: str) -> str:
        return self.stream_dir("frames", stream)

    def hour_dir(self, stream: str, hour: str) -> str:
        return f"{self.stream_frames(stream)}/hour={check_hour(hour)}"

    def hour_manifest(self, stream: str, hour: str) -> str:
        return f"{self.hour_dir(stream, hour)}/{MANIFEST}"

    def manifest_hours(self, stream: str) -> list[str]:
        """Labels of the hours of ``stream`` that have a manifest, oldest first (foreign folders are skipped)."""
        hours = []
        for path in self.fs.glob(f"{self.stream_frames(stream)}/hour=*/{MANIFEST}"):
            label = path.rsplit("/", 2)[-2].removeprefix("hour=")
            try:
                hours.append(check_hour(label))
            except UsageError:
                continue  # a folder that only looks like an hour
        return sorted(hours)

    def quarantine_dir(self, stream: str, hour: str) -> str:
        return f"{self.stream_dir('quarantine', stream)}/hour={check_hour(hour)}"

    # ------------------------------------------------------------- sketches

    def sketches_dir(self, stream: str) -> str:
        return f"{self.base}/sketches/stream={check_stream(stream)}"

    def version_dir(self, stream: str, version: int) -> str:
        return f"{self.sketches_dir(stream)}/v={int(version):06d}"

    def version_numbers(self, stream: str) -> list[int]:
        """Sorted numbers of the version folders of ``stream`` (claimed ones, complete or not)."""
        return self.numbered_children(self.sketches_dir(stream), "v=")

    def latest_pointer(self, stream: str) -> str:
        return f"{self.sketches_dir(stream)}/LATEST"

    def runs_dir(self, stream: str) -> str:
        return f"{self.sketches_dir(stream)}/_runs"

    def run_dir(self, stream: str, run_id: str) -> str:
        """Where a retrain keeps its checkpoints (beside the versions; removed once the version is published)."""
        return f"{self.runs_dir(stream)}/run={run_id}"

    def checkpoint_dir(self, run_dir: str, step: int) -> str:
        """Checkpoint ``step`` of the run in ``run_dir`` (a path from :meth:`run_dir`)."""
        return f"{run_dir}/step={int(step):08d}"

    def checkpoint_steps(self, run_dir: str) -> list[int]:
        """Sorted steps of the checkpoint folders in ``run_dir`` (complete or not)."""
        return self.numbered_children(run_dir, "step=")

    # ------------------------------------------------------------- factors and reports

    def factors_hour_dir(self, stream: str, hour: str) -> str:
        """The folder of an hour's factors, one ``v=VERSION`` folder per sketch version applied to it."""
        return f"{self.stream_dir('factors', stream)}/hour={check_hour(hour)}"

    def factors_dir(self, stream: str, hour: str, version: int) -> str:
        return f"{self.factors_hour_dir(stream, hour)}/v={int(version):06d}"

    def reports_dir(self, stream: str) -> str:
        return self.stream_dir("reports", stream)

    def report_path(self, stream: str, hour: str, version: int) -> str:
        """Where the report row of (hour, version) lives; names sort by hour, then version."""
        return f"{self.reports_dir(stream)}/hour={check_hour(hour)}-v={int(version):06d}.parquet"

    # ------------------------------------------------------------- small I/O shared by every writer

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        try:
            with self.fs.open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, path: str, data: bytes) -> None:
        """A plain write (for files no reader trusts until a manifest names them)."""
        with self.open_write(path) as f:
            f.write(data)

    def open_write(self, path: str):
        """A binary file open for a plain write (parent folders created), for files written piece by piece."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return self.fs.open(path, "wb")

    def publish(self, path: str, data: bytes, exclusive: bool) -> bool:
        """:func:`publish` on this root's filesystem, creating the parent folder first."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return publish(self.fs, path, data, exclusive)

    def remove(self, path: str) -> None:
        """Remove a file or folder tree; a missing one is fine."""
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def numbered_children(self, path: str, prefix: str) -> list[int]:
        """Sorted N of the entries named ``PREFIXN`` (N decimal) directly under ``path``; [] if it does not exist."""
        pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)
