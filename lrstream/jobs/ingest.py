"""The ingest job: one hour of one or more streams, from flags or a plan file, into published shards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..data.shards import WriteOptions
from ..data.store import Store
from ..distributed.ingest import IngestSpec, ingest_many
from ..errors import CommandFailed, UsageError
from .files import load_config_file

_STATUS = {"exists": "already ingested, nothing to do", "concurrent": "ingested by a concurrent run, kept that copy"}


def load_plan(path: str) -> list[IngestSpec]:
    """Read a YAML/TOML plan: ``streams: [{stream, hour, source}, ...]`` (``hour`` may be set once at the top)."""
    doc = load_config_file(path)
    default_hour = doc.get("hour")
    entries = doc.get("streams")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"plan {path} needs a non-empty 'streams' list of {{stream, hour, source}}")
    specs = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not {"stream", "source"} <= set(e) or not (e.get("hour") or default_hour):
            raise UsageError(f"plan {path}: entry {i} needs stream, source and hour")
        specs.append(IngestSpec(str(e["stream"]), str(e.get("hour") or default_hour), str(e["source"])).validate())
    return specs


def run_ingest(
    store: Store | str,
    *,
    stream: str | None = None,
    hour: str | None = None,
    source: str | None = None,
    plan: str | None = None,
    options: WriteOptions = WriteOptions(),
    address: str | None = None,
    use_ray: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Ingest (stream, hour, source), or every entry of the ``plan`` file; one log line per hour.

    Returns the single hour's result, or ``{"results": [...]}`` for a plan.
    Raises CommandFailed (with every result) when any hour failed, with the
    first failure's exit code; the other failures are logged.
    """
    single = (stream, hour, source)
    if plan and any(single):
        raise UsageError("give either --plan or --stream/--hour/--source, not both")
    if plan:
        specs = load_plan(plan)
    elif all(single):
        specs = [IngestSpec(stream, hour, source)]
    else:
        raise UsageError("ingest needs --stream, --hour and --source (or --plan FILE)")
    results = ingest_many(Store.of(store), specs, options, address=address, use_ray=use_ray)
    failed = [r for r in results if not r["ok"]]
    for r in results:
        if r["ok"]:
            what = _STATUS.get(r["status"], r["status"])
            log(f"stream {r['stream']} hour {r['hour']}: {what}: {r['rows']} frames in {r['files']} shards, {r['bytes'] / 1e6:.1f} MB ({r['raw_bytes'] / 1e6:.1f} MB raw), {r['quarantined']} quarantined")
    for r in failed[1:]:
        log(f"lrstream: error: stream {r['stream']} hour {r['hour']}: {r['error']}")
    if failed:
        first = failed[0]
        raise CommandFailed(f"stream {first['stream']} hour {first['hour']}: {first['error']}", first["exit_code"], {"results": results})
    return results[0] if len(results) == 1 and not plan else {"results": results}
