"""Data-parallel retraining: equivalence with single-process learn, the data plan, checkpoints, faults, CLI."""

import json
import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import requires_cuda
from lrstream.cli import main
from lrstream.errors import DataError, NothingToDoError, UsageError
from lrstream.learn import LearnConfig, initial_sketch, learn
from lrstream.retrain import (
    ParameterServer,
    RetrainConfig,
    Schedule,
    Segment,
    build_loop,
    global_batches,
    load_segments,
    plan_data,
    retrain,
    split_rows,
)
from lrstream.scw import error_gap
from lrstream.shards import write_hour
from lrstream.sketch import DenseSketch, sparse_random
from lrstream.sketch_store import latest_version, list_versions, load_version, publish_version
from lrstream.sources import iter_frames

HOURS = ["2026-01-01T00", "2026-01-01T01", "2026-01-01T02"]


def _ingest(root, stream="cam", hours=HOURS, frames=14, height=20, width=24, channels=2):
    for i, h in enumerate(hours):
        src = f"synthetic://?frames={frames}&height={height}&width={width}&channels={channels}&seed=3&start={frames * i}"
        write_hour(str(root), stream, h, iter_frames(src), src)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    _ingest(root)
    return str(root)


def _cfg(workers=2, dtype="float64", **kw):
    lc = LearnConfig(k=3, m=6, steps=kw.pop("steps", 40), batch_size=6, eval_every=10, seed=1, dtype=dtype)
    return RetrainConfig(learn=lc, workers=workers, checkpoint_every=kw.pop("checkpoint_every", 5), **kw)


def _reference(store, res, cfg):
    """Single-process learn on the same data in the same order."""
    shares = [load_segments(store, "cam", share, False) for share in res.plan.train]
    val = load_segments(store, "cam", [s for share in res.plan.val for s in share], False)
    if len(shares) == 1:
        return learn(shares[0], config=cfg.learn, val=val)  # learn's own order on a tensor
    return learn(iter(global_batches(shares, cfg.learn, cfg.learn.steps)), config=cfg.learn, val=val)


# ------------------------------------------------------------------ the math: same result as one process


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_reproduce_single_process_learn(store, workers):
    cfg = _cfg(workers)
    res = retrain(store, "cam", cfg, use_ray=False, publish=False)
    ref = _reference(store, res, cfg)
    assert res.sketch.meta["training"]["steps"] == ref.meta["training"]["steps"] == 40
    assert res.sketch.meta["training"]["best_step"] == ref.meta["training"]["best_step"]
    assert torch.allclose(res.sketch.values, ref.values.to(res.sketch.values.dtype), atol=1e-5, rtol=0)
    assert float((res.sketch.values - ref.values).abs().max()) < 1e-9  # float64: only summation order differs
    curve, ref_curve = np.array(res.sketch.meta["training"]["val_curve"]), np.array(ref.meta["training"]["val_curve"])
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-9)


@pytest.mark.parametrize("init", ["tensor", "spectral"])
def test_dense_tensor_start_reproduces_learn(store, init):
    # The start is summed from the workers' Gram shares on the driver and seeded into the server.
    cfg = replace(_cfg(1), learn=replace(_cfg(1).learn, kind="dense", steps=20, init=init, powers=(1.5,), half_lives=(0.5,)))
    res = retrain(store, "cam", cfg, use_ray=False, publish=False)
    ref = _reference(store, res, cfg)
    assert isinstance(res.sketch, DenseSketch) and res.sketch.meta["init"] == init
    assert float((res.sketch.matrix - ref.matrix).abs().max()) < 1e-6  # the final dense S is rescaled to float32
    curve, ref_curve = np.array(res.sketch.meta["training"]["val_curve"]), np.array(ref.meta["training"]["val_curve"])
    assert curve[0][0] == 0  # validated at step 0, as learn does for data-dependent starts
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-9)


def test_spectral_start_weighs_each_row_by_its_place_in_time_across_workers(store):
    # Each worker weighs its own rows by their age in the whole training window, so W=2 sums to W=1's Gram.
    # steps=0 keeps the start itself: trained, W=2 draws other batches than W=1 (each from its own share).
    learn_cfg = replace(_cfg(1).learn, kind="dense", steps=0, init="spectral", powers=(1.5,), half_lives=(0.25,))
    two = retrain(store, "cam", replace(_cfg(2), learn=learn_cfg), use_ray=False, publish=False)
    one = retrain(store, "cam", replace(_cfg(1), learn=learn_cfg), use_ray=False, publish=False)
    assert float((two.sketch.matrix - one.sketch.matrix).abs().max()) < 1e-6
    tensor = retrain(store, "cam", replace(_cfg(1), learn=replace(learn_cfg, init="tensor")), use_ray=False, publish=False)
    assert float((tensor.sketch.matrix - one.sketch.matrix).abs().max()) > 1e-3  # the weights changed the start
    with pytest.raises(UsageError, match="one power and one half-life"):
        retrain(store, "cam", replace(_cfg(1), learn=replace(learn_cfg, half_lives=(None, 0.5))), use_ray=False, publish=False)


def test_dense_start_is_shared_by_every_worker_and_survives_a_server_restart(store, tmp_path):
    cfg = replace(_cfg(2), learn=replace(_cfg(2).learn, kind="dense", steps=0))
    two = retrain(store, "cam", cfg, use_ray=False, publish=False)
    one = retrain(store, "cam", replace(cfg, workers=1), use_ray=False, publish=False)
    # Same Gram sum (two shares vs one), so the same start up to summation order. (Trained, W=2 would
    # draw other batches than W=1: each worker samples its own share; W>1 is checked against learn on
    # the same global batches in test_workers_reproduce_single_process_learn.)
    assert float((two.sketch.matrix - one.sketch.matrix).abs().max()) < 1e-6
    # A server built again after seeding resumes from the seeded start, not from its random placeholder.
    fit = cfg.learn
    ps = ParameterServer(fit, two.plan.n, str(tmp_path / "ckpt"), 5)
    start = np.arange(ps.params().size, dtype=np.float64)
    assert ps.seed_start(start)["seeded"]
    again = ParameterServer(fit, two.plan.n, str(tmp_path / "ckpt"), 5)
    assert again.restored_from == 0 and np.array_equal(again.params(), start)
    assert not again.seed_start(start + 1)["seeded"]


def test_one_worker_float32_is_bitwise_learn(store):
    cfg = _cfg(1, dtype="float32")
    res = retrain(store, "cam", cfg, use_ray=False, publish=False)
    assert torch.equal(res.sketch.values, _reference(store, res, cfg).values)


def test_kinds_give_the_sketch_asked_for(store):
    for kind in ("mixed-j", "mixed-s"):
        lc = LearnConfig(k=3, m=7, kind=kind, steps=10, batch_size=4, seed=2)
        res = retrain(store, "cam", RetrainConfig(learn=lc, workers=2), use_ray=False, publish=False)
        s = res.sketch
        assert s.m == 7 and s.meta["kind"] == kind and s.positions.shape[0] == 2
        assert int(s.trainable[0].sum()) == s.n and not bool(s.trainable[1].any())  # learned rows, fixed random rows
        assert res.val_gap is not None and res.val_gap >= 0


@requires_cuda
def test_workers_compute_on_cuda(store):
    lc = LearnConfig(k=3, m=6, steps=20, batch_size=6, eval_every=10, seed=1, dtype="float64")
    gpu = retrain(store, "cam", RetrainConfig(learn=replace(lc, device="cuda"), workers=2), use_ray=False, publish=False)
    cpu = retrain(store, "cam", RetrainConfig(learn=lc, workers=2), use_ray=False, publish=False)
    torch.testing.assert_close(gpu.sketch.values, cpu.sketch.values, atol=1e-6, rtol=0)


def test_time_budget_stops_early(store):
    cfg = _cfg(2, steps=100000)
    cfg = RetrainConfig(learn=LearnConfig(**{**cfg.learn.__dict__, "time_budget": 0.5, "eval_every": 100000}), workers=2)
    res = retrain(store, "cam", cfg, use_ray=False, publish=False)
    assert 0 < res.sketch.meta["training"]["steps"] < 100000


def test_plateau_stops_training_and_keeps_the_best_sketch(store):
    lc = LearnConfig(k=3, m=6, steps=1000, batch_size=6, eval_every=2, patience=2, lr=5.0, optimizer="sgd", seed=1)
    res = retrain(store, "cam", RetrainConfig(learn=lc, workers=2), use_ray=False, publish=False)
    info = res.sketch.meta["training"]
    assert info["steps"] < 1000  # a learning rate this large stops improving at once
    vals = [v for _, v in info["val_curve"]]
    assert info["val_loss"] == min(vals) and info["best_step"] == info["val_curve"][vals.index(min(vals))][0]


# ------------------------------------------------------------------ the data plan


def test_split_rows_is_a_balanced_partition():
    segs = [Segment("a", 0, 7), Segment("b", 3, 5), Segment("c", 0, 11)]
    for parts in range(1, 21):
        shares = split_rows(segs, parts)
        sizes = [sum(s.rows for s in share) for share in shares]
        assert sum(sizes) == 20 and max(sizes) - min(sizes) <= 1
        flat = [(s.hour, r) for share in shares for s in share for r in range(s.lo, s.hi)]
        assert flat == [(s.hour, r) for s in segs for r in range(s.lo, s.hi)]  # in order, no overlap, no gap


def test_schedule_is_a_pure_function_of_the_step():
    sch = Schedule(frames=10, batch=3, seed=5)
    forward = [sch.indices(t).tolist() for t in range(1, 13)]
    assert Schedule(10, 3, 5).indices(9).tolist() == forward[8]  # jumping ahead
    assert sch.indices(2).tolist() == forward[1]  # going back (a resume)
    for epoch in range(4):  # each epoch: 3 disjoint batches of a permutation
        rows = sum(forward[3 * epoch : 3 * epoch + 3], [])
        assert len(set(rows)) == 9


def test_plan_holds_out_the_newest_hour_or_a_slice(store):
    plan = plan_data(store, "cam", 3)
    assert plan.train_hours == tuple(HOURS[:2]) and plan.val_hours == (HOURS[2],) and plan.validation == "hour"
    assert (plan.train_frames, plan.val_frames, plan.n, plan.d) == (28, 14, 40, 24)
    one = plan_data(store, "cam", 2, hours=[HOURS[0]], val_fraction=0.25)
    assert one.validation == "slice" and one.val_frames == 4 and one.train_frames == 10
    assert [s.hi for share in one.val for s in share][-1] == 14  # the last rows hold out
    assert plan_data(store, "cam", 1, last=2, val_fraction=0).validation == "none"
    gray = plan_data(store, "cam", 1, gray=True)
    assert (gray.n, gray.d) == (20, 24)


def test_bad_training_sets_are_clear_errors(tmp_path, store):
    with pytest.raises(NothingToDoError, match="no ingested hours"):
        plan_data(str(tmp_path), "cam", 1)
    with pytest.raises(DataError, match="too few frames"):
        plan_data(store, "cam", 20, last=2)
    root = str(tmp_path / "mixed")
    _ingest(root, hours=HOURS[:1])
    _ingest(root, hours=HOURS[1:2], height=22)
    with pytest.raises(DataError, match="one frame shape"):
        plan_data(root, "cam", 1)
    with pytest.raises(UsageError, match="smaller than"):
        retrain(store, "cam", _cfg(7), use_ray=False)


# ------------------------------------------------------------------ checkpoints and the store


def test_a_new_parameter_server_resumes_exactly_from_its_checkpoint(store):
    cfg = _cfg(2)
    plan = plan_data(store, "cam", 2)
    straight, _ = build_loop(store, "cam", cfg, plan, use_ray=False, run_id="straight")
    straight.wait_ready()
    straight.run()
    interrupted, _ = build_loop(store, "cam", cfg, plan, use_ray=False, run_id="crash")
    interrupted.wait_ready()
    for _ in range(13):
        interrupted.step()
    resumed, _ = build_loop(store, "cam", cfg, plan, use_ray=False, run_id="crash")  # a fresh server, as after a crash
    resumed.wait_ready()
    assert resumed.version == 10  # the newest checkpoint (every 5 steps; validation at 10 checkpoints too)
    resumed.run()
    a, b = straight.result(True), resumed.result(True)
    np.testing.assert_array_equal(a["params"], b["params"])
    assert a["info"]["val_curve"] == b["info"]["val_curve"]


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    lc = _cfg(1).learn
    ps = ParameterServer(lc, 40, str(tmp_path), checkpoint_every=1)
    grad = {"ok": True, "step": 1, "loss_sum": 1.0, "grad_sum": np.ones(40), "count": 1}
    ps.apply(grad)
    ps.apply({**grad, "step": 2})
    (tmp_path / "step=00000002" / "params.npy").write_bytes(b"garbage")
    again = ParameterServer(lc, 40, str(tmp_path))
    assert again.restored_from == 1 and again.version == 1


def test_published_version_carries_its_training_record(tmp_path):
    root = str(tmp_path)
    _ingest(root)
    res = retrain(root, "cam", _cfg(2, steps=20), use_ray=False)
    assert res.version == 1 and latest_version(root, "cam") == 1
    stored = load_version(root, "cam")
    torch.testing.assert_close(stored.values, res.sketch.values)
    meta = stored.meta
    assert meta["data"]["train_hours"] == HOURS[:2] and meta["data"]["val_hours"] == [HOURS[2]]
    assert meta["training"]["steps"] == 20 and len(meta["training"]["loss_curve"]) == 20
    assert meta["val_gap"] == pytest.approx(res.val_gap) and meta["val_gap_sparse_random"] > 0
    assert not (tmp_path / "sketches" / "stream=cam" / "_runs").exists()  # checkpoints go once the version is out
    assert retrain(root, "cam", _cfg(1, steps=5), use_ray=False).version == 2 and latest_version(root, "cam") == 2


def test_concurrent_publishers_get_distinct_versions_and_latest_never_goes_back(tmp_path):
    root, sketch, got = str(tmp_path), sparse_random(30, 4), []
    threads = [threading.Thread(target=lambda: got.append(publish_version(root, "s", sketch))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 9)) and list_versions(root, "s") == list(range(1, 9))
    assert latest_version(root, "s") == 8
    publish_version(root, "s", sketch, move_latest=False)
    assert latest_version(root, "s") == 8
    with pytest.raises(NothingToDoError):
        load_version(root, "s", 42)
    with pytest.raises(NothingToDoError, match="no sketch yet"):
        load_version(root, "other")
    (tmp_path / "sketches" / "stream=s" / "LATEST").write_text("{")
    with pytest.raises(DataError, match="corrupted"):
        load_version(root, "s")


# ------------------------------------------------------------------ on Ray: transport, faults, async


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from lrstream.raylib import init_ray

    init_ray(num_cpus=4)  # logical CPUs: 3 actors fit on the 2-core machine
    yield ray
    ray.shutdown()


def _in_process_params(store, cfg):
    loop, _ = build_loop(store, "cam", cfg, plan_data(store, "cam", cfg.workers), use_ray=False)
    loop.wait_ready()
    loop.run()
    return loop.result(True)["params"]


def _run_with_fault(ray, store, cfg, fault):
    loop, _ = build_loop(store, "cam", cfg, plan_data(store, "cam", cfg.workers), use_ray=True)
    try:
        loop.wait_ready()
        for _ in range(12):
            loop.step()
        fault(ray, loop)
        loop.run()
        return loop.result(True)["params"], loop.stats
    finally:
        loop.shutdown()


def test_ray_workers_match_in_process_training(ray_local, store):
    cfg = _cfg(2)
    params, stats = _run_with_fault(ray_local, store, cfg, lambda ray, loop: None)
    np.testing.assert_allclose(params, _in_process_params(store, cfg), atol=1e-12)
    assert stats.steps == 40 and stats.frames == 240


def test_killed_worker_is_replaced_and_training_finishes(ray_local, store):
    cfg = _cfg(2)
    params, stats = _run_with_fault(ray_local, store, cfg, lambda ray, loop: ray.kill(loop.workers[1]))
    assert stats.worker_restarts == 1
    ref = _in_process_params(store, cfg)
    assert np.linalg.norm(params - ref) <= 0.02 * np.linalg.norm(ref)  # in fact equal: batches replay exactly
    np.testing.assert_allclose(params, ref, atol=1e-12)


def test_killed_parameter_server_restarts_from_its_checkpoint(ray_local, store):
    cfg = _cfg(2)
    params, stats = _run_with_fault(ray_local, store, cfg, lambda ray, loop: ray.kill(loop.ps, no_restart=False))
    assert stats.ps_restarts == 1 and stats.replayed_steps == 2  # killed after step 12, checkpoint at 10
    ref = _in_process_params(store, cfg)
    assert np.linalg.norm(params - ref) <= 0.02 * np.linalg.norm(ref)
    np.testing.assert_allclose(params, ref, atol=1e-12)


def test_async_training_with_bounded_staleness(ray_local, store):
    lc = LearnConfig(k=3, m=6, steps=60, batch_size=6, eval_every=20, seed=1)
    res = retrain(store, "cam", RetrainConfig(learn=lc, workers=3, mode="async", staleness=0), publish=False)
    assert res.sketch.meta["training"]["steps"] == 60 and res.stats.steps == 60
    # All three first gradients read version 0; with staleness 0 only the first to arrive is applied.
    assert res.stats.dropped >= 2
    val = load_segments(store, "cam", [s for share in res.plan.val for s in share], False)
    start = initial_sketch(res.plan.n, lc)
    assert res.val_gap < error_gap(start, val, lc.k)  # it learned from where it started


def test_train_cli_publishes_and_reports(ray_local, tmp_path, capsys):
    root = str(tmp_path)
    _ingest(root)
    code = main(["train", "--root", root, "--stream", "cam", "--k", "3", "--m", "6", "--steps", "30", "--workers", "2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out.strip().splitlines()[-1])
    assert doc["version"] == 1 and doc["val_gap"] > 0 and doc["train_hours"] == HOURS[:2]
    assert "version 1" in out.err and "validation gap" in out.err


def test_train_cli_bad_input_exit_codes(tmp_path, store, capsys):
    root = str(tmp_path)
    assert main(["train", "--root", root, "--stream", "cam", "--k", "3", "--m", "6", "--no-ray"]) == 4
    _ingest(root, stream="tiny", hours=HOURS[:1], frames=5)
    assert main(["train", "--root", root, "--stream", "tiny", "--k", "3", "--m", "6", "--no-ray", "--workers", "8", "--batch-size", "8"]) == 3
    _ingest(root, hours=HOURS[:1])
    _ingest(root, hours=HOURS[1:2], width=30)
    assert main(["train", "--root", root, "--stream", "cam", "--k", "3", "--m", "6", "--no-ray"]) == 3
    assert main(["train", "--root", store, "--stream", "cam", "--k", "9", "--m", "6", "--no-ray"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lrstream: error")]
    assert len(errors) == 4 and not any("Traceback" in e for e in errors)


def test_train_cli_dense_on_ray(ray_local, tmp_path, capsys):
    root = str(tmp_path)
    _ingest(root)
    code = main(["train", "--root", root, "--stream", "cam", "--k", "3", "--m", "6", "--sketch", "dense", "--steps", "20", "--workers", "2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out.strip().splitlines()[-1])
    assert doc["kind"] == "dense" and doc["val_gap"] < doc["val_gap_sparse_random"]


def test_train_cli_spectral_start(tmp_path, capsys):
    store = str(tmp_path)
    _ingest(store)
    args = ["train", "--root", store, "--stream", "cam", "--k", "3", "--m", "6", "--sketch", "dense", "--init", "spectral", "--steps", "5", "--no-ray"]
    assert main([*args, "--power", "1.5", "--half-life", "none", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sketch = load_version(store, "cam", doc["version"])
    assert sketch.meta["init"] == "spectral" and sketch.meta["config"]["powers"] == [1.5] and sketch.meta["config"]["half_lives"] == [None]
    assert main([*args, "--half-life", "soon"]) == 2
    assert "half-life" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_train_cli_cuda_without_gpu_is_a_usage_error(store, capsys):
    assert main(["train", "--root", store, "--stream", "cam", "--k", "3", "--m", "6", "--no-ray", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "Traceback" not in err


def test_retrain_job_entrypoint(tmp_path):
    root = str(tmp_path)
    _ingest(root)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.retrain", "--root", root, "--stream", "cam", "--k", "3", "--m", "6", "--steps", "10", "--no-ray", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["version"] == 1


def test_retrain_and_store_on_an_object_store_url():
    root = "memory://lrstream-retrain-test"
    _ingest(root, hours=HOURS[:2])
    res = retrain(root, "cam", _cfg(2, steps=10), use_ray=False)
    assert res.url == f"{root}/sketches/stream=cam/v=000001"
    torch.testing.assert_close(load_version(root, "cam").values, res.sketch.values)
