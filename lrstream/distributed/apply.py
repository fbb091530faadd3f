"""The apply stage on Ray: factor workers turn an hour's frame shards into factor shards.

:class:`FactorWorker` is a plain class (tests and ``--no-ray`` run it in this
process): it loads one sketch version once, then for a range of an hour's
frame parts reads the frames (uint8, the next part prefetched in a thread
while the current one is multiplied), computes every frame's factors with
:func:`lrstream.numerics.apply.apply_sketch` and writes factor parts under
the driver's attempt. It returns the parts' manifest entries; failures come
back as data. :func:`apply_hours` splits each hour's parts among W workers
(Ray actors, one CPU or GPU each, so an autoscaling cluster grows with the
backlog), and publishes the hour's manifest only when every range is
written (:func:`lrstream.data.factors.publish_factors`): a failed or killed
run leaves nothing visible and removes its own attempt.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..data.factors import factor_table, factor_versions, publish_factors, read_factors_manifest
from ..data.parts import ipc_bytes, part_bounds, write_part
from ..data.reader import matrix_shape
from ..data.shards import COMPRESSIONS, iter_hour_tables, published_manifest
from ..data.sources import frames_to_matrices
from ..data.store import Store, new_attempt_id
from ..data.versions import load_version
from ..errors import UsageError
from ..numerics.apply import STORAGE_DTYPES, FrameFactors, apply_sketch
from ..numerics.checks import check_rank, check_sketch_fits
from .runtime import failure, init_ray, raise_failure, remote, reporting


@dataclass(frozen=True)
class ApplyOptions:
    """How factors are computed and stored; the ``apply`` flags mirror these fields."""

    k: int | None = field(default=None, metadata={"help": "rank of the stored factors (default: the sketch's k)"})
    dtype: str = field(default="float16", metadata={"help": "precision of the stored L and R", "choices": tuple(STORAGE_DTYPES)})
    batch_size: int = field(default=8, metadata={"help": "frames multiplied at a time"})
    rows_per_part: int = field(default=64, metadata={"help": "frames per factor part file"})
    compression: str = field(default="zstd", metadata={"help": "compression of the factor parts", "choices": COMPRESSIONS})
    device: str = field(default="auto", metadata={"help": "torch device of the numerics: auto (with --no-ray, CUDA where this machine has it; on Ray the CPU), cpu or cuda (each factor worker asks Ray for a GPU; frames move there as uint8)"})
    force: bool = field(default=False, metadata={"help": "replace factors already stored for the hour (any version)"})

    def validate(self) -> ApplyOptions:
        if self.k is not None:
            check_rank(self.k)
        if self.dtype not in STORAGE_DTYPES:
            raise UsageError(f"factor dtype must be one of {', '.join(STORAGE_DTYPES)}, got {self.dtype!r}")
        if self.batch_size < 1 or self.rows_per_part < 1:
            raise UsageError("batch size and rows per part must be >= 1")
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise UsageError(f"device must be auto, cpu or cuda, got {self.device!r}")
        return self


def _prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """``it`` read ahead in a thread: Arrow decompression and the GEMMs release the GIL, so reading overlaps compute."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def run() -> None:
        try:
            for item in it:
                q.put(item)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    threading.Thread(target=run, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


@contextmanager
def _spare_core(device: str):
    """Run the GEMMs on one thread fewer than torch would take, on the CPU.

    The reader and writer threads need a core of their own: when torch's
    intra-op threads take every core, they are preempted mid-GEMM and the
    others wait at its barrier (on 2 cores the job ran at 70 frames/s with
    both cores for torch and 81 with one).
    """
    before = torch.get_num_threads()
    if device.startswith("cuda") or before < 2:
        yield
        return
    torch.set_num_threads(before - 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _matrices(store: Store, stream: str, hour: str, gray: bool, rows: tuple[int, int] | None) -> Iterator[tuple[np.ndarray, np.ndarray, pa.Array]]:
    """(matrices (rows, n, d) uint8, frame_index, timestamps) per frame part: run in the prefetch thread, off the GEMMs' critical path."""
    for table in iter_hour_tables(store, stream, hour, rows=rows):
        frames = table.column("frame").combine_chunks().to_numpy_ndarray()  # (rows, H, W, C) uint8
        mats = frames_to_matrices(frames, gray=gray)  # (rows, C*H, W), uint8 kept (one de-interleaving copy, ~1 ms a 2160 x 1280 frame)
        yield mats, table.column("frame_index").to_numpy(), table.column("timestamp").combine_chunks()


def iter_frame_factors(
    store: Store, stream: str, hour: str, sketch, k: int, gray: bool, rows: tuple[int, int] | None = None,
    batch_size: int = 8, dtype: str = "float16", device: str = "cpu", times: dict[str, float] | None = None,
) -> Iterator[tuple[np.ndarray, pa.Array, FrameFactors]]:
    """(frame_index (b,), timestamps (b,), factors) per batch of rows [lo, hi) of a published hour (all of it by default).

    The apply pass that the apply job stores and the evaluation scores: a
    thread reads and de-interleaves the next frame part while this one is
    multiplied. ``times`` (if given) accumulates "read" (waiting for frames)
    and "compute" seconds, the consumer's own time excluded.
    """
    times = {"read": 0.0, "compute": 0.0} if times is None else times
    t = time.perf_counter()
    for mats, index, stamps in _prefetch(_matrices(store, stream, hour, gray, rows)):
        times["read"] += time.perf_counter() - t
        for i in range(0, len(mats), batch_size):
            t = time.perf_counter()
            f = apply_sketch(sketch, mats[i : i + batch_size], k, dtype=dtype, device=device)
            times["compute"] += time.perf_counter() - t
            yield index[i : i + f.L.shape[0]], stamps[i : i + f.L.shape[0]], f
        t = time.perf_counter()


class FactorWorker:
    """Applies one sketch version of one stream to ranges of its hours; one instance per Ray actor."""

    def __init__(self, store: Store | str, stream: str, version: int, options: ApplyOptions = ApplyOptions()):
        self.store, self.stream, self.version = Store.of(store), stream, int(version)
        self.options = options.validate()
        self.sketch = load_version(self.store, stream, self.version)
        meta = self.sketch.meta
        self.gray = bool((meta.get("data") or {}).get("gray", False))
        k = options.k if options.k is not None else meta.get("k")
        if not k:
            raise UsageError(f"sketch version {version} records no rank k; pass --k")
        self.k = check_rank(int(k), m=self.sketch.m)

    def ready(self) -> dict[str, Any]:
        return {"ok": True, "k": self.k, "m": self.sketch.m, "n": self.sketch.n}

    def apply_rows(self, hour: str, attempt: str, lo: int, hi: int) -> dict[str, Any]:
        """Factors of rows [lo, hi) of ``hour``, written as parts of ``attempt``; returns {"ok", "entries", seconds by stage}.

        Three stages overlap: a thread reads and de-interleaves the next frame
        part, this thread multiplies, and a writer thread compresses and
        writes finished factor parts. ``seconds`` has each stage's own time
        ("read" is the time spent waiting for frames).
        """
        opts = self.options
        folder = self.store.factors_dir(self.stream, hour, self.version)
        pending: list[tuple] = []  # finished batches not yet in a part
        pending_rows = 0
        times = {"read": 0.0, "compute": 0.0, "write": 0.0}
        row = lo

        def write(first_row: int, batch: list[tuple]) -> dict[str, Any]:
            t = time.perf_counter()
            index = np.concatenate([p[0] for p in batch])
            stamps = pa.concat_arrays([p[1] for p in batch])
            L, R, err, rel, norm = (np.concatenate([p[i] for p in batch]) for i in range(2, 7))
            data = ipc_bytes(factor_table(index, stamps, L, R, err, rel, norm), opts.compression)
            entry = write_part(self.store, folder, attempt, first_row, data, len(index), first_row=first_row, first_index=int(index[0]), error_sum=float(err.sum()), rel_error_sum=float(rel.sum()))
            times["write"] += time.perf_counter() - t
            return entry

        futures = []
        with ThreadPoolExecutor(max_workers=1) as writer, _spare_core(opts.device):
            batches = iter_frame_factors(self.store, self.stream, hour, self.sketch, self.k, self.gray, rows=(lo, hi), batch_size=opts.batch_size, dtype=opts.dtype, device=opts.device, times=times)
            for index, stamps, f in batches:
                pending.append((index, stamps, f.L.numpy(), f.R.numpy(), f.errors.numpy(), f.rel_errors.numpy(), f.norms.numpy()))
                pending_rows += len(index)
                row += len(index)
                if pending_rows >= opts.rows_per_part:
                    futures.append(writer.submit(write, row - pending_rows, pending))
                    pending, pending_rows = [], 0
            if pending:
                futures.append(writer.submit(write, row - pending_rows, pending))
            entries = [fut.result() for fut in futures]  # raises a failed write here
        return {"ok": True, "entries": entries, "rows": row - lo, "seconds": times}


@dataclass(frozen=True)
class _Hour:
    hour: str
    old: dict[str, Any] | None  # the manifest a force replaces
    others: list[int]  # other versions' factors a force removes
    ranges: list[tuple[int, int]]
    info: dict[str, Any]


def _plan_hour(store: Store, stream: str, hour: str, version: int, sketch, k: int, gray: bool, options: ApplyOptions, workers: int) -> _Hour | dict[str, Any]:
    """What applying ``hour`` takes, or the no-op result when its factors for this version exist. Checks everything before any write."""
    existing = read_factors_manifest(store, stream, hour, version)
    others = [v for v in factor_versions(store, stream, hour) if v != version]
    if existing is not None and not options.force:
        return {"hour": hour, "status": "exists", **_summary(existing)}
    if others and not options.force:
        raise UsageError(f"stream {stream} hour {hour} already has factors of sketch version {others[-1]}; pass --force to replace them with version {version}")
    frames = published_manifest(store, stream, hour)
    n, d = matrix_shape(frames["frame_shape"], gray)
    meta = sketch.meta
    check_sketch_fits(sketch, n, d, f"hour {hour} of stream {stream}", version)
    k = check_rank(k, m=sketch.m, n=n, d=d)
    bounds = part_bounds(frames["files"])  # workers get whole frame parts, so no part is read twice
    shares = np.array_split(np.arange(len(bounds)), min(workers, len(bounds)))
    ranges = [(bounds[s[0]][0], bounds[s[-1]][1]) for s in shares if len(s)]
    raw = int(frames.get("raw_bytes") or 0)
    fields = {
        "kind": str(meta.get("kind", sketch.kind)), "k": k, "m": sketch.m, "n": n, "d": d, "frame_shape": list(frames["frame_shape"]), "gray": gray,
        "dtype": options.dtype, "compression": options.compression, "raw_bytes": raw, "frames_attempt": frames.get("attempt"),
    }  # fmt: skip
    return _Hour(hour, existing, others, ranges, fields)


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("version", "kind", "k", "m", "dtype", "rows", "raw_bytes", "factor_bytes", "ratio", "mean_error", "mean_rel_error")
    return {key: doc.get(key) for key in keys} | {"files": len(doc["files"])}


def apply_hours(
    store: Store | str,
    stream: str,
    hours: list[str],
    version: int,
    options: ApplyOptions = ApplyOptions(),
    workers: int = 1,
    address: str | None = None,
    use_ray: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> list[dict[str, Any]]:
    """Apply sketch ``version`` to each hour and publish its factors; one result dict per hour, in order.

    status per hour: "applied", "replaced" (force), "exists" (no-op) or
    "concurrent" (another run published this hour and version first).

    Every hour is checked (shape, existing factors) before any is written. An
    hour whose factors for this version exist is a no-op ("exists") unless
    ``options.force``; one with another version's factors is a UsageError
    unless ``options.force``, which publishes the new factors, then removes
    the other versions'. With ``use_ray`` W actors (one CPU each, or one GPU
    with ``device="cuda"``) share each hour's frame parts.
    """
    store = Store.of(store)
    options.validate()
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    if options.device == "auto":
        # On Ray a GPU is an explicit request (--device cuda): the live nodes say nothing of the GPU
        # node types an autoscaler could start, so guessing from them would never start one.
        options = replace(options, device="cuda" if not use_ray and torch.cuda.is_available() else "cpu")
    local = FactorWorker(store, stream, version, options)  # loads and checks the sketch here first: a bad version fails in one line
    plans = [_plan_hour(store, stream, h, version, local.sketch, local.k, local.gray, options, workers) for h in hours]
    todo = [p for p in plans if isinstance(p, _Hour)]
    results = {p["hour"]: p for p in plans if isinstance(p, dict)}
    if todo:
        runner = _Runner(store, stream, version, options, workers if use_ray else 0, address, local)
        try:
            for plan in todo:
                results[plan.hour] = _apply_one(store, stream, version, plan, runner)
                r = results[plan.hour]
                log(f"hour {plan.hour}: {r['status']}: {r['rows']} frames, {r['factor_bytes'] / 1e6:.2f} MB of factors ({r['ratio']:.1f}x smaller than raw), mean relative error {r['mean_rel_error']:.4f}, {r['frames_per_s']:.0f} frames/s")
        finally:
            runner.close()
    return [results[h] for h in hours]


class _Runner:
    """Runs FactorWorker.apply_rows calls: on W Ray actors, or on the driver's own worker (workers=0)."""

    def __init__(self, store: Store, stream: str, version: int, options: ApplyOptions, workers: int, address: str | None, local: FactorWorker):
        self.local, self.actors = local, []
        if workers:
            init_ray(address)
            gpu = options.device.startswith("cuda")
            cls = remote(reporting(FactorWorker), num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0)
            self.actors = [cls.remote(store, stream, version, options) for _ in range(workers)]
            import ray

            self.ray = ray
            for result in ray.get([a.ready.remote() for a in self.actors]):
                raise_failure(result)

    def run(self, hour: str, attempt: str, ranges: list[tuple[int, int]]) -> list[dict[str, Any]]:
        if not self.actors:
            return [self.local.apply_rows(hour, attempt, lo, hi) for lo, hi in ranges]
        refs = [self.actors[i % len(self.actors)].apply_rows.remote(hour, attempt, lo, hi) for i, (lo, hi) in enumerate(ranges)]
        out = []
        for ref in refs:
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:  # the actor died (OOM, node loss)
                out.append({**failure(exc), "error": f"factor worker failed: {exc.__class__.__name__}"})
        return out

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def _apply_one(store: Store, stream: str, version: int, plan: _Hour, runner: _Runner) -> dict[str, Any]:
    t0 = time.perf_counter()
    attempt = new_attempt_id()
    folder = store.factors_dir(stream, plan.hour, version)
    try:
        parts = [raise_failure(r) for r in runner.run(plan.hour, attempt, plan.ranges)]
        entries = [e for p in parts for e in p["entries"]]
        rows = sum(int(e["rows"]) for e in entries)
        compute = sum(p["seconds"]["compute"] for p in parts)
        status, doc = publish_factors(store, stream, plan.hour, version, attempt, entries, {**plan.info, "seconds_per_frame": compute / max(rows, 1)}, plan.old)
    except BaseException:
        store.remove(f"{folder}/attempt={attempt}")  # our own parts only; nothing was published
        raise
    if status != "concurrent":
        for other in plan.others:  # force: the hour keeps one version's factors, the one just published
            store.remove(store.factors_dir(stream, plan.hour, other))
    seconds = time.perf_counter() - t0
    stages = {name: sum(p["seconds"][name] for p in parts) for name in ("read", "compute", "write")}
    status = {"written": "applied"}.get(status, status)
    return {"hour": plan.hour, "status": status, **_summary(doc), "seconds": seconds, "frames_per_s": doc["rows"] / seconds, "stage_seconds": stages, "manifest": store.url(f"{folder}/_MANIFEST.json")}
