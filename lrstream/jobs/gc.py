"""The gc job: remove attempt folders that no manifest names and that are older than a day (:mod:`lrstream.data.gc` holds the rule).

A root that does not exist, or holds nothing to collect, is done (exit 0,
zero counts): gc is a cleanup that cron runs whether or not there was work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..data.gc import collect_garbage
from ..data.store import Store, check_stream
from ..errors import UsageError


@dataclass(frozen=True)
class GcJob:
    """What ``lrstream gc`` collects; the flags mirror these fields."""

    stream: str | None = field(default=None, metadata={"help": "collect only this stream (default: every stream under the root)"})
    older_than: float = field(default=24.0, metadata={"help": "remove only folders whose every file is older than this many hours"})
    dry_run: bool = field(default=False, metadata={"help": "list what would be removed, remove nothing"})

    def validate(self) -> GcJob:
        if not (isinstance(self.older_than, (int, float)) and math.isfinite(self.older_than) and self.older_than >= 0):
            raise UsageError(f"--older-than must be a number of hours >= 0, got {self.older_than}")
        if self.stream is not None:
            check_stream(self.stream)
        return self


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def run_gc(store: Store | str, job: GcJob = GcJob(), log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """The ``gc`` command: one log line per removed folder or file, then a summary; returns :func:`collect_garbage`'s dict."""
    store = Store.of(store)
    job.validate()
    out = collect_garbage(store, stream=job.stream, older_than_seconds=job.older_than * 3600.0, dry_run=job.dry_run)
    verb = "would remove" if job.dry_run else "removed"
    for path in out["removed"]:
        log(f"{verb} {store.url(path)}")
    c = out["counts"]
    log(
        f"gc of {store.root}{'' if job.stream is None else f' stream {job.stream}'}: {verb} {c['removed']} ({_mib(out['bytes_freed'])}); "
        f"kept {c['kept_named']} named by a manifest, {c['kept_young']} younger than {job.older_than:g} h, "
        f"{c['kept_unknown']} of unknown age or manifest, {c['kept_evidence']} quarantine(s) of never-published hours"
    )
    return {"root": store.root, "stream": job.stream, **out}
