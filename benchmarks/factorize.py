"""Classic factorisations on real photographs: gradient U.V and ALS against the truncated SVD, masked completion against soft-impute.

For scikit-image's camera, astronaut (grayscale, 0-255) and coins, and k in
(10, 20, 50): the truncated SVD's error (the Eckart-Young optimum) and time;
``uv_factorize`` with its defaults (scaled gradient descent from a one-pass
range-finder start) and with ``solver="als"``: error, ratio to the optimum,
iterations, time; the previous default (Adam, 2000 steps) once, for camera at
k=20 (and for completion). Times are wall seconds of the public calls, each including the metrics'
own singular values (the same for every method).

Completion at 50% observed entries (seeded): ``complete_matrix`` with its
defaults at k=20 and 50 against soft-impute (Mazumder, Hastie & Tibshirani
2010) along a warm-started path of 8 lambdas, the best lambda picked on the
truth (favours the reference); held-out error = ||(A - Z)_U||_F / ||A_U||_F
over the never-observed entries U.

    python benchmarks/factorize.py [--out benchmarks/factorize.json] [--no-adam]   # ~2 min with adam, 15 s without
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
from _report import write_report  # noqa: E402
from skimage import color, data

from lrstream.numerics.factorize import complete_matrix, soft_impute, truncated_svd, uv_factorize

KS = (10, 20, 50)


def images() -> dict[str, np.ndarray]:
    return {
        "camera": data.camera().astype(np.float64),  # (512, 512)
        "astronaut": color.rgb2gray(data.astronaut()) * 255.0,  # (512, 512)
        "coins": data.coins().astype(np.float64),  # (303, 384)
    }


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def factor_rows(name: str, A: np.ndarray, adam: bool) -> list[dict]:
    rows = []
    for k in KS:
        svd, t_svd = timed(lambda: truncated_svd(A, k))
        row = {"kind": "factorize", "image": name, "shape": list(A.shape), "k": k, "svd_error": svd.relative_error, "svd_s": t_svd}
        for solver in ("gd", "als") + (("adam",) if adam and name == "camera" and k == 20 else ()):
            res, t = timed(lambda: uv_factorize(A, k, solver=solver))
            row[solver] = {"error": res.relative_error, "ratio": res.fro_error / res.optimal_error, "start_error": res.start_relative_error, "steps": res.steps, "s": t}
        rows.append(row)
        extra = f"  adam {row['adam']['error']:.4f} ({row['adam']['ratio']:.3f}x, {row['adam']['s']:.1f} s)" if "adam" in row else ""
        print(
            f"{name:>9} k={k:<3} svd {svd.relative_error:.4f} {t_svd:5.2f} s | gd {row['gd']['error']:.4f} {row['gd']['ratio']:.5f}x "
            f"{row['gd']['steps']:>3} it {row['gd']['s']:5.2f} s (start {row['gd']['start_error']:.3f}) | als {row['als']['ratio']:.5f}x {row['als']['steps']:>3} it {row['als']['s']:5.2f} s{extra}",
            flush=True,
        )
    return rows


def completion_row(name: str, A: np.ndarray, adam: bool, seed: int = 0) -> dict:
    mask = np.random.default_rng(seed).random(A.shape) < 0.5
    heldout = lambda Z: float(np.linalg.norm((Z - A)[~mask]) / np.linalg.norm(A[~mask]))  # noqa: E731
    row = {"kind": "complete", "image": name, "observed": 0.5}
    for k in (20, 50):
        res, t = timed(lambda: complete_matrix(np.where(mask, A, np.nan), mask, k))
        row[f"ours_k{k}"] = {"heldout_error": heldout((res.L @ res.R).numpy()), "steps": res.steps, "s": t}
    if adam and name == "camera":  # the previous default
        res, t = timed(lambda: complete_matrix(np.where(mask, A, np.nan), mask, 20, solver="adam"))
        row["adam_k20"] = {"heldout_error": heldout((res.L @ res.R).numpy()), "steps": res.steps, "s": t}
        print(f"{name:>9} 50% observed: previous default (adam, k=20) {row['adam_k20']['heldout_error']:.4f} ({t:.1f} s)", flush=True)
    s1 = float(np.linalg.svd(np.where(mask, A, 0.0), compute_uv=False)[0])
    t0, Z, path = time.perf_counter(), None, []
    for lam in s1 * np.geomspace(0.2, 0.003, 8):
        L, R = soft_impute(A, mask, lam, start=Z)
        Z = L @ R
        path.append({"lam": float(lam), "heldout_error": heldout(Z.numpy()), "rank": int(L.shape[1])})
    best = min(path, key=lambda p: p["heldout_error"])
    row["soft_impute"] = {"best": best, "path_s": time.perf_counter() - t0, "path": path}
    print(
        f"{name:>9} 50% observed: ours k=20 {row['ours_k20']['heldout_error']:.4f} ({row['ours_k20']['s']:.2f} s), k=50 {row['ours_k50']['heldout_error']:.4f} "
        f"({row['ours_k50']['s']:.2f} s) | soft-impute best {best['heldout_error']:.4f} (rank {best['rank']}, path of 8 lambdas {row['soft_impute']['path_s']:.1f} s)",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "factorize.json"))
    ap.add_argument("--no-adam", action="store_true", help="skip the previous Adam defaults (camera, k=20)")
    args = ap.parse_args()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = []
    for name, A in images().items():
        results += factor_rows(name, A, not args.no_adam)
    for name, A in images().items():
        results.append(completion_row(name, A, not args.no_adam))
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    write_report(args.out, "factorize", results, load_average_before=load_before, load_average_after=os.getloadavg(), total_s=total)


if __name__ == "__main__":
    main()
