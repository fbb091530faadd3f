"""Ingest: shards, manifests, exactly-once publication, quarantine, Ray actors, the reader."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from lrstream.cli import main
from lrstream.data.datasets import sample_video_path
from lrstream.data.reader import HourReader, iter_matrices, select_hours
from lrstream.data.shards import MANIFEST, WriteOptions, iter_hour_frames, list_hours, part_urls, read_manifest, write_hour
from lrstream.data.sources import frames_to_matrices, iter_frames, read_video, synthetic_frames
from lrstream.data.store import publish, url_to_fs
from lrstream.distributed.ingest import Ingestor, IngestSpec, ingest_many
from lrstream.errors import DataError, NothingToDoError

H1, H2, H3 = "2026-11-22T01", "2026-11-22T02", "2026-11-22T03"
SYN = "synthetic://?frames=20&height=24&width=32&seed=1"


def ingest(root, stream, hour, source, **opts):
    return write_hour(str(root), stream, hour, iter_frames(source), source, WriteOptions(**opts))


def tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_bigbuckbunny_round_trips_through_plain_pyarrow(tmp_path):
    video = sample_video_path()
    res = ingest(tmp_path, "bbb", H1, video, rows_per_shard=40)
    assert res.status == "ingested" and res.rows == 132 and res.files == 4
    table = ds.dataset(part_urls(str(tmp_path), "bbb", H1), format="ipc").to_table()
    assert table.num_rows == 132
    frames = table.column("frame").combine_chunks().to_numpy_ndarray()
    assert frames.dtype == np.uint8 and frames.shape == (132, 720, 1280, 3)
    assert np.array_equal(frames, read_video(video))
    assert table.column("frame_index").to_pylist() == list(range(132))
    doc = read_manifest(str(tmp_path), "bbb", H1)
    assert doc["frame_shape"] == [720, 1280, 3] and doc["dtype"] == "uint8" and doc["quarantined"] == 0 and doc["source"] == video


def test_rerun_is_a_noop_and_force_replaces(tmp_path):
    first = ingest(tmp_path, "s", H1, SYN)
    before = tree_digest(tmp_path)
    again = ingest(tmp_path, "s", H1, SYN)
    assert again.status == "exists" and tree_digest(tmp_path) == before
    old_attempt = read_manifest(str(tmp_path), "s", H1)["attempt"]
    forced = ingest(tmp_path, "s", H1, "synthetic://?frames=7&height=24&width=32&seed=2", force=True)
    doc = read_manifest(str(tmp_path), "s", H1)
    assert forced.status == "replaced" and doc["rows"] == 7 and doc["attempt"] != old_attempt
    hour_dir = tmp_path / "frames" / "stream=s" / f"hour={H1}"
    assert sorted(p.name for p in hour_dir.iterdir()) == sorted([MANIFEST, f"attempt={doc['attempt']}"])
    assert first.rows == 20


def _slow_ingest_cmd(root, hour="2026-11-22T05"):
    # 720p synthetic frames take tens of ms each to generate: slow enough to kill mid-hour
    src = "synthetic://?frames=300&height=720&width=1280&seed=3"
    return [sys.executable, "-m", "lrstream.cli", "ingest", "--no-ray", "--root", str(root), "--stream", "cam", "--hour", hour, "--source", src, "--rows-per-shard", "2", "--compression", "lz4"]


def test_kill_mid_write_leaves_nothing_visible_and_rerun_completes(tmp_path):
    proc = subprocess.Popen(_slow_ingest_cmd(tmp_path), stderr=subprocess.DEVNULL)
    hour_dir = tmp_path / "frames" / "stream=cam" / "hour=2026-11-22T05"
    deadline = time.time() + 120
    while time.time() < deadline and not list(hour_dir.glob("attempt=*/part-00001.arrow")):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert list(hour_dir.glob("attempt=*/part-*.arrow")), "the writer was killed before writing any part"
    assert not (hour_dir / MANIFEST).exists()
    assert list_hours(str(tmp_path), "cam") == []
    with pytest.raises(NothingToDoError):
        next(iter_hour_frames(str(tmp_path), "cam", "2026-11-22T05"))
    res = ingest(tmp_path, "cam", "2026-11-22T05", "synthetic://?frames=6&height=720&width=1280&seed=3")
    assert res.status == "ingested" and sum(f.shape[0] for f, _ in iter_hour_frames(str(tmp_path), "cam", "2026-11-22T05")) == 6


def test_concurrent_ingests_of_one_hour_end_with_one_complete_copy(tmp_path):
    cmd = [sys.executable, "-m", "lrstream.cli", "ingest", "--no-ray", "--root", str(tmp_path), "--stream", "cam", "--hour", H1, "--source", "synthetic://?frames=24&height=96&width=128", "--rows-per-shard", "4", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    statuses = sorted(json.loads(o.strip().splitlines()[-1])["status"] for o, _ in outs)
    assert statuses in (["concurrent", "ingested"], ["exists", "ingested"])
    doc = read_manifest(str(tmp_path), "cam", H1)
    hour_dir = tmp_path / "frames" / "stream=cam" / f"hour={H1}"
    assert [p.name for p in hour_dir.glob("attempt=*")] == [f"attempt={doc['attempt']}"]  # the loser cleaned up
    frames = np.concatenate([f for f, _ in iter_hour_frames(str(tmp_path), "cam", H1)])
    assert np.array_equal(frames, synthetic_frames(24, 96, 128))


def test_object_store_semantics_without_rename():
    root = "memory://lrstream-test-bucket"
    res = write_hour(root, "cam", H1, iter_frames(SYN), SYN)
    assert res.status == "ingested" and list_hours(root, "cam") == [H1]
    fs, base = url_to_fs(root)
    path = f"{base}/frames/stream=cam/hour={H1}/{MANIFEST}"
    assert publish(fs, path, b"{}", exclusive=True) is False  # a second publisher loses
    assert read_manifest(root, "cam", H1)["rows"] == 20
    assert write_hour(root, "cam", H1, iter_frames(SYN), SYN).status == "exists"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, arr)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    "make_source,message",
    [
        (lambda p: p / "missing.mp4", "not found"),
        (lambda p: _write(p / "bad.mp4", os.urandom(5000)), "cannot decode video"),
        (lambda p: _mkdir(p / "empty"), "no images"),
        (lambda p: _npy(p / "e.npy", np.zeros((0, 4, 4), np.uint8)), "no valid frames"),
        (lambda p: _npy(p / "nan.npy", np.full((3, 4, 4), np.nan, np.float32)), "no valid frames (3 frames quarantined"),
    ],
)
def test_bad_sources_give_exit_3_and_never_touch_committed_hours(tmp_path, capsys, make_source, message):
    root = tmp_path / "root"
    ingest(root, "cam", H1, SYN)
    before = tree_digest(root / "frames")
    src = make_source(tmp_path)
    for extra in ([], ["--force"]):  # a failed forced re-ingest keeps the old copy
        for hour in (H2, H1):
            code, _, err = run_cli(capsys, "ingest", "--no-ray", "--root", str(root), "--stream", "cam", "--hour", hour, "--source", str(src), *extra)
            if hour == H1 and not extra:
                assert code == 0  # already ingested: a no-op, the bad source is never read
                continue
            assert code == 3, err
            assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert tree_digest(root / "frames") == before
    assert list_hours(str(root), "cam") == [H1]


def test_bad_frames_are_quarantined_with_reasons(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
    Image.fromarray(rng.integers(0, 255, (10, 20, 3), dtype=np.uint8)).save(folder / "f4.png")  # wrong shape
    (folder / "f5.png").write_bytes(b"not a png at all")  # undecodable
    res = ingest(tmp_path / "root", "cam", H1, str(folder))
    assert res.rows == 4 and res.quarantined == 2
    doc = read_manifest(str(tmp_path / "root"), "cam", H1)
    reasons = {q["frame_index"]: q["reason"] for q in doc["quarantine"]}
    assert "differs" in reasons[4] and "cannot decode image" in reasons[5]
    qdir = tmp_path / "root" / "quarantine" / "stream=cam" / f"hour={H1}" / f"attempt={doc['attempt']}"
    assert np.load(qdir / "frame-000004.npy").shape == (10, 20, 3)
    assert (qdir / "frame-000005.raw").read_bytes() == b"not a png at all"
    assert json.loads((qdir / "frame-000005.raw.reason.json").read_text())["frame_index"] == 5

    stack = rng.random((5, 6, 7)).astype(np.float32)
    stack[2, 0, 0] = np.nan
    np.save(tmp_path / "s.npy", stack)
    res = ingest(tmp_path / "root", "npy", H1, str(tmp_path / "s.npy"))
    assert res.rows == 4 and res.quarantined == 1
    assert read_manifest(str(tmp_path / "root"), "npy", H1)["quarantine"][0]["reason"] == "frame contains NaN or Inf"
    idx = np.concatenate([i for _, i in iter_hour_frames(str(tmp_path / "root"), "npy", H1)])
    assert idx.tolist() == [0, 1, 3, 4]


def test_damaged_shard_is_a_clear_error(tmp_path):
    ingest(tmp_path, "cam", H1, SYN)
    part = next((tmp_path / "frames" / "stream=cam" / f"hour={H1}").glob("attempt=*/part-00000.arrow"))
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(DataError, match="corrupted"):
        list(iter_hour_frames(str(tmp_path), "cam", H1))


def test_reader_yields_float_matrices_in_batches(tmp_path):
    for h, seed in ((H1, 1), (H2, 2), (H3, 3)):
        ingest(tmp_path, "cam", h, f"synthetic://?frames=5&height=24&width=32&seed={seed}", rows_per_shard=2)
    assert select_hours(str(tmp_path), "cam", last=2) == [H2, H3]
    assert select_hours(str(tmp_path), "cam", start=H1, end=H2) == [H1, H2]
    with pytest.raises(NothingToDoError):
        select_hours(str(tmp_path), "cam", hours=["2026-01-01T00"])
    batches = list(iter_matrices(str(tmp_path), "cam", [H1, H2], batch_size=4))
    assert [b.shape for b in batches] == [(4, 72, 32), (4, 72, 32), (2, 72, 32)]
    assert batches[0].dtype == torch.float32
    expected = np.concatenate([frames_to_matrices(synthetic_frames(5, 24, 32, seed=s)) for s in (1, 2)]).astype(np.float32)
    assert np.array_equal(torch.cat(batches).numpy(), expected)
    gray = next(iter(iter_matrices(str(tmp_path), "cam", [H1], gray=True)))
    assert gray.shape == (5, 24, 32)
    reader = HourReader(str(tmp_path), "cam", [H3])
    assert torch.equal(torch.cat(list(reader)), torch.cat(list(reader))) and reader.load().shape == (5, 72, 32)
    import lrstream

    sketch = lrstream.learn(HourReader(str(tmp_path), "cam", [H1, H2], batch_size=4), 2, 4, steps=5)  # training reads shards directly
    assert sketch.n == 72 and sketch.meta["training"]["steps"] == 5
    with pytest.raises(NothingToDoError):
        select_hours(str(tmp_path), "nostream")


def test_in_process_actor_reports_errors_as_data(tmp_path):
    actor = Ingestor(str(tmp_path), "cam")
    bad = actor.ingest(H1, str(tmp_path / "missing.mp4"))
    assert bad == {"ok": False, "stream": "cam", "hour": H1, "exit_code": 3, "error": f"source not found: {tmp_path / 'missing.mp4'}", "type": "DataError"}
    good = actor.ingest(H1, SYN)
    assert good["ok"] and good["rows"] == 20


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from lrstream.distributed.runtime import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_ray_ingests_streams_in_parallel_and_plan_file(tmp_path, capsys, ray_local):
    specs = [IngestSpec("a", H1, SYN), IngestSpec("b", H1, "synthetic://?frames=9&height=24&width=32&seed=5"), IngestSpec("a", H2, SYN), IngestSpec("c", H1, str(tmp_path / "nope.mp4"))]
    results = ingest_many(str(tmp_path), specs)
    assert [r["ok"] for r in results] == [True, True, True, False]
    assert [r.get("rows") for r in results[:3]] == [20, 9, 20]
    assert results[3]["exit_code"] == 3 and "not found" in results[3]["error"]
    assert list_hours(str(tmp_path), "a") == [H1, H2]

    plan = tmp_path / "plan.yaml"
    plan.write_text(f"hour: {H3}\nstreams:\n  - {{stream: a, source: '{SYN}'}}\n  - {{stream: b, source: '{SYN}'}}\n")
    code, out, err = run_cli(capsys, "ingest", "--root", str(tmp_path), "--plan", str(plan), "--json")
    assert code == 0, err
    assert [r["status"] for r in json.loads(out.splitlines()[-1])["results"]] == ["ingested", "ingested"]
    code, out, err = run_cli(capsys, "ingest", "--root", str(tmp_path), "--plan", str(plan), "--json")
    assert code == 0 and [r["status"] for r in json.loads(out.splitlines()[-1])["results"]] == ["exists", "exists"]
