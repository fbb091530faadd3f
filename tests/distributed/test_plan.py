"""The retrain's data plan: which stored rows train and validate, and which worker reads which."""

import pytest
import torch
from conftest import HOURS, ingest_hours, retrain_config

from lrstream.data.selection import Segment, segments_of, split_rows
from lrstream.distributed.plan import plan_data
from lrstream.distributed.retrain import retrain
from lrstream.errors import DataError, NothingToDoError, UsageError
from lrstream.training.core import holdout


def test_split_rows_is_a_balanced_partition():
    segs = [Segment("a", 0, 7), Segment("b", 3, 5), Segment("c", 0, 11)]
    for parts in range(1, 21):
        shares = split_rows(segs, parts)
        sizes = [sum(s.rows for s in share) for share in shares]
        assert sum(sizes) == 20 and max(sizes) - min(sizes) <= 1
        flat = [(s.hour, r) for share in shares for s in share for r in range(s.lo, s.hi)]
        assert flat == [(s.hour, r) for s in segs for r in range(s.lo, s.hi)]  # in order, no overlap, no gap


def test_segments_of_turns_row_indices_into_runs_per_hour():
    runs = segments_of([("a", 5), ("b", 4)], [0, 1, 3, 4, 5, 8])
    assert runs == [Segment("a", 0, 2), Segment("a", 3, 5), Segment("b", 0, 1), Segment("b", 3, 4)]


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


def test_random_validation_holds_out_the_rows_learn_would(store):
    plan = plan_data(store, "cam", 2, val_split="random", val_fraction=0.25, seed=4)
    assert plan.validation == "random" and (plan.train_frames, plan.val_frames) == (32, 10)  # round(10.5) = 10
    train_idx, val_idx = holdout(42, 0.25, "random", 4)  # the same rule learn splits an array by
    rows = lambda shares: [14 * HOURS.index(s.hour) + r for share in shares for s in share for r in range(s.lo, s.hi)]  # noqa: E731
    assert rows(plan.train) == train_idx.tolist() and rows(plan.val) == val_idx.tolist()
    refit = plan.for_refit()  # every row trains, in time order, in two contiguous shares; the validation rows stay for scoring
    assert refit.train_frames == 42 and refit.val == plan.val
    assert rows(refit.train) == list(range(42)) and [sum(s.rows for s in share) for share in refit.train] == [21, 21]


def test_holdout_keeps_time_order():
    train, val = holdout(20, 0.3, "random", 0)
    assert len(val) == 6 and sorted(set(train.tolist()) | set(val.tolist())) == list(range(20))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    assert holdout(20, 0.3, "last", 0)[1].tolist() == list(range(14, 20))


def test_bad_training_sets_are_clear_errors(tmp_path, store):
    with pytest.raises(NothingToDoError, match="no ingested hours"):
        plan_data(str(tmp_path), "cam", 1)
    with pytest.raises(DataError, match="too few frames"):
        plan_data(store, "cam", 20, last=2)
    root = str(tmp_path / "mixed")
    ingest_hours(root, hours=HOURS[:1])
    ingest_hours(root, hours=HOURS[1:2], height=22)
    with pytest.raises(DataError, match="one frame shape"):
        plan_data(root, "cam", 1)
    with pytest.raises(UsageError, match="smaller than"):
        retrain(store, "cam", retrain_config(7), use_ray=False)
