"""Data-parallel retraining throughput: steps/s and frames/s for W = 1, 2, 4, 8 Ray workers.

Weak scaling: every worker takes ``--batch-per-worker`` frames per step, so
the global batch is W times that and ideal frames/s grows like W. For each W
it reports steps/s, frames/s, the speed-up over W = 1, the share of the step
spent inside the parameter server (averaging + optimiser step +
checkpoints), and the share spent in the slowest worker's gradient (the
rest is Ray transport and scheduling). Data: the bigbuckbunny clip ingested
as one hour (2160 x 1280 matrices), or a synthetic stream with --synthetic.
Prints a table and writes JSON (default benchmarks/scaling.json).

    python benchmarks/scaling.py [--workers 1,2,4,8] [--steps 10] [--batch-per-worker 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

import ray

from lrstream.data.datasets import sample_video_path
from lrstream.training.config import LearnConfig
from lrstream.distributed.runtime import init_ray
from lrstream.distributed.config import RetrainConfig
from lrstream.distributed.plan import plan_data
from lrstream.distributed.retrain import build_loop
from lrstream.data.shards import WriteOptions, write_hour
from lrstream.data.sources import iter_frames


def measure(root: str, workers: int, args) -> dict:
    lc = LearnConfig(k=10, m=20, steps=10**6, batch_size=args.batch_per_worker * workers, eval_every=10**6, seed=0, device=args.device)
    cfg = RetrainConfig(learn=lc, workers=workers, checkpoint_every=10**6, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=1 / workers if args.device == "cuda" else None)
    plan = plan_data(root, "bench", workers, val_fraction=0)
    loop, _ = build_loop(root, "bench", cfg, plan, use_ray=True)
    try:
        t = time.perf_counter()
        loop.wait_ready()
        load = time.perf_counter() - t
        loop.begin()
        for _ in range(args.warmup):
            loop.step()
        before = ray.get(loop.ps.status.remote())
        t = time.perf_counter()
        for _ in range(args.steps):
            loop.step()
        secs = time.perf_counter() - t
        after = ray.get(loop.ps.status.remote())
    finally:
        loop.shutdown()
    return {
        "workers": workers,
        "global_batch": lc.batch_size,
        "steps": args.steps,
        "seconds": secs,
        "steps_per_s": args.steps / secs,
        "frames_per_s": args.steps * lc.batch_size / secs,
        "ps_share": (after["busy_seconds"] - before["busy_seconds"]) / secs,
        "slowest_worker_share": (after["critical_seconds"] - before["critical_seconds"]) / secs,
        "load_seconds": load,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-per-worker", type=int, default=2)
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--synthetic", action="store_true", help="a synthetic 720p stream instead of the sample clip")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "scaling.json"))
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    root = tempfile.mkdtemp(prefix="lrstream-scaling-")
    source = "synthetic://?frames=132&height=720&width=1280&seed=0" if args.synthetic else sample_video_path()
    try:
        write_hour(root, "bench", "2026-01-01T00", iter_frames(source), source, WriteOptions(compression="lz4"))
        init_ray(num_cpus=max(os.cpu_count() or 1, int(max(counts) * args.cpus_per_worker)))
        rows = []
        print(f"{'W':>3}{'batch':>7}{'steps/s':>9}{'frames/s':>10}{'speed-up':>10}{'PS share':>10}{'slowest worker':>16}{'load s':>8}")
        for w in counts:
            r = measure(root, w, args)
            r["speedup"] = r["frames_per_s"] / rows[0]["frames_per_s"] if rows else 1.0
            rows.append(r)
            print(f"{w:>3}{r['global_batch']:>7}{r['steps_per_s']:>9.2f}{r['frames_per_s']:>10.1f}{r['speedup']:>9.2f}x{r['ps_share']:>10.1%}{r['slowest_worker_share']:>16.1%}{r['load_seconds']:>8.1f}", flush=True)
        write_report(args.out, "scaling", rows, source="synthetic 1280x720" if args.synthetic else "bigbuckbunny 1280x720", matrix="2160x1280", k=10, m=20, device=args.device, batch_per_worker=args.batch_per_worker)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
