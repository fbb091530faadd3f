"""Scheduled evaluation (numerics.scoring, jobs.evaluate): the gap math, hour selection, idempotent Parquet reports, drift, the report command."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from conftest import reference_scw_error

import lrstream as L
from lrstream.cli import main
from lrstream.data.reports import read_reports
from lrstream.data.shards import write_hour
from lrstream.data.sources import iter_frames
from lrstream.data.store import Store
from lrstream.data.versions import load_version, publish_version
from lrstream.distributed.config import RetrainConfig
from lrstream.distributed.retrain import retrain
from lrstream.distributed.submit import submit_retrain
from lrstream.errors import DataError
from lrstream.jobs import evaluate as evaluation
from lrstream.numerics.scoring import evaluate_batches
from lrstream.training.config import LearnConfig

HOURS = ["2026-03-01T00", "2026-03-01T01", "2026-03-01T02", "2026-03-01T03"]


def _ingest(root, hours=HOURS, stream="cam", height=20, width=24):
    for i, h in enumerate(hours):
        src = f"synthetic://?frames=12&height={height}&width={width}&channels=2&seed=4&start={12 * i}"
        write_hour(str(root), stream, h, iter_frames(src), src)


def _train(root, kind="learned", end=HOURS[2]):
    lc = LearnConfig(k=3, m=8, kind=kind, steps=40, batch_size=6, seed=1)
    return retrain(str(root), "cam", RetrainConfig(learn=lc, workers=2), end=end, use_ray=False)


@pytest.fixture
def store(tmp_path):
    _ingest(tmp_path)
    _train(tmp_path)
    return str(tmp_path)


def _stored_bytes(root):
    """Digest of every file under frames/ and sketches/: what evaluating must leave as it was."""
    store = Store(root)
    fs, base = store.fs, store.base
    paths = sorted(p for top in ("frames", "sketches") for p in fs.find(f"{base}/{top}"))
    return {p: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in paths}


def _numpy_gap(S, frames, k):
    errs, opts = [], []
    for a in frames.astype(np.float64):
        s = np.linalg.svd(a, compute_uv=False)
        a, s = a / s[0], s / s[0]
        errs.append(reference_scw_error(S.to_dense().double().numpy(), a, k))
        opts.append(np.sqrt((s[k:] ** 2).sum()))
    return np.mean(errs) - np.mean(opts), np.mean(opts)


def test_gaps_match_an_independent_float64_reference(rng):
    A = rng.standard_normal((7, 60, 30)) * np.logspace(0, -2, 30)
    learned = L.mixed(L.sparse_random(60, 5, seed=3), 5, seed=4)
    batches = [torch.from_numpy(A[:3]).float(), torch.from_numpy(A[3:]).float()]  # streamed in two batches
    res = evaluate_batches(learned, batches, k=4)
    gap, opt = _numpy_gap(learned, A, 4)
    assert res.frames == 7 and res.m == 10
    np.testing.assert_allclose(res.optimal_error, opt, rtol=1e-6)
    np.testing.assert_allclose(res.gap_sketch, gap, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.gap_sparse_random, _numpy_gap(L.sparse_random(60, 10, seed=res.sparse_seed), A, 4)[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.gap_dense_random, _numpy_gap(L.dense_random(60, 10, seed=res.dense_seed), A, 4)[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.gap_random_half, _numpy_gap(L.random_half(learned), A, 4)[0], rtol=1e-4, atol=1e-7)
    assert res.gap_sketch <= res.gap_random_half + 1e-9  # the mixed sketch's guarantee
    assert res.seconds_per_frame > 0
    with pytest.raises(DataError, match="n=50"):
        evaluate_batches(learned, [torch.zeros(1, 50, 30)], k=4)


def test_evaluates_the_newest_unseen_hour_once(store):
    before = _stored_bytes(store)
    row = evaluation.run_evaluation(store, "cam")
    assert row["hour"] == HOURS[3] and row["status"] == "evaluated" and row["version"] == 1 and row["frames"] == 12
    assert row["gap_sketch"] < row["gap_sparse_random"] and not row["drift"]
    again = evaluation.run_evaluation(store, "cam")
    assert again["status"] == "exists" and again["gap_sketch"] == row["gap_sketch"]
    table = ds.dataset(f"{store}/reports/stream=cam", format="parquet").to_table()  # plain pyarrow reads the reports
    assert table.num_rows == 1 and table.column("hour").to_pylist() == [HOURS[3]]
    old = evaluation.run_evaluation(store, "cam", hour=HOURS[0])
    assert old["hour"] == HOURS[0] and len(read_reports(store, "cam")) == 2
    assert _stored_bytes(store) == before  # frames and sketches untouched


def test_mixed_sketch_reports_its_random_half(tmp_path):
    _ingest(tmp_path)
    _train(tmp_path, kind="mixed-j")
    row = evaluation.run_evaluation(str(tmp_path), "cam")
    assert row["kind"] == "mixed-j" and row["gap_random_half"] is not None
    assert row["gap_sketch"] <= row["gap_random_half"]


def test_evaluate_cli_json_and_exit_codes(store, tmp_path, capsys):
    assert main(["evaluate", "--root", store, "--stream", "cam", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("stream", "hour", "version", "k", "m", "frames", "optimal_error", "gap", "ratio", "seconds_per_frame"):
        assert key in doc
    assert set(doc["gap"]) >= {"sketch", "sparse_random", "dense_random"}
    assert doc["ratio"] == pytest.approx(doc["gap"]["sparse_random"] / doc["gap"]["sketch"])

    empty = str(tmp_path / "empty")
    _ingest(empty, hours=HOURS[:1])
    assert main(["evaluate", "--root", empty, "--stream", "cam"]) == 4  # no sketch yet
    seen = str(tmp_path / "seen")
    _ingest(seen, hours=HOURS[:3])
    _train(seen)
    assert main(["evaluate", "--root", seen, "--stream", "cam"]) == 4  # every hour was used in training
    _ingest(seen, hours=["2026-03-01T05"], height=22)
    assert main(["evaluate", "--root", seen, "--stream", "cam"]) == 3  # frames of another shape
    assert main(["evaluate", "--root", store, "--stream", "cam", "--hour", "2026-03-01T09"]) == 4
    assert main(["evaluate", "--root", store, "--stream", "cam", "--drift-margin", "-1"]) == 2
    assert main(["evaluate", "--root", store, "--stream", "cam", "--hour", "yesterday"]) == 2  # not an hour label
    assert main(["evaluate", "--root", store, "--stream", "cam", "--k", "0"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lrstream: error")]
    assert len(errors) == 7


def test_an_empty_hour_is_a_data_error(store):
    path = Store(store).hour_manifest("cam", HOURS[3])
    with open(path) as f:
        doc = json.load(f)
    doc.update(rows=0, files=[])
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(DataError, match="no frames"):
        evaluation.run_evaluation(store, "cam")
    assert main(["evaluate", "--root", store, "--stream", "cam"]) == 3
    assert read_reports(store, "cam") == []


def _publish_broken_sketch(root):
    good = load_version(root, "cam")
    values = torch.zeros_like(good.values)
    values[0, :2] = 1.0  # a sketch that sees two rows of A: far worse than random
    return publish_version(root, "cam", good.with_values(values))


def test_drift_exits_5_and_still_reports(store, capsys):
    version = _publish_broken_sketch(store)
    assert main(["evaluate", "--root", store, "--stream", "cam", "--json"]) == 5
    out = capsys.readouterr()
    doc = json.loads(out.out.strip().splitlines()[-1])
    assert doc["version"] == version and doc["drift"] is True and doc["gap"]["sketch"] > doc["gap"]["sparse_random"]
    assert "drift: stream cam" in out.err
    assert read_reports(store, "cam")[-1]["drift"] is True
    assert main(["evaluate", "--root", store, "--stream", "cam", "--hour", HOURS[0], "--drift-margin", "1000"]) == 0


def test_retrain_on_drift_submits_the_matching_train_command(store, monkeypatch, capsys):
    _publish_broken_sketch(store)
    calls = []
    monkeypatch.setattr(evaluation, "submit_retrain", lambda argv, sid, address=None: calls.append((argv, sid)) or {"mode": "test", "submission_id": sid, "status": "submitted"})
    assert main(["evaluate", "--root", store, "--stream", "cam", "--retrain-on-drift", "--workers", "3"]) == 5
    (argv, sid), = calls
    assert sid == f"retrain-cam-{HOURS[3]}"
    assert argv == ["train", "--root", store, "--stream", "cam", "--k", "3", "--m", "8", "--sketch", "learned", "--last", "3", "--workers", "3"]
    assert "retraining submitted" in capsys.readouterr().err


def test_submit_retrain_runs_locally_without_a_dashboard(store, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = evaluation.retrain_argv(store, "cam", load_version(store, "cam").meta) + ["--no-ray", "--steps", "5"]
    out = submit_retrain(argv, "retrain-cam-x")
    assert out["status"] == "done" and load_version(store, "cam").meta["version"] == 2


def test_report_command_table_plot_and_json(store, tmp_path, capsys):
    assert main(["report", "--root", store, "--stream", "cam"]) == 4  # nothing evaluated yet
    evaluation.run_evaluation(store, "cam")
    evaluation.run_evaluation(store, "cam", hour=HOURS[1])
    png = tmp_path / "gap.png"
    capsys.readouterr()
    assert main(["report", "--root", store, "--stream", "cam", "--plot", str(png), "--json"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out.strip().splitlines()[-1])
    assert [r["hour"] for r in doc["rows"]] == [HOURS[1], HOURS[3]]
    assert [r["hour"] for r in read_reports(store, "cam", last=1)] == [HOURS[3]]
    assert HOURS[3] in out.err and "sparse" in out.err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_evaluate_job_entrypoint(store):
    proc = subprocess.run([sys.executable, "-m", "jobs.evaluate", "--root", store, "--stream", "cam", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["hour"] == HOURS[3]


def test_report_rows_written_before_sampled_evaluation_still_read_format_and_plot(tmp_path):
    """A row with only the columns of the pre-sampling schema (no sample, no standard errors) reads back and prints."""
    import io as _io
    from datetime import datetime, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lrstream.data.reports import format_reports, plot_reports

    old = {"stream": "cam", "hour": "2026-01-01T05", "version": 1, "kind": "learned", "k": 3, "m": 8, "n": 40, "d": 24, "frames": 12, "optimal_error": 0.2,
           "gap_sketch": 0.01, "gap_sparse_random": 0.05, "gap_dense_random": 0.04, "gap_random_half": None, "ratio": 5.0, "seconds_per_frame": 0.001,
           "sparse_seed": 1, "dense_seed": 2, "drift": False, "margin": 0.0, "device": "cpu",
           "evaluated_at": datetime(2026, 1, 1, 6, tzinfo=timezone.utc)}  # fmt: skip
    store = Store(str(tmp_path))
    buf = _io.BytesIO()
    pq.write_table(pa.Table.from_pylist([old]), buf)
    store.write_bytes(store.report_path("cam", old["hour"], 1), buf.getvalue())
    rows = read_reports(store, "cam")
    assert rows[0]["gap_sketch"] == 0.01 and rows[0].get("sample") is None
    table = format_reports(rows)
    assert "2026-01-01T05" in table and "5.0x" in table and " 12     12 " in table  # every frame was the sample then
    plot_reports(rows, str(tmp_path / "gap.png"))
    assert (tmp_path / "gap.png").read_bytes()[:4] == b"\x89PNG"
