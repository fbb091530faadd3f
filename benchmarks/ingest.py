"""Ingest throughput: frames/s and MB/s into Arrow shards, next to PyAV's decode-only speed.

Sources: the bigbuckbunny clip (132 frames 1280x720) and a synthetic 1080p
stream. For each: decode-only speed, ingest speed (decode + validate + encode
+ write + publish) for zstd and lz4, and shard size against raw size.
Prints a table and writes JSON (default benchmarks/ingest.json).

    python benchmarks/ingest.py [--synthetic-frames 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import shutil
import tempfile
import time

import av

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

from lrstream.data.datasets import sample_video_path
from lrstream.data.shards import WriteOptions, write_hour
from lrstream.data.sources import iter_frames


def decode_only(url: str) -> tuple[int, int, float]:
    t = time.perf_counter()
    n = nbytes = 0
    if url.startswith("synthetic://"):
        for fr in iter_frames(url):
            n, nbytes = n + 1, nbytes + fr.array.nbytes
    else:
        with av.open(url) as c:
            for frame in c.decode(video=0):
                arr = frame.to_ndarray(format="rgb24")
                n, nbytes = n + 1, nbytes + arr.nbytes
    return n, nbytes, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic-frames", type=int, default=60)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "ingest.json"))
    args = ap.parse_args()
    sources = {
        "bigbuckbunny 1280x720": sample_video_path(),
        "synthetic 1920x1080": f"synthetic://?frames={args.synthetic_frames}&height=1080&width=1920&seed=0",
    }
    rows = []
    print(f"{'source':<24}{'mode':<16}{'frames':>7}{'frames/s':>10}{'MB/s raw':>10}{'shard/raw':>10}")
    for label, url in sources.items():
        n, nbytes, secs = decode_only(url)
        rows.append({"source": label, "mode": "decode only", "frames": n, "seconds": secs, "frames_per_s": n / secs, "mb_per_s": nbytes / 1e6 / secs, "shard_over_raw": None})
        print(f"{label:<24}{'decode only':<16}{n:>7}{n / secs:>10.1f}{nbytes / 1e6 / secs:>10.1f}{'':>10}", flush=True)
        for comp in ("zstd", "lz4"):
            root = tempfile.mkdtemp(prefix="lrstream-bench-")
            try:
                t = time.perf_counter()
                res = write_hour(root, "bench", "2026-01-01T00", iter_frames(url), url, WriteOptions(rows_per_shard=32, compression=comp))
                secs = time.perf_counter() - t
            finally:
                shutil.rmtree(root, ignore_errors=True)
            ratio = res.bytes / res.raw_bytes
            rows.append({"source": label, "mode": f"ingest {comp}", "frames": res.rows, "seconds": secs, "frames_per_s": res.rows / secs, "mb_per_s": res.raw_bytes / 1e6 / secs, "shard_over_raw": ratio})
            print(f"{label:<24}{'ingest ' + comp:<16}{res.rows:>7}{res.rows / secs:>10.1f}{res.raw_bytes / 1e6 / secs:>10.1f}{ratio:>10.3f}", flush=True)
    write_report(args.out, "ingest", rows, note="synthetic 'decode only' is the generator's own speed; ingest of one stream runs in one process (one Ray actor)")


if __name__ == "__main__":
    main()
