"""`lrstream update`: one new hour folded into LATEST's statistics, through the CLI, on a small synthetic store (no Ray)."""

import json

import numpy as np
import pytest
import torch
from conftest import ingest_hours

from lrstream.cli import main
from lrstream.data.reader import read_rows
from lrstream.data.versions import latest_version, load_version, load_version_arrays, publish_version
from lrstream.numerics.linalg import normalize_batch
from lrstream.numerics.sketch import DenseSketch
from lrstream.numerics.starts import spectral_gram
from lrstream.numerics.update import GRAM

HOURS = ["2026-01-01T00", "2026-01-01T01", "2026-01-01T02", "2026-01-01T04"]


def _cli(capsys, *argv):
    code = main(list(argv) + ["--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out.strip().splitlines()[-1]) if code == 0 else out.err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    ingest_hours(root, hours=HOURS, frames=10, height=16, width=20, channels=1)
    assert main(["train", "--root", str(root), "--stream", "cam", "--k", "3", "--m", "6", "--sketch", "dense", "--init", "spectral", "--power", "1.5", "--half-life", "0.5",
                 "--hours", ",".join(HOURS[:3]), "--workers", "2", "--steps", "4", "--no-ray"]) == 0  # fmt: skip
    return root


def _hour(root, hour):
    return normalize_batch(read_rows(root, "cam", hour, 0, 10))


def test_update_folds_the_new_hour_into_the_trained_statistics(trained, capsys):
    root = str(trained)
    v1 = load_version(root, "cam")
    rec = v1.meta["update_stats"]
    assert (rec["power"], rec["half_life_hours"], rec["hours"], rec["last_hour"], rec["frames"]) == (1.5, 1.0, 2, HOURS[1], 20)
    g1 = torch.from_numpy(load_version_arrays(root, "cam", 1)[GRAM])
    code, out = _cli(capsys, "update", "--root", root, "--stream", "cam", "--hour", HOURS[2])
    assert code == 0 and out["version"] == 2 and out["parent_version"] == 1 and out["frames"] == 10 and out["hours_folded"] == 3
    g2 = torch.from_numpy(load_version_arrays(root, "cam", 2)[GRAM])
    assert torch.allclose(g2, 0.5 * g1 + spectral_gram(_hour(root, HOURS[2]), 1.5), atol=1e-9)
    # a 2-hour gap decays twice as far; the sketch spans G's top-6 eigenvectors
    code, out = _cli(capsys, "update", "--root", root, "--stream", "cam", "--hour", HOURS[3])
    assert code == 0 and out["version"] == 3 and out["elapsed_hours"] == 2 and out["decay"] == pytest.approx(0.25)
    g3 = torch.from_numpy(load_version_arrays(root, "cam", 3)[GRAM])
    assert torch.allclose(g3, 0.25 * g2 + spectral_gram(_hour(root, HOURS[3]), 1.5), atol=1e-9)
    S = load_version(root, "cam").matrix.double()
    U = torch.linalg.eigh(g3).eigenvectors[:, -6:]
    assert torch.allclose(S.mT @ torch.linalg.pinv(S.mT) @ U, U, atol=1e-4)
    assert load_version(root, "cam").meta["update"]["parent_version"] == 2
    # an hour already folded is refused and nothing changes
    code, err = _cli(capsys, "update", "--root", root, "--stream", "cam", "--hour", HOURS[2])
    assert code == 4 and "already folded" in err and latest_version(root, "cam") == 3


def test_update_refuses_versions_without_statistics_and_other_shapes(tmp_path, capsys):
    root = str(tmp_path)
    ingest_hours(root, hours=HOURS[:2], frames=6, height=16, width=20, channels=1)
    assert main(["train", "--root", root, "--stream", "cam", "--k", "2", "--m", "4", "--hours", HOURS[0], "--workers", "1", "--steps", "2", "--no-ray"]) == 0  # learned: no stats
    capsys.readouterr()
    code, err = _cli(capsys, "update", "--root", root, "--stream", "cam", "--hour", HOURS[1])
    assert code == 2 and "lrstream train" in err and err.count("\n") == 1 and latest_version(root, "cam") == 1
    old = DenseSketch(torch.randn(4, 16), {"kind": "dense", "init": "tensor", "data": {"frame_shape": [16, 20, 1], "gray": False}})  # as published before stats
    assert publish_version(root, "cam", old) == 2 and load_version(root, "cam").m == 4  # still loads
    code, err = _cli(capsys, "update", "--root", root, "--stream", "cam", "--hour", HOURS[1])
    assert code == 2 and latest_version(root, "cam") == 2
    ingest_hours(root, hours=["2026-01-01T05"], frames=4, height=12, width=20, channels=1)
    stats = {"weight": 6.0, "power": 2.0, "half_life_hours": None, "hours": 1, "last_hour": HOURS[0], "frames": 6}
    publish_version(root, "cam", DenseSketch(torch.randn(4, 16), {**old.meta, "kind": "mixed-dense", "m_learned": 2, "random_rows": 2, "update_stats": stats}), extra={GRAM: np.eye(16)})
    code, err = _cli(capsys, "update", "--root", root, "--stream", "cam", "--hour", "2026-01-01T05")
    assert code == 3 and "shape" in err and latest_version(root, "cam") == 3
    before = load_version(root, "cam").matrix
    code, out = _cli(capsys, "update", "--root", root, "--stream", "cam", "--hour", HOURS[1], "--half-life-hours", "2")
    assert code == 0 and out["version"] == 4 and out["half_life_hours"] == 2.0
    assert torch.equal(load_version(root, "cam").matrix[2:], before[2:])  # mixed-dense: the random rows stay


def test_evaluate_on_drift_can_submit_an_update(trained, monkeypatch, capsys):
    from lrstream.jobs import evaluate as evaluation

    root = str(trained)
    calls = []
    monkeypatch.setattr(evaluation, "submit_retrain", lambda argv, sid, address=None: calls.append((argv, sid)) or {"mode": "test", "submission_id": sid, "status": "submitted"})
    latest = load_version(root, "cam")
    gram = load_version_arrays(root, "cam", latest.meta["version"])[GRAM]
    bottom = torch.linalg.eigh(torch.from_numpy(gram)).eigenvectors[:, :6].mT.float() * 4  # the worst 6-dim subspace: drifts
    publish_version(root, "cam", DenseSketch(bottom, latest.meta), extra={GRAM: gram})
    drift = ["--drift-z", "0", "--retrain-on-drift"]
    assert main(["evaluate", "--root", root, "--stream", "cam", "--hour", HOURS[3], *drift, "--on-drift", "update"]) == 5
    assert main(["evaluate", "--root", root, "--stream", "cam", "--hour", HOURS[2], *drift]) == 5
    assert calls[0] == (["update", "--root", root, "--stream", "cam", "--hour", HOURS[3]], f"update-cam-{HOURS[3]}")
    assert calls[1][0][0] == "train" and calls[1][1] == f"retrain-cam-{HOURS[2]}"
    capsys.readouterr()
