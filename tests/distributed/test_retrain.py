"""Data-parallel retraining: the same sketch as learn with the same workers, publishing, Ray faults, async, the train CLI."""

import json
import subprocess
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import HOURS, ingest_hours, requires_cuda, retrain_config

from lrstream.cli import main
from lrstream.data.selection import load_segments
from lrstream.data.versions import latest_version, list_versions, load_version, publish_version
from lrstream.distributed.config import RetrainConfig
from lrstream.distributed.plan import plan_data
from lrstream.distributed.retrain import build_loop, retrain
from lrstream.errors import DataError, NothingToDoError
from lrstream.numerics.scw import error_gap
from lrstream.numerics.sketch import sparse_random
from lrstream.training.config import LearnConfig
from lrstream.training.learn import learn
from lrstream.training.sketches import initial_sketch

_cfg = retrain_config
_ingest = ingest_hours

# Every kind and start, as learn and the retrain both train them.
KINDS_AND_STARTS = [
    {"kind": "learned"},
    {"kind": "learned", "positions": True, "steps": 10},
    {"kind": "mixed-j"},
    {"kind": "mixed-s"},
    {"kind": "dense"},
    {"kind": "dense", "init": "random"},
    {"kind": "dense", "init": "spectral", "powers": (2.0, 1.0), "half_lives": (None, 0.5)},
    {"kind": "learned", "refit": True},
    {"kind": "learned", "loss": "v", "val_split": "random"},
]


def _reference(store, res, cfg, weight=None):
    """``learn`` with the retrain's workers on the same rows: the same computation, in this process."""
    rows = lambda shares: load_segments(store, "cam", [s for share in shares for s in share], False)  # noqa: E731
    return learn(rows(res.plan.train), config=cfg.learn, val=rows(res.plan.val), workers=cfg.workers, weight=weight)


# ------------------------------------------------------------------ the math: the same sketch as learn


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_reproduce_learn_with_as_many_workers(store, workers):
    cfg = _cfg(workers)
    res = retrain(store, "cam", cfg, use_ray=False, publish=False)
    ref = _reference(store, res, cfg)
    assert res.sketch.meta["training"]["steps"] == ref.meta["training"]["steps"] == 40
    assert res.sketch.meta["training"]["best_step"] == ref.meta["training"]["best_step"]
    assert float((res.sketch.values - ref.values).abs().max()) < 1e-9  # float64: only summation order may differ
    curve, ref_curve = np.array(res.sketch.meta["training"]["val_curve"]), np.array(ref.meta["training"]["val_curve"])
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-9)


@pytest.mark.parametrize("options", KINDS_AND_STARTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_kind_and_start_matches_learn_in_process(store, options):
    cfg = replace(_cfg(2), learn=replace(_cfg(2).learn, **options))
    res = retrain(store, "cam", cfg, use_ray=False, publish=False)
    ref = _reference(store, res, cfg)
    assert res.sketch.meta["kind"] == ref.meta["kind"] == options["kind"]
    assert float((res.sketch.to_dense() - ref.to_dense()).abs().max()) < 1e-6  # a dense S is rescaled to float32 at the end
    assert res.sketch.meta["training"]["steps"] == ref.meta["training"]["steps"]
    if cfg.learn.data_dependent:
        assert res.sketch.meta["training"].get("selection", res.sketch.meta["training"])["val_curve"][0][0] == 0  # the start is validated


def test_wfro_loss_takes_its_weight_to_every_worker(store):
    W = np.ones((40, 24), dtype=np.float32)
    W[:20] = 4.0  # the first channel matters most
    cfg = replace(_cfg(2), learn=replace(_cfg(2).learn, loss="wfro", steps=20))
    res = retrain(store, "cam", cfg, use_ray=False, publish=False, weight=W)
    ref = _reference(store, res, cfg, weight=W)
    assert res.sketch.meta["loss"] == "wfro" and float((res.sketch.values - ref.values).abs().max()) < 1e-9
    plain = retrain(store, "cam", replace(cfg, learn=replace(cfg.learn, loss="fro")), use_ray=False, publish=False)
    assert float((plain.sketch.values - res.sketch.values).abs().max()) > 1e-4  # the weight changed the sketch


def test_spectral_start_weighs_each_row_by_its_place_in_time_across_workers(store):
    # Each worker weighs its own rows by their age in the whole training window, so W=2 sums to W=1's Gram.
    # steps=0 keeps the start itself: trained, W=2 draws other batches than W=1 (each from its own share).
    learn_cfg = replace(_cfg(1).learn, kind="dense", steps=0, init="spectral", powers=(1.5,), half_lives=(0.25,))
    two = retrain(store, "cam", replace(_cfg(2), learn=learn_cfg), use_ray=False, publish=False)
    one = retrain(store, "cam", replace(_cfg(1), learn=learn_cfg), use_ray=False, publish=False)
    assert float((two.sketch.matrix - one.sketch.matrix).abs().max()) < 1e-6
    tensor = retrain(store, "cam", replace(_cfg(1), learn=replace(learn_cfg, init="tensor")), use_ray=False, publish=False)
    assert float((tensor.sketch.matrix - one.sketch.matrix).abs().max()) > 1e-3  # the weights changed the start
    # Choosing among candidates: each worker returns its per-candidate, per-fold sums; W=2 chooses as W=1 does.
    grid = replace(learn_cfg, powers=(2.0, 1.5, 1.0), half_lives=(None, 0.5, 0.25))
    pick2 = retrain(store, "cam", replace(_cfg(2), learn=grid), use_ray=False, publish=False).sketch.meta["spectral"]
    pick1 = retrain(store, "cam", replace(_cfg(1), learn=grid), use_ray=False, publish=False).sketch.meta["spectral"]
    assert pick1["folds"] == 3 and (pick2["power"], pick2["half_life"]) == (pick1["power"], pick1["half_life"])
    np.testing.assert_allclose([x[2] for x in pick2["scores"]], [x[2] for x in pick1["scores"]], rtol=1e-9)


def test_a_dense_start_is_shared_by_every_worker(store):
    # Same Gram sum (two shares vs one), so the same start up to summation order.
    cfg = replace(_cfg(2), learn=replace(_cfg(2).learn, kind="dense", steps=0))
    two = retrain(store, "cam", cfg, use_ray=False, publish=False)
    one = retrain(store, "cam", replace(cfg, workers=1), use_ray=False, publish=False)
    assert float((two.sketch.matrix - one.sketch.matrix).abs().max()) < 1e-6


def test_greedy_positions_do_not_depend_on_the_split(store):
    cfg = replace(_cfg(2), learn=replace(_cfg(2).learn, positions=True, greedy_samples=3, steps=0))
    two = retrain(store, "cam", cfg, use_ray=False, publish=False).sketch
    one = retrain(store, "cam", replace(cfg, workers=1), use_ray=False, publish=False).sketch
    assert two.meta["positions"] == "greedy" and torch.equal(two.positions, one.positions) and torch.equal(two.values, one.values)
    assert not torch.equal(two.positions, initial_sketch(40, LearnConfig(k=3, m=6, seed=1)).positions)


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
        val = load_segments(store, "cam", [s for share in res.plan.val for s in share], False)
        assert res.val_gap == pytest.approx(error_gap(s, val, 3), rel=1e-6)  # the reported gap is the sketch's on the held-out hour (workers hold it as float32)


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


@pytest.mark.parametrize("options", KINDS_AND_STARTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_two_ray_workers_give_learns_sketch_for_every_kind_and_start(ray_local, store, options):
    cfg = replace(_cfg(2), learn=replace(_cfg(2).learn, **options))
    res = retrain(store, "cam", cfg, publish=False)
    ref = _reference(store, res, cfg)
    assert res.sketch.meta["kind"] == options["kind"] and res.sketch.meta["training"]["workers"] == 2
    assert float((res.sketch.to_dense() - ref.to_dense()).abs().max()) < 1e-6  # float64 training; dense S rescaled to float32


def _in_process_params(store, cfg):
    loop, _ = build_loop(store, "cam", cfg, plan_data(store, "cam", cfg.workers), use_ray=False)
    loop.train()
    return loop.result(True)["params"]


def _run_with_fault(ray, store, cfg, fault):
    loop, _ = build_loop(store, "cam", cfg, plan_data(store, "cam", cfg.workers), use_ray=True)
    try:
        loop.wait_ready()
        loop.begin()
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


def test_refit_runs_on_a_cluster_sized_for_its_workers(ray_local, store):
    # The selection run's workers go before the refit's start: 3 workers of 1.3 CPUs fit the 4 CPUs once, not twice.
    cfg = replace(_cfg(3, steps=10), learn=replace(_cfg(3).learn, steps=10, refit=True), cpus_per_worker=1.3, startup_timeout=30)
    res = retrain(store, "cam", cfg, publish=False)
    assert res.sketch.meta["training"]["refit"]["matrices"] == 42 and res.val_gap is not None


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


def test_train_cli_takes_every_learn_option(tmp_path, capsys):
    # What once only lrstream.learn could train: a start chosen among candidates, refit, greedy positions, the wfro loss.
    store = str(tmp_path)
    _ingest(store)
    base = ["train", "--root", store, "--stream", "cam", "--k", "3", "--m", "6", "--steps", "10", "--eval-every", "5", "--no-ray", "--json"]
    assert main([*base, "--sketch", "dense", "--init", "spectral", "--powers", "2,1", "--half-lives", "none,0.5", "--refit"]) == 0
    sketch = load_version(store, "cam", json.loads(capsys.readouterr().out.strip().splitlines()[-1])["version"])
    assert sketch.meta["spectral"]["folds"] >= 1 and len(sketch.meta["spectral"]["scores"]) == 4
    assert sketch.meta["training"]["refit"]["matrices"] == 42 and sketch.meta["training"]["selection"]["steps"] == 10
    np.save(tmp_path / "w.npy", np.ones((40, 24), dtype=np.float32))
    assert main([*base, "--positions", "--greedy-samples", "2", "--loss", "wfro", "--weight", str(tmp_path / "w.npy")]) == 0
    sketch = load_version(store, "cam", json.loads(capsys.readouterr().out.strip().splitlines()[-1])["version"])
    assert sketch.meta["positions"] == "greedy" and sketch.meta["loss"] == "wfro"
    assert main([*base, "--loss", "wfro"]) == 2 and "weight" in capsys.readouterr().err  # wfro without its weight
    np.save(tmp_path / "bad.npy", np.ones((3, 3), dtype=np.float32))
    assert main([*base, "--loss", "wfro", "--weight", str(tmp_path / "bad.npy")]) == 2


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
