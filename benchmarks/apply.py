"""SCW apply throughput on 2160 x 1280 float32 frames, next to exact and randomized SVD.

For each method: frames/s (batched, steady state) and the mean error gap on the
same frames (each scaled to sigma_1 = 1; gap = error - optimal rank-k error).

* SCW with sparse random, learned (sparse, trained here on the first 99
  frames of the clip) and dense Gaussian sketches, each with the reference
  orthonormalisation (SVD of SA) and the fast one (two passes through the
  m x m Gram matrix);
* torch.linalg.svd (the optimum, exact);
* torch.svd_lowrank with q = m and niter = 0 (two passes over A, as SCW),
  and with the smallest niter whose gap matches the learned sketch's.

Data: the bigbuckbunny clip (frames as (3*720, 1280) matrices); the test
frames are the last 33. Prints a table and writes JSON (default
benchmarks/apply.json). Run it with --device cuda on a GPU machine.

    python benchmarks/apply.py [--device cpu|cuda] [--batch 8] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

import torch

import lrstream as L
from lrstream.demo import sample_video_path
from lrstream.sources import frames_to_matrices, read_video

K, M = 10, 20


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def throughput(fn, A: torch.Tensor, batch: int, repeats: int, device: str) -> float:
    """Frames per second of fn over A in batches, best of ``repeats`` passes after a warm-up batch."""
    fn(A[:batch])
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, A.shape[0], batch):
            fn(A[i : i + batch])
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return A.shape[0] / best


def gap(approx_fn, A: torch.Tensor, opt: torch.Tensor, batch: int) -> float:
    errs = []
    with torch.no_grad():
        for i in range(0, A.shape[0], batch):
            X = A[i : i + batch]
            errs.append(torch.linalg.vector_norm((X - approx_fn(X)).double(), dim=(-2, -1)).cpu())
    return float(torch.cat(errs).mean() - opt.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "apply.json"))
    args = ap.parse_args()
    dev = args.device
    frames = frames_to_matrices(read_video(sample_video_path()))  # (132, 2160, 1280) uint8
    learned = L.learn(frames[:99], K, M, steps=args.train_steps)
    prep = L.prepare(frames[99:])
    A = prep.matrices.to(dev)  # (33, 2160, 1280) float32, sigma_1 = 1
    opt = prep.optimal_errors(K)
    n = A.shape[-2]
    sketches = {"sparse random": L.sparse_random(n, M, seed=0), "learned": learned, "dense random": L.dense_random(n, M, seed=0)}
    rows = []

    def add(method: str, fn, approx, passes: str) -> None:
        with torch.no_grad():
            fps = throughput(fn, A, args.batch, args.repeats, dev)
        g = gap(approx, A, opt, args.batch)
        rows.append({"method": method, "frames_per_s": fps, "gap": g, "passes_over_A": passes})
        print(f"{method:<40}{fps:>12.1f}{g:>12.5f}{passes:>8}", flush=True)

    print(f"{'method':<40}{'frames/s':>12}{'gap':>12}{'passes':>8}")
    for name, S in sketches.items():
        for method in ("svd", "gram"):
            add(f"SCW {name} ({method})", lambda X, S=S, m=method: L.scw(S, X, K, method=m), lambda X, S=S, m=method: L.scw(S, X, K, product=True, method=m), "2")
    learned_gap = next(r["gap"] for r in rows if r["method"] == "SCW learned (svd)")

    def exact(X):
        U, s, Vh = torch.linalg.svd(X, full_matrices=False)
        return (U[..., :K] * s[..., None, :K]) @ Vh[..., :K, :]

    add("torch.linalg.svd (optimum)", lambda X: torch.linalg.svd(X, full_matrices=False), exact, "full")

    def lowrank(niter):
        def approx(X):
            U, s, V = torch.svd_lowrank(X, q=M, niter=niter)
            return (U[..., :K] * s[..., None, :K]) @ V[..., :K].mT

        return approx

    add("torch.svd_lowrank q=m niter=0", lambda X: torch.svd_lowrank(X, q=M, niter=0), lowrank(0), "2")
    for niter in range(1, 9):
        g = gap(lowrank(niter), A, opt, args.batch)
        if g <= learned_gap:
            add(f"torch.svd_lowrank q=m niter={niter} (same gap)", lambda X, it=niter: torch.svd_lowrank(X, q=M, niter=it), lowrank(niter), str(2 + 2 * niter))
            break
    else:
        print(f"svd_lowrank with q=m did not reach the learned sketch's gap {learned_gap:.5f} within 8 power iterations")
    svd_fro = {r["method"]: r["gap"] for r in rows}
    agreement = max(abs(svd_fro[f"SCW {n} (gram)"] - svd_fro[f"SCW {n} (svd)"]) for n in sketches)
    print(f"gram vs svd orthonormalisation: largest difference in mean gap {agreement:.2e}")
    write_report(args.out, "apply", rows, device=dev if dev == "cpu" else torch.cuda.get_device_name(), matrix=list(A.shape[1:]), k=K, m=M, batch=args.batch, frames=A.shape[0], gram_vs_svd_gap_difference=agreement, torch_threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
