"""Sketch constructors, scatter-add application and the no-pickle store."""

import io
import json

import numpy as np
import pytest
import torch

import lrstream as L
from lrstream.errors import DataError, NothingToDoError
from lrstream.training.config import LearnConfig
from lrstream.training.sketches import initial_sketch


def test_constructors_are_deterministic_and_well_formed():
    a, b, c = L.sparse_random(100, 7, seed=1), L.sparse_random(100, 7, seed=1), L.sparse_random(100, 7, seed=2)
    assert torch.equal(a.positions, b.positions) and torch.equal(a.values, b.values)
    assert not torch.equal(a.positions, c.positions)
    assert a.positions.shape == (1, 100) and int(a.positions.max()) < 7
    assert set(a.values.unique().tolist()) == {-1.0, 1.0}
    D = L.dense_random(100, 7, seed=1)
    assert torch.equal(D.matrix, L.dense_random(100, 7, seed=1).matrix) and D.matrix.shape == (7, 100)
    # E[S^T S] = I: column norms of a Gaussian sketch concentrate at 1
    assert abs(float(L.dense_random(2000, 400, seed=0).matrix.square().sum(0).mean()) - 1) < 0.01


def test_sparse_apply_equals_dense_product(rng):
    S = L.mixed(L.sparse_random(50, 4, seed=0), 3, seed=9)
    A = torch.from_numpy(rng.standard_normal((2, 50, 6)))
    torch.testing.assert_close(S.apply(A), S.to_dense().double() @ A)
    assert S.positions.shape == (2, 50) and S.m == 7
    assert int(S.positions[0].max()) < 4 and int(S.positions[1].min()) >= 4


def test_mixed_j_initial_sketch_structure():
    S = initial_sketch(40, LearnConfig(k=2, m=9, kind="mixed-j"))
    assert S.m == 9 and S.meta["m_learned"] == 5
    assert S.trainable[0].all() and not S.trainable[1].any()
    half = L.random_half(S)
    assert half.m == 4 and half.positions.shape == (1, 40)


@pytest.mark.parametrize("make", [lambda: L.mixed(L.sparse_random(30, 5, seed=1), 5, seed=2), lambda: L.dense_random(30, 6, seed=3)])
def test_save_load_round_trip_is_exact(tmp_path, make):
    S = make()
    S = S.with_values(S.to_dense() * 1.2345 if isinstance(S, L.DenseSketch) else S.values * 0.987654321, note="x")
    L.save_sketch(S, str(tmp_path / "s"))
    T = L.load_sketch(str(tmp_path / "s"))
    assert type(T) is type(S) and T.meta == S.meta
    assert torch.equal(T.to_dense(), S.to_dense())
    if isinstance(S, L.SparseSketch):
        assert torch.equal(T.positions, S.positions) and torch.equal(T.trainable, S.trainable) and T.values.dtype == S.values.dtype


def test_save_load_through_an_fsspec_url():
    S = L.sparse_random(20, 4, seed=5)
    L.save_sketch(S, "memory://bucket/sketches/a")
    assert torch.equal(L.load_sketch("memory://bucket/sketches/a").values, S.values)


def _saved(tmp_path):
    S = L.sparse_random(25, 5, seed=0)
    url = tmp_path / "s"
    L.save_sketch(S, str(url))
    return url


def test_missing_sketch_is_nothing_to_do(tmp_path):
    with pytest.raises(NothingToDoError, match="no sketch"):
        L.load_sketch(str(tmp_path / "nothing"))


def test_truncated_array_is_refused(tmp_path):
    url = _saved(tmp_path)
    raw = (url / "values.npy").read_bytes()
    (url / "values.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupted"):
        L.load_sketch(str(url))


def test_flipped_byte_is_refused(tmp_path):
    url = _saved(tmp_path)
    raw = bytearray((url / "positions.npy").read_bytes())
    raw[-1] ^= 0xFF
    (url / "positions.npy").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum"):
        L.load_sketch(str(url))


def test_corrupted_or_mismatched_metadata_is_refused(tmp_path):
    url = _saved(tmp_path)
    (url / "meta.json").write_text('{"format": "lrstream-sketch", "arr')
    with pytest.raises(DataError, match="metadata"):
        L.load_sketch(str(url))
    url = _saved(tmp_path / "b")
    doc = json.loads((url / "meta.json").read_text())
    doc["m"] = 3  # positions reach 4
    (url / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="outside"):
        L.load_sketch(str(url))


def test_pickled_array_is_never_unpickled(tmp_path):
    """A .npy holding objects (i.e. a pickle) must be refused even with a valid checksum."""
    import hashlib

    url = _saved(tmp_path)
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}] * 25, dtype=object).reshape(1, 25), allow_pickle=True)
    raw = buf.getvalue()
    (url / "values.npy").write_bytes(raw)
    doc = json.loads((url / "meta.json").read_text())
    doc["arrays"]["values"].update(sha256=hashlib.sha256(raw).hexdigest(), dtype="object")
    (url / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="unreadable"):
        L.load_sketch(str(url))
