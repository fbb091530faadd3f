"""Learning on synthetic video: quality, determinism, inputs, configuration errors."""

import numpy as np
import pytest
import torch

import lrstream as L
from lrstream.errors import DataError, UsageError

K, M = 4, 8


@pytest.fixture(scope="module")
def random_gap(video):
    return L.error_gap(L.sparse_random(144, M, seed=0), video[1], K)


@pytest.mark.parametrize("kind,factor", [("learned", 2.5), ("mixed-j", 1.5), ("mixed-s", 1.2)])
def test_learning_beats_sparse_random(video, random_gap, kind, factor):
    S = L.learn(video[0], K, M, kind=kind, steps=150)
    assert S.m == M and S.kind == kind and S.meta["training"]["steps"] > 0
    assert L.error_gap(S, video[1], K) * factor < random_gap
    if kind != "learned":
        half = L.random_half(S)
        assert L.error_gap(S, video[1], K) <= L.error_gap(half, video[1], K) + 1e-12


@pytest.mark.parametrize("options", [{"optimizer": "sgd"}, {"loss": "v"}, {"lr_schedule": "constant", "lr": 0.02}])
def test_other_optimisers_and_losses_learn(video, random_gap, options):
    S = L.learn(video[0], K, M, steps=120, **options)
    assert L.error_gap(S, video[1], K) * 1.5 < random_gap


def test_power_route_learns(video, random_gap):
    S = L.learn(video[0][:12], K, M, steps=8, route="power", power_iters=10, val_fraction=0, batch_size=4)
    assert L.error_gap(S, video[1], K) < random_gap


def test_weighted_loss_needs_and_uses_weights(video):
    with pytest.raises(UsageError, match="weight"):
        L.learn(video[0], K, M, loss="wfro", steps=1)
    W = np.ones((144, 64), dtype=np.float32)
    W[:48] = 4.0  # the red channel matters most
    S = L.learn(video[0], K, M, loss="wfro", weight=W, steps=20)
    assert S.meta["loss"] == "wfro"


def test_same_seed_same_sketch_and_different_seed_differs(video):
    a = L.learn(video[0], K, M, steps=15, seed=3)
    b = L.learn(torch.from_numpy(video[0]), K, M, steps=15, seed=3)
    c = L.learn(video[0], K, M, steps=15, seed=4)
    assert torch.equal(a.values, b.values) and torch.equal(a.positions, b.positions)
    assert not torch.equal(a.positions, c.positions)


def test_iterable_of_batches_is_accepted(video, random_gap):
    batches = [video[0][i : i + 6] for i in range(0, 36, 6)]
    S = L.learn(batches, K, M, steps=100, val=video[0][:4])
    # Four validations at patience 6 cannot stop early, so every step runs, epoch after epoch of the list.
    assert S.meta["training"]["steps"] == 100
    assert [step for step, _ in S.meta["training"]["val_curve"]] == [25, 50, 75, 100]
    assert L.error_gap(S, video[1], K) * 1.5 < random_gap


def test_early_stopping_keeps_the_best_validated_sketch(video):
    S = L.learn(video[0], K, M, steps=400, lr=5.0, lr_schedule="constant", eval_every=2, patience=2)
    info = S.meta["training"]
    assert info["steps"] < 400
    best = min(v for _, v in info["val_curve"])
    assert info["val_loss"] == pytest.approx(best)


def test_learned_sketch_saves_with_its_config(tmp_path, video):
    S = L.learn(video[0], K, M, kind="mixed-j", steps=5)
    L.save_sketch(S, str(tmp_path / "s"))
    T = L.load_sketch(str(tmp_path / "s"))
    assert T.meta["config"]["kind"] == "mixed-j" and T.meta["config"]["steps"] == 5
    assert L.error_gap(T, video[1], K) == pytest.approx(L.error_gap(S, video[1], K), abs=1e-12)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"kind": "weird"}, UsageError),
        ({"optimizer": "lbfgs"}, UsageError),
        ({"steps": -1}, UsageError),
        ({"val_fraction": 1.5}, UsageError),
        ({"nonsense": 1}, UsageError),
        ({"device": "cuda"} if not torch.cuda.is_available() else {"route": "bogus"}, UsageError),
    ],
)
def test_bad_configuration(video, kwargs, error):
    with pytest.raises(error):
        L.learn(video[0], K, M, **{"steps": 1, **kwargs})


def test_bad_training_data(video):
    with pytest.raises(UsageError, match="exceeds"):
        L.learn(video[0], 9, M)
    bad = video[0][:4].astype(np.float32)
    bad[0, 0, 0] = np.inf
    with pytest.raises(DataError, match="NaN or Inf"):
        L.learn(bad, K, M, steps=1)
    with pytest.raises(DataError, match="empty"):
        L.learn([], K, M, steps=1)
    with pytest.raises(DataError, match="rows"):
        L.learn([video[0][:2], video[0][:2, :100]], K, M, steps=3)


def test_config_object_is_honoured_and_explicit_arguments_override_it(video):
    cfg = L.LearnConfig(k=K, m=M, kind="mixed-j", steps=3, seed=5)
    S = L.learn(video[0], config=cfg)
    assert S.kind == "mixed-j" and S.meta["config"]["seed"] == 5 and S.meta["training"]["steps"] == 3
    T = L.learn(video[0], config=cfg, kind="learned", steps=2)
    assert T.kind == "learned" and T.meta["config"]["steps"] == 2 and T.meta["config"]["seed"] == 5
    with pytest.raises(UsageError, match="k and m"):
        L.learn(video[0], k=K)


def test_one_shot_generator_is_one_epoch_without_losing_a_batch(video):
    seen = []

    def gen():
        for i in range(0, 36, 6):
            seen.append(i)
            yield video[0][i : i + 6]

    S = L.learn(gen(), K, M, steps=50)
    assert seen == [0, 6, 12, 18, 24, 30]
    assert S.meta["training"]["steps"] == 6  # every batch used once, none lost
