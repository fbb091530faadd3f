"""Test error gap and training time of each sketch kind on the bigbuckbunny clip, next to published baselines.

Frames become 2160x1280 matrices (RGB stacked as rows); the first 75% train,
the last 25% test. Prints a table and writes JSON (default benchmarks/quality.json).

    python benchmarks/quality.py [--settings 10:20,20:40] [--steps 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

import lrstream as L
from lrstream.baselines import ivy19, tensor_sketch
from lrstream.demo import sample_video_path
from lrstream.sources import frames_to_matrices, read_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="10:20", help="comma-separated k:m pairs")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--kinds", default="learned,mixed-j,mixed-s")
    ap.add_argument("--baselines", default="tensor,ivy19", help="published methods to include (tensor, ivy19; empty for none)")
    ap.add_argument("--ivy19-steps", type=int, default=1000, help="SGD steps (batch 1) for the IVY19 baseline")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "quality.json"))
    args = ap.parse_args()

    A = frames_to_matrices(read_video(sample_video_path()))
    n_train = int(round(0.75 * A.shape[0]))
    t = time.perf_counter()
    test = L.prepare(A[n_train:])
    print(f"bigbuckbunny: {A.shape[0]} frames {A.shape[1]}x{A.shape[2]}, train {n_train}, test {A.shape[0] - n_train}; prepare {time.perf_counter() - t:.1f}s")
    rows = []
    for pair in args.settings.split(","):
        k, m = (int(x) for x in pair.split(":"))
        opt = float(test.optimal_errors(k).mean())
        cands = [("sparse_random", L.sparse_random(A.shape[1], m, seed=0), None), ("dense_random", L.dense_random(A.shape[1], m, seed=0), None)]
        for kind in args.kinds.split(","):
            t = time.perf_counter()
            S = L.learn(A[:n_train], k, m, kind=kind, steps=args.steps)
            cands.append((kind, S, time.perf_counter() - t))
            if kind != "learned":
                cands.append((f"{kind} random half", L.random_half(S), None))
        for name in filter(None, args.baselines.split(",")):
            t = time.perf_counter()
            if name == "tensor":
                S = tensor_sketch(A[:n_train], m)
            elif name == "ivy19":
                S = ivy19(A[:n_train], k, m, steps=args.ivy19_steps)
            else:
                raise SystemExit(f"unknown baseline {name!r}")
            cands.append(({"tensor": "tensor (Liu+ ICLR23, dense)", "ivy19": "IVY19 as published"}[name], S, time.perf_counter() - t))
        base = None
        for name, S, secs in cands:
            gap = L.error_gap(S, test, k)
            base = gap if base is None else base
            rows.append({"k": k, "m": m, "sketch": name, "rows": S.m, "gap": gap, "optimal_error": opt, "ratio_vs_sparse_random": base / gap, "train_seconds": secs})
            print(f"k={k:<3} m={m:<3} {name:<30} rows={S.m:<3} gap={gap:.6f}  x{base / gap:6.2f}  " + ("" if secs is None else f"train {secs:.0f}s"), flush=True)
    write_report(args.out, "quality", rows, steps=args.steps)


if __name__ == "__main__":
    main()
