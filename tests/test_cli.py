"""The command line: exit codes, one-line errors, --json, config files, outputs."""

import json
import subprocess
import sys

import numpy as np
import pytest

import lrstream as L
from lrstream.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def lowrank(rng, n=60, d=40, r=4):
    return rng.standard_normal((n, r)) @ rng.standard_normal((r, d)) + 0.01 * rng.standard_normal((n, d))


@pytest.mark.parametrize("method", ["svd", "uv"])
def test_factorize_npy_writes_factors_and_metrics(tmp_path, capsys, rng, method):
    A = lowrank(rng)
    np.save(tmp_path / "a.npy", A)
    code, out, err = run(capsys, "factorize", str(tmp_path / "a.npy"), "--k", "4", "--method", method, "--out", str(tmp_path / "o"), "--json", "--steps", "1500")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    Lf, Rf = np.load(tmp_path / "o" / "L.npy"), np.load(tmp_path / "o" / "R.npy")
    assert Lf.shape == (60, 4) and Rf.shape == (4, 40)
    assert result["fro_error"] == pytest.approx(np.linalg.norm(A - Lf @ Rf), rel=1e-4)
    assert result["compression_ratio"] == pytest.approx(60 * 40 / (4 * 100))
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["method"] == method


def test_factorize_csv_and_image(tmp_path, capsys, rng):
    from PIL import Image

    np.savetxt(tmp_path / "a.csv", lowrank(rng), delimiter=",")
    assert run(capsys, "factorize", str(tmp_path / "a.csv"), "--k", "3", "--out", str(tmp_path / "c"))[0] == 0
    img = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    code, out, err = run(capsys, "factorize", str(tmp_path / "a.png"), "--k", "5", "--out", str(tmp_path / "i"), "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["shape"] == [60, 30]  # RGB stacked as rows


def test_factorize_complete_reports_heldout_error(tmp_path, capsys, rng):
    np.save(tmp_path / "a.npy", lowrank(rng, 80, 60, 3))
    code, out, err = run(capsys, "factorize", str(tmp_path / "a.npy"), "--k", "3", "--method", "complete", "--observed", "0.6", "--out", str(tmp_path / "o"), "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["heldout_relative_error"] < 0.1


@pytest.mark.parametrize(
    "setup,argv,code,message",
    [
        (lambda p: None, ["--k", "2"], 3, "not found"),
        (lambda p: (p / "x.npy").write_bytes(b"\x93NUMPY garbage"), ["--k", "2"], 3, "cannot read"),
        (lambda p: np.save(p / "x.npy", np.full((4, 4), np.nan)), ["--k", "2"], 3, "NaN"),
        (lambda p: np.save(p / "x.npy", np.zeros((0, 4))), ["--k", "2"], 3, "non-empty"),
        (lambda p: np.save(p / "x.npy", np.ones((5, 4))), ["--k", "9"], 2, "k=9"),
        (lambda p: np.save(p / "x.npy", np.ones((5, 4))), ["--k", "two"], 2, "invalid int"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code(tmp_path, capsys, setup, argv, code, message):
    setup(tmp_path)
    got, out, err = run(capsys, "factorize", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o"), *argv)
    assert got == code
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_config_file_supplies_defaults_and_flags_win(tmp_path, capsys, rng):
    np.save(tmp_path / "a.npy", lowrank(rng))
    (tmp_path / "c.yaml").write_text(f"k: 2\nout: {tmp_path / 'o'}\nmethod: svd\n")
    code, out, _ = run(capsys, "factorize", str(tmp_path / "a.npy"), "--config", str(tmp_path / "c.yaml"), "--json")
    assert code == 0 and json.loads(out.splitlines()[-1])["k"] == 2
    code, out, _ = run(capsys, "factorize", str(tmp_path / "a.npy"), "--config", str(tmp_path / "c.yaml"), "--k", "3", "--json")
    assert code == 0 and json.loads(out.splitlines()[-1])["k"] == 3
    (tmp_path / "c.toml").write_text('k = 2\nbogus = 1\nout = "x"\n')
    code, _, err = run(capsys, "factorize", str(tmp_path / "a.npy"), "--config", str(tmp_path / "c.toml"))
    assert code == 2 and "bogus" in err


def test_demo_runs_the_pipeline_on_ray(tmp_path, capsys):
    import ray

    root = str(tmp_path / "demo")
    try:
        code, out, err = run(capsys, "demo", "--source", "synthetic", "--root", root, "--k", "4", "--m", "8", "--steps", "40", "--json")
    finally:
        ray.shutdown()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["hours"] == ["2026-01-01T00", "2026-01-01T01", "2026-01-01T02", "2026-01-01T03"] and result["version"] == 1
    assert [(a["hour"], a["status"], a["rows"]) for a in result["applied"]] == [("2026-01-01T02", "applied", 40), ("2026-01-01T03", "applied", 40)]
    evs = result["evaluations"]  # one report row per served hour: the gap plot has more than one point
    assert [ev["hour"] for ev in evs] == ["2026-01-01T02", "2026-01-01T03"]
    for ev in evs:
        assert ev["frames"] == 40 and ev["sample"] == 32 and ev["se_sketch"] > 0 and ev["gap_sketch"] < ev["gap_sparse_random"]
    assert result["picture"]["hour"] == "2026-01-01T03" and result["picture"]["rel_error"] > 0
    with open(result["locations"]["picture"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    S = L.load_sketch(result["locations"]["sketch"])
    assert S.m == 8 and S.meta["kind"] == "learned" and S.meta["data"]["train_hours"] == ["2026-01-01T00"]
    with open(result["locations"]["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "[5/5] report" in err and "sparse" in err and result["locations"]["shards"] in err  # progress and table on stderr


def test_console_script_runs_as_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lrstream.cli", "factorize", str(tmp_path / "missing.npy"), "--k", "1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stderr.strip().startswith("lrstream: error:") and len(proc.stderr.strip().splitlines()) == 1
