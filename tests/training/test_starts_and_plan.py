"""Data-dependent starts (numerics.starts, spectral, greedy), the published methods (training.baselines) and plan: greedy positions, dense learning, 1Shot1Vec, FewShotSGD, plan."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import reference_scw_error

import lrstream as L
from lrstream.data.sources import frames_to_matrices, synthetic_frames
from lrstream.distributed.config import RetrainConfig
from lrstream.errors import UsageError
from lrstream.numerics.greedy import _candidate_losses, greedy_positions
from lrstream.numerics.spectral import select_spectral
from lrstream.numerics.starts import gram_sum, recency_weights, spectral_gram
from lrstream.training.baselines import few_shot_sgd, li23, one_shot_one_vec, tensor_sketch
from lrstream.training.config import LearnConfig
from lrstream.training.plan import plan_sketch_size

K, M = 4, 8


@pytest.fixture(scope="module")
def random_gap(video):
    return L.error_gap(L.sparse_random(144, M, seed=0), video[1], K)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_greedy_candidate_losses_match_explicit_scw(rng, dtype):
    # Every (row j, value g) candidate's error from the (m+1)-dim reduction equals textbook SCW on the modified SA.
    n, d, m, k = 30, 20, 5, 3
    A = torch.as_tensor(rng.standard_normal((n, d)), dtype=dtype)
    SA = torch.as_tensor(rng.standard_normal((m, d)), dtype=dtype)
    a, grid = A[7], torch.linspace(-1, 1, 4, dtype=dtype)
    B, _ = torch.linalg.qr(torch.cat([SA, a[None]]).mT)
    AB = A @ B
    got = (_candidate_losses(SA @ B, a @ B, AB.mT @ AB, grid, k) + A.square().sum()).clamp_min(0).sqrt()
    An = A.double().numpy()
    for j in range(m):
        for gi, g in enumerate(grid.tolist()):
            # SA + g e_j a^T is the sketch S + g e_j e_7^T applied to A; reference_scw_error takes S explicitly.
            S = np.linalg.lstsq(An.T, SA.double().numpy().T, rcond=None)[0].T  # S with S A = SA (n > d: exact)
            S[j, 7] += g
            want = reference_scw_error(S, An, k)
            assert abs(float(got[j, gi]) - want) < (1e-9 if dtype == torch.float64 else 2e-3) * max(1.0, want)


def test_greedy_positions_beat_random_positions(video, random_gap):
    from lrstream.numerics.linalg import normalize_batch

    A = normalize_batch(torch.as_tensor(video[0]).float())
    pos, val = greedy_positions(A, M, K, samples=2, seed=0)
    assert pos.shape == (144,) and int(pos.min()) >= 0 and int(pos.max()) < M
    assert torch.bincount(pos, minlength=M).min() >= 1  # every row of S is used
    S = L.SparseSketch(pos[None], val[None].float(), torch.ones(1, 144, dtype=torch.bool), M)
    assert L.error_gap(S, video[1], K) * 2 < random_gap
    again = greedy_positions(A, M, K, samples=2, seed=0)
    assert torch.equal(again[0], pos) and torch.equal(again[1], val)


def test_learned_positions_improve_on_values_only(video):
    values_only = L.learn(video[0], K, M, steps=150)
    both = L.learn(video[0], K, M, steps=150, positions=True)
    assert both.meta["positions"] == "greedy" and both.meta["config"]["positions"] is True
    assert L.error_gap(both, video[1], K) < L.error_gap(values_only, video[1], K)
    mixed = L.learn(video[0], K, M, kind="mixed-j", steps=60, positions=True)
    assert L.error_gap(mixed, video[1], K) <= L.error_gap(L.random_half(mixed), video[1], K) + 1e-12


def test_dense_learning_starts_from_the_tensor_sketch_and_is_never_worse_on_validation(video, tmp_path):
    train = video[0]
    S = L.learn(train, K, M, kind="dense", steps=60)
    assert isinstance(S, L.DenseSketch) and S.matrix.shape == (M, 144) and S.kind == "dense"
    info = S.meta["training"]
    assert info["val_curve"][0][0] == 0  # the start is a validated candidate
    assert info["val_loss"] <= info["val_curve"][0][1]
    start = tensor_sketch(train, M)
    assert L.error_gap(S, video[1], K) < 1.1 * L.error_gap(start, video[1], K)
    L.save_sketch(S, str(tmp_path / "dense"))
    back = L.load_sketch(str(tmp_path / "dense"))
    assert torch.equal(back.matrix, S.matrix) and back.meta["config"]["kind"] == "dense"
    rnd = L.learn(train, K, M, kind="dense", init="random", steps=120)
    assert L.error_gap(rnd, video[1], K) < L.error_gap(L.dense_random(144, M, seed=0), video[1], K)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "learned", "init": "tensor"},
        {"kind": "learned", "init": "spectral"},
        {"kind": "dense", "positions": True},
        {"init": "kmeans"},
        {"greedy_samples": 0},
        {"val_split": "middle"},
        {"refit": True, "val_fraction": 0},
        {"kind": "dense", "init": "spectral", "powers": ()},
        {"kind": "dense", "init": "spectral", "powers": (0.0,)},
        {"kind": "dense", "init": "spectral", "half_lives": (-1.0,)},
        {"kind": "dense", "init": "spectral", "start_folds": 0},
    ],
)
def test_bad_start_options(video, kwargs):
    with pytest.raises(UsageError):
        L.learn(video[0], K, M, steps=1, **kwargs)


def test_data_dependent_starts_need_rereadable_data(video):
    with pytest.raises(UsageError, match="one-shot"):
        L.learn((video[0][i : i + 8] for i in range(0, 32, 8)), K, M, kind="dense", steps=2)
    # The retrain trains every start learn does: each is a sum over the workers' shares.
    for options in ({"positions": True}, {"kind": "dense"}, {"kind": "dense", "init": "random"}, {"kind": "dense", "init": "spectral"}):
        RetrainConfig(learn=LearnConfig(k=K, m=M, **options)).validate()


@pytest.mark.parametrize("kind", ["dense", "learned"])
def test_refit_trains_on_all_matrices_for_the_validated_step_count(video, kind):
    train = torch.from_numpy(video[0]).float()  # (36, 144, 64), time-ordered frames
    opts = {"kind": kind, "steps": 60, "eval_every": 10, "val_fraction": 0.25, "val_split": "last", "progress": False}
    chosen = L.learn(train, K, M, **opts)
    S = L.learn(train, K, M, refit=True, **opts)
    info = S.meta["training"]
    # Validation on the last 9 frames picked t*; the refit then saw all 36, from a start computed on all 36.
    assert info["selection"]["best_step"] == chosen.meta["training"]["best_step"] == info["refit"]["steps"]
    assert info["refit"]["matrices"] == 36
    direct = L.learn(train, K, M, **{**opts, "steps": info["refit"]["steps"], "val_fraction": 0})
    torch.testing.assert_close(S.to_dense(), direct.to_dense(), rtol=0, atol=0)
    if kind == "dense":
        assert not torch.equal(S.to_dense(), chosen.to_dense())  # the nine newest frames changed the sketch


def test_refit_needs_in_memory_data(video):
    with pytest.raises(UsageError, match="array"):
        L.learn([video[0][:16], video[0][16:]], K, M, steps=2, refit=True, val=video[0][:4])
    RetrainConfig(learn=LearnConfig(k=K, m=M, kind="learned", refit=True, loss="wfro")).validate()  # both train on Ray too


def test_published_baselines_run_and_beat_random(video, random_gap):
    train, test = video
    greedy = li23(train, K, M, steps=0)
    assert "ICLR 2023" in greedy.meta["method"] and L.error_gap(greedy, test, K) < random_gap
    one = one_shot_one_vec(train, M, seed=0)
    assert torch.equal(one.positions, L.sparse_random(144, M, seed=0).positions)
    assert L.error_gap(one, test, K) < random_gap
    few = few_shot_sgd(train, K, M, shots=3, steps=100)
    assert torch.equal(few.positions, L.sparse_random(144, M, seed=0).positions)
    assert L.error_gap(few, test, K) < random_gap
    with pytest.raises(UsageError):
        one_shot_one_vec(train, M, index=99)


def test_plan_finds_the_smallest_m_that_meets_the_target(video):
    train, test = video
    cfg = LearnConfig(k=K, m=K, steps=40)
    A = frames_to_matrices(synthetic_frames(48, 48, 64, seed=0))
    loose = plan_sketch_size(train, A[36:], K, target=1.0, config=cfg)
    assert loose.met and loose.m == K and len(loose.probes) == 1
    target = 0.5 * loose.gap
    res = plan_sketch_size(train, A[36:], K, target=target, config=cfg, m_max=32)
    assert res.met and res.gap <= target and res.m > K
    below = [p for p in res.probes if p["m"] == res.m - 1]
    assert below and below[0]["gap"] > target  # bisection ends next to a miss
    never = plan_sketch_size(train, A[36:], K, target=1e-9, config=cfg, m_max=8)
    assert not never.met and max(p["m"] for p in never.probes) == 8
    with pytest.raises(UsageError):
        plan_sketch_size(train, A[36:], K, target=0.0)


def test_plan_command_reads_stored_hours_and_reports_json(tmp_path, capsys):
    import json

    from lrstream.cli import main
    from lrstream.data.shards import write_hour
    from lrstream.data.sources import iter_frames

    for i, h in enumerate(["2026-11-22T10", "2026-11-22T11"]):
        src = f"synthetic://?frames=12&height=20&width=24&channels=2&seed=3&start={12 * i}"
        write_hour(str(tmp_path), "cam", h, iter_frames(src), src)
    base = ["plan", "--root", str(tmp_path), "--stream", "cam", "--k", "2", "--steps", "20", "--m-max", "8", "--json"]
    assert main([*base, "--target", "10"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["met"] and out["m"] == 2 and out["val_hours"] == ["2026-11-22T11"] and out["train_hours"] == ["2026-11-22T10"]
    assert main([*base, "--target", "1e-12"]) == 4
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("lrstream: error: no sketch size up to m=8") and "Traceback" not in captured.err
    assert not json.loads(captured.out.strip().splitlines()[-1])["met"]
    assert main([*base, "--target", "0.1", "--hours", "2026-11-22T10", "--val-fraction", "0"]) == 2


def test_spectral_gram_matches_its_definition():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(5, 9, 12, generator=g, dtype=torch.float64)  # (N, n, d), n < d: A A^T has full rank, so its square root is well conditioned
    torch.testing.assert_close(spectral_gram(A, 2.0), gram_sum(A), rtol=1e-10, atol=1e-10)
    w = recency_weights(5, 0.4)
    assert w[-1] == 1 and torch.isclose(w[-3], torch.tensor(0.5, dtype=torch.float64))  # two matrices = 0.4 of a window of 5
    # (A A^T)^{p/2} for p = 1 is the matrix square root of A A^T.
    evals, evecs = torch.linalg.eigh(A @ A.mT)  # (N, n), (N, n, n)
    roots = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.mT
    torch.testing.assert_close(spectral_gram(A, 1.0, w), (roots * w[:, None, None]).sum(0), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(spectral_gram(A, 2.0, w), ((A @ A.mT) * w[:, None, None]).sum(0), rtol=1e-10, atol=1e-10)  # power 2 skips the SVD


def _drifting_stream(count: int, change: int, n: int = 60, d: int = 40, k: int = 4, seed: int = 0) -> torch.Tensor:
    """Rank-k matrices plus noise whose column space jumps from one random k-dim subspace to another at ``change``."""
    g = torch.Generator().manual_seed(seed)
    X, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    Y, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    out = []
    for t in range(count):
        basis = X if t < change else Y
        coef = torch.randn(k, d, generator=g, dtype=torch.float64) * torch.tensor([4.0, 3.0, 2.0, 1.5], dtype=torch.float64)[:k, None]  # (k, d)
        out.append(basis @ coef + 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64))
    return torch.stack(out)  # (count, n, d)


def test_spectral_start_follows_a_drifting_stream():
    # The stream changes subspace at matrix 25 of 40; the next 10 come from the new one. The tensor
    # start, an average over all 40, spends m=6 rows mostly on the old 4-dim subspace; forward
    # validation sees the newest matrices predict the next ones best and picks a short half-life.
    stream = _drifting_stream(50, change=25)
    train, future = stream[:40], L.prepare(stream[40:])
    S, record = select_spectral(L.prepare(train).matrices, 4, 6)
    assert record["folds"] == 3 and record["half_life"] is not None
    assert len(record["scores"]) == 12
    spectral = L.DenseSketch(S.float())
    assert L.error_gap(spectral, future, 4) < 0.5 * L.error_gap(tensor_sketch(train, 6), future, 4)
    learned = L.learn(train, 4, 6, kind="dense", init="spectral", steps=20, val_split="last", progress=False)
    assert learned.meta["init"] == "spectral" and learned.meta["spectral"]["half_life"] is not None
    assert L.error_gap(learned, future, 4) < 0.5 * L.error_gap(tensor_sketch(train, 6), future, 4)


def test_spectral_start_with_one_candidate_is_that_weighted_subspace():
    A = L.prepare(_drifting_stream(20, change=20)).matrices  # (20, 60, 40), stationary
    S, record = select_spectral(A, 4, 6, powers=(2.0,), half_lives=(None,))
    assert record["folds"] == 0 and record["power"] == 2.0 and record["half_life"] is None
    T = tensor_sketch(A, 6).matrix.double()  # (6, 60): the same row space
    torch.testing.assert_close(S.mT @ S, T.mT @ T, rtol=0, atol=1e-5)


def test_learn_config_survives_a_json_round_trip():
    cfg = LearnConfig(k=K, m=M, kind="dense", init="spectral", half_lives=(None, 0.5))
    back = LearnConfig(**json.loads(json.dumps(asdict(cfg))))
    assert back == cfg and back.half_lives == (None, 0.5)


def test_spectral_selection_is_the_same_whatever_memory_allows(monkeypatch):
    import lrstream.numerics.spectral as spectral

    A = L.prepare(_drifting_stream(30, change=20)).matrices  # (30, 60, 40)
    ref, ref_record = select_spectral(A, 4, 6)
    for budget in (30 * 60 * 60 * 4, 0):  # float32 per-matrix terms, then no terms (one Gram per candidate)
        monkeypatch.setattr(spectral, "_TERMS_BYTES", budget)
        S, record = select_spectral(A, 4, 6)
        assert (record["power"], record["half_life"]) == (ref_record["power"], ref_record["half_life"])
        np.testing.assert_allclose([x[2] for x in record["scores"]], [x[2] for x in ref_record["scores"]], rtol=1e-5)
        torch.testing.assert_close(S.mT @ S, ref.mT @ ref, rtol=0, atol=1e-10)
