"""The training core: batch schedules, the sketch's parameter packing, validation timing, the in-process loop."""

import torch

import lrstream as L
from lrstream.training.config import LearnConfig
from lrstream.training.core import Schedule, rank_seed
from lrstream.training.loop import validation_due


def test_schedule_is_a_pure_function_of_the_step():
    sch = Schedule(frames=10, batch=3, seed=5)
    forward = [sch.indices(t).tolist() for t in range(1, 13)]
    assert Schedule(10, 3, 5).indices(9).tolist() == forward[8]  # jumping ahead
    assert sch.indices(2).tolist() == forward[1]  # going back (a resume)
    for epoch in range(4):  # each epoch: 3 disjoint batches of a permutation
        rows = sum(forward[3 * epoch : 3 * epoch + 3], [])
        assert len(set(rows)) == 9
    assert rank_seed(5, 0) == 5 and rank_seed(5, 1) != rank_seed(5, 2)


def test_params_round_trip_through_the_sketch():
    S = L.mixed(L.sparse_random(30, 4, seed=1), 3, seed=2)  # trainable: none (two fixed blocks)
    learned = S.with_values(S.values, note="x")
    learned = L.SparseSketch(learned.positions, learned.values, torch.tensor([[True] * 30, [False] * 30]), 7)
    p = learned.params()
    assert p.shape == (30,) and torch.equal(p, learned.values[0])
    moved = learned.with_params(p * 2 + 1)
    assert torch.equal(moved.values[0], p * 2 + 1) and torch.equal(moved.values[1], learned.values[1])  # fixed rows untouched
    q = torch.zeros(30, dtype=torch.float64, requires_grad=True)
    learned.values_from(q).sum().backward()  # differentiable in the parameters
    assert torch.equal(q.grad, torch.ones(30, dtype=torch.float64))


def test_validation_is_due_on_multiples_of_eval_every_and_at_the_last_step():
    cfg = LearnConfig(k=1, m=2, steps=23, eval_every=10)
    assert [t for t in range(1, 24) if validation_due(cfg, t - 1, t)] == [10, 20, 23]
    assert validation_due(cfg, 8, 12) and not validation_due(cfg, 11, 13)  # async: a jump over a multiple counts
