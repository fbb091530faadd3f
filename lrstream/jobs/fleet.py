"""What the fleet jobs share: the stream list (``--streams`` or a plan file), where each stream runs, the summary and exit code.

A plan file (YAML or TOML) lists streams by name, or as a mapping with
per-stream values of the command's own options::

    streams:
      - cam1
      - {stream: cam2, k: 20, m: 40}
      - {stream: cam3, workers: 8}

Placement: a stream whose selected frames are under ``single_max_mb`` runs
in one task (one in-process worker: the same computation as W workers, up to
summation order); a larger one gets a parameter server and W worker actors
(train) or W factor-worker actors (apply). ``placement`` forces either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.reader import hour_info
from ..data.store import Store, check_stream
from ..distributed.fleet import StreamWork, run_streams
from ..errors import EXIT_OK, SEVERITY, CommandFailed, LrstreamError, UsageError, worst_exit_code
from .files import load_config_file

PLACEMENTS = ("auto", "single", "parallel")


@dataclass(frozen=True)
class FleetOptions:
    """How a job over many streams schedules them; the flags mirror these fields."""

    max_concurrent: int = field(default=4, metadata={"help": "streams in flight at once (each a Ray task, with its actors)"})
    placement: str = field(default="auto", metadata={"help": "auto: one in-process task for a stream under --single-max-mb of frames, else its own W workers; single or parallel: always that", "choices": PLACEMENTS})
    single_max_mb: float = field(default=1024.0, metadata={"help": "auto placement: streams with fewer MB of selected frames (uncompressed) run in one task"})

    def validate(self) -> FleetOptions:
        if self.max_concurrent < 1:
            raise UsageError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        if self.placement not in PLACEMENTS:
            raise UsageError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.single_max_mb < 0:
            raise UsageError("--single-max-mb must be >= 0")
        return self

    def place(self, nbytes: int) -> str:
        if self.placement != "auto":
            return self.placement
        return "single" if nbytes < self.single_max_mb * 1e6 else "parallel"


def stream_entries(streams: str | Sequence[str] | None, plan: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(stream, per-stream option values) for ``--streams a,b,c`` or a plan file; names are checked and must be unique."""
    if streams and plan:
        raise UsageError("give either --streams or --plan, not both")
    if plan:
        doc = load_config_file(plan)
        raw = doc.get("streams") if isinstance(doc, dict) else None
        if not isinstance(raw, list) or not raw:
            raise UsageError(f"plan {plan} needs a non-empty 'streams' list (names, or mappings with 'stream' and options)")
        entries = []
        for i, e in enumerate(raw):
            if isinstance(e, str):
                entries.append((e, {}))
            elif isinstance(e, dict) and isinstance(e.get("stream"), str):
                entries.append((e["stream"], {key: value for key, value in e.items() if key != "stream"}))
            else:
                raise UsageError(f"plan {plan}: entry {i} must be a stream name or a mapping with 'stream'")
    else:
        names = streams.split(",") if isinstance(streams, str) else list(streams or [])
        entries = [(name.strip(), {}) for name in names if name.strip()]
        if not entries:
            raise UsageError("--streams needs at least one stream name")
    seen: set[str] = set()
    for name, _ in entries:
        check_stream(name)
        if name in seen:
            raise UsageError(f"stream {name} is listed twice")
        seen.add(name)
    return entries


def frames_bytes(store: Store, stream: str, hours: Sequence[str]) -> int:
    """Uncompressed bytes of ``hours`` of ``stream``, from their manifests alone."""
    return sum(hour_info(store, stream, h).nbytes for h in hours)


def sized(choose_hours: Callable[[], Sequence[str]], store: Store, stream: str) -> int:
    """The bytes of the hours ``choose_hours`` picks; 0 when picking fails, so the stream runs small and its task reports the error typed."""
    try:
        return frames_bytes(store, stream, choose_hours())
    except LrstreamError:
        return 0


def task_resources(device: str) -> tuple[float, float]:
    """(CPUs, GPUs) a stream's task asks for when it computes in process on ``device``: one GPU for CUDA, else one CPU."""
    return (0.0, 1.0) if device.startswith("cuda") else (1.0, 0.0)


def _status_line(r: dict[str, Any], describe: Callable[[dict[str, Any]], str]) -> str:
    if r["ok"]:
        return f"stream {r['stream']}: ok ({r['placement']}): {describe(r)}"
    return f"stream {r['stream']}: exit {r['exit_code']} ({r['type']}): {r['error']}"


def run_fleet(
    command: str,
    works: Sequence[StreamWork],
    options: FleetOptions,
    describe: Callable[[dict[str, Any]], str],
    *,
    address: str | None = None,
    use_ray: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Run ``works`` and log one line per stream as it finishes; returns the summary, or raises CommandFailed with it.

    The summary holds every stream's result (in the order given), the count
    per exit code and ``exit_code``, the worst one by
    :data:`lrstream.errors.SEVERITY` (1, 3, 2, 5, 4, 0).
    """
    options.validate()

    def report(r: dict[str, Any]) -> None:
        for line in r.get("log", []):
            log(f"[{r['stream']}] {line}")
        log(_status_line(r, describe))

    log(f"{command}: {len(works)} streams, at most {options.max_concurrent} at once")
    results = run_streams(works, options.max_concurrent, address=address, use_ray=use_ray, on_result=report)
    for r in results:
        r.pop("log", None)
    codes = [int(r["exit_code"]) for r in results]
    counts = {str(code): codes.count(code) for code in SEVERITY if code in codes}
    counts.update({str(code): codes.count(code) for code in set(codes) - set(SEVERITY)})
    worst = worst_exit_code(codes)
    summary = {"command": command, "streams": len(results), "ok": codes.count(EXIT_OK), "exit_codes": counts, "exit_code": worst, "results": results}
    failed = [r["stream"] for r in results if not r["ok"]]
    log(f"{command}: {summary['ok']} of {len(results)} streams ok" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if worst != EXIT_OK:
        first = next(r for r in results if r["exit_code"] == worst)
        raise CommandFailed(f"{len(failed)} of {len(results)} streams failed; worst: stream {first['stream']}: {first['error']}", worst, summary)
    return summary
