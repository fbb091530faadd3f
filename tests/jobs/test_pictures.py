"""Pictures of low-rank approximations (jobs.pictures, jobs.show, factorize --picture) and reading one frame (data.reader.read_frame)."""

import json

import numpy as np
import pytest
from conftest import ingest_hours
from PIL import Image

import lrstream as L
from lrstream.cli import main
from lrstream.data import shards
from lrstream.data.reader import read_frame
from lrstream.data.shards import WriteOptions, write_hour
from lrstream.data.sources import Frame
from lrstream.data.store import Store
from lrstream.data.versions import publish_version
from lrstream.errors import NothingToDoError
from lrstream.jobs.pictures import BACKGROUND, comparison_size, draw_comparison

HOUR = "2026-01-01T00"


def _png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _crop(rgb: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return rgb[y0:y1, x0:x1]


def _enlarged(img: np.ndarray, panel) -> np.ndarray:
    """``img`` (h, w[, 3]) uint8 enlarged by whole pixels to ``panel`` (width, height), as RGB: what a 1:1 panel shows."""
    f = panel[0] // img.shape[1]
    big = img.repeat(f, axis=0).repeat(f, axis=1)
    return np.repeat(big[..., None], 3, axis=-1) if big.ndim == 2 else big


def test_factorize_picture_of_the_camera_photo_has_a_row_per_method(tmp_path, capsys):
    import skimage.data

    photo = tmp_path / "camera.png"
    Image.fromarray(skimage.data.camera()).save(photo)  # 512 x 512 gray
    pic, out = tmp_path / "pic.png", tmp_path / "out"
    # Few steps keep uv and complete to seconds; the picture needs them to run, not to converge.
    argv = ["factorize", str(photo), "--k", "20", "--out", str(out), "--picture", str(pic), "--steps", "100", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == "svd" and set(result["picture_errors"]) == {"svd", "uv", "complete"}
    assert result["picture_errors"]["svd"] == pytest.approx(result["relative_error"], rel=1e-9)  # the stored method's row is the stored factors
    assert np.load(out / "L.npy").shape == (512, 20) and json.loads((out / "metrics.json").read_text())["method"] == "svd"

    layout = comparison_size((512, 512), rows=3, title_lines=1)
    rgb = _png(pic)
    assert rgb.shape[1::-1] == layout.size == (960, 1084) and layout.panel == (304, 304)  # three 304 px columns, three method rows
    assert pic.stat().st_size < 700_000
    original = _crop(rgb, layout.panels[0][0]).astype(float)
    for r, boxes in enumerate(layout.panels):
        assert np.abs(_crop(rgb, boxes[0]).astype(float) - original).max() <= 12  # every row starts with the same original (palette rounding aside)
        approx = _crop(rgb, boxes[1]).astype(float)
        assert approx.std() > 10, f"row {r}: blank approximation"
        if r == 0:  # svd; uv and complete after 100 steps are far from converged, so only not blank
            assert np.corrcoef(approx[..., 0].ravel(), original[..., 0].ravel())[0, 1] > 0.9
        assert (_crop(rgb, boxes[2]) != BACKGROUND).any(axis=-1).mean() > 0.1  # rank 20 leaves visible residual
        for left, right in zip(boxes, boxes[1:]):  # white gaps between the columns
            assert (rgb[left[1] : left[3], left[2] : right[0]] == 255).all()


def test_an_exact_approximation_leaves_the_residual_panel_background(tmp_path):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    off = frame.copy()
    off[10:20, 5:15] = 255 - off[10:20, 5:15]  # one block wrong
    layout = draw_comparison([("exact", frame, frame.copy(), "rel. error 0"), ("off", frame, off, "one block")], str(tmp_path / "c.png"), "two\nlines")
    rgb = _png(tmp_path / "c.png")
    assert rgb.shape[1::-1] == layout.size and layout.panel == (240, 180)  # enlarged 6x, whole pixels
    exact, wrong = layout.panels
    assert (_crop(rgb, exact[2]) == BACKGROUND).all()
    np.testing.assert_array_equal(_crop(rgb, exact[0]), _enlarged(frame, layout.panel))  # panels are drawn 1:1
    np.testing.assert_array_equal(_crop(rgb, wrong[1]), _enlarged(off, layout.panel))
    residual = (_crop(rgb, wrong[2]) != BACKGROUND).any(axis=-1)  # (180, 240)
    assert residual[60:120, 30:90].all() and not residual[:60].any() and not residual[:, 90:].any()  # exactly the block, 6x


def _frames_with_a_gap():
    rng = np.random.default_rng(1)
    good = {i: rng.integers(0, 256, (8, 10, 3), dtype=np.uint8) for i in range(10) if i != 4}
    frames = [Frame(i, good[i]) if i != 4 else Frame(4, np.zeros((5, 10, 3), np.uint8)) for i in range(10)]  # frame 4: wrong shape
    return good, frames


def test_read_frame_opens_one_part_and_skips_the_quarantine_gap(tmp_path, monkeypatch):
    good, frames = _frames_with_a_gap()
    res = write_hour(str(tmp_path), "cam", HOUR, frames, "test", WriteOptions(rows_per_shard=3))
    assert res.rows == 9 and res.quarantined == 1 and res.files == 3  # parts hold frames [0 1 2] [3 5 6] [7 8 9]
    opened = []
    real = shards.read_part
    monkeypatch.setattr(shards, "read_part", lambda *a, **kw: opened.append(a[2]["path"]) or real(*a, **kw))
    for i in (0, 3, 5, 6, 9):
        opened.clear()
        np.testing.assert_array_equal(read_frame(str(tmp_path), "cam", HOUR, i), good[i])
        assert len(opened) == 1
    with pytest.raises(NothingToDoError, match="no frame 4 .*quarantined"):
        read_frame(str(tmp_path), "cam", HOUR, 4)
    for missing in (10, -1):
        with pytest.raises(NothingToDoError, match=f"no frame {missing}"):
            read_frame(str(tmp_path), "cam", HOUR, missing)
    with pytest.raises(NothingToDoError, match="no ingested hour"):
        read_frame(str(tmp_path), "cam", "2026-01-01T05", 0)

    manifest = Store(str(tmp_path)).hour_manifest("cam", HOUR)  # a manifest without first_index: found by scanning
    doc = json.loads(open(manifest).read())
    for entry in doc["files"]:
        del entry["first_index"]
    with open(manifest, "w") as f:
        json.dump(doc, f)
    opened.clear()
    np.testing.assert_array_equal(read_frame(str(tmp_path), "cam", HOUR, 6), good[6])
    assert len(opened) == 2


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_show_exit_codes(tmp_path, capsys):
    ingest_hours(tmp_path, hours=[HOUR], frames=4)
    base = ["show", "--root", str(tmp_path), "--stream", "cam", "--frame", "0"]
    assert main([*base, "--hour", HOUR]) == 4
    assert "no stored factors" in _one_line_error(capsys)
    assert main([*base, "--hour", "2026-1-1"]) == 2
    assert "bad hour" in _one_line_error(capsys)
    assert main(["show", "--root", str(tmp_path), "--stream", "cam", "--hour", HOUR]) == 2  # --frame is required
    assert "--frame" in _one_line_error(capsys)
    S = L.sparse_random(40, 6, seed=0)
    version = publish_version(str(tmp_path), "cam", S.with_values(S.values, k=3))
    assert main(["apply", "--root", str(tmp_path), "--stream", "cam", "--hour", HOUR, "--no-ray"]) == 0
    capsys.readouterr()
    assert main([*base[:-1], "99", "--hour", HOUR]) == 4
    assert "no stored factors for frame 99" in _one_line_error(capsys)
    assert main([*base, "--hour", HOUR, "--version", str(version + 1)]) == 4
    assert f"no factors for sketch version {version + 1}" in _one_line_error(capsys)


@pytest.mark.parametrize("gray", [False, True], ids=["colour-stacked", "gray"])
def test_show_draws_a_stored_frame_next_to_its_factors(tmp_path, capsys, monkeypatch, gray):
    from lrstream.data.factors import read_factors_manifest, read_frame_factors, reconstruct
    from lrstream.data.sources import frames_to_matrices

    channels = 3 if gray else 2  # 2 channels have no colour picture: they show as the stacked (2H, W) matrix the sketch sees
    ingest_hours(tmp_path, hours=[HOUR], frames=6, channels=channels)
    n = 20 if gray else 20 * channels
    S = L.sparse_random(n, 8, seed=0)
    version = publish_version(str(tmp_path), "cam", S.with_values(S.values, k=3), meta={"data": {"gray": True}} if gray else None)
    assert main(["apply", "--root", str(tmp_path), "--stream", "cam", "--hour", HOUR, "--no-ray"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # the default --out lands in the current directory
    assert main(["show", "--root", str(tmp_path), "--stream", "cam", "--hour", HOUR, "--frame", "4", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    path = tmp_path / f"show-cam-{HOUR}-4.png"
    assert shown["path"] == str(path) and path.exists()
    Lf, Rf, row = read_frame_factors(str(tmp_path), "cam", HOUR, version, 4)
    assert (shown["version"], shown["kind"], shown["k"], shown["m"], shown["frame"], shown["gray"]) == (version, "sparse_random", 3, 8, 4, gray)
    assert shown["rel_error"] == row["rel_error"] and shown["ratio"] == read_factors_manifest(str(tmp_path), "cam", HOUR, version)["ratio"]
    rgb = _png(path)
    shape = (20, 24) if gray else (20, 24, channels)
    layout = comparison_size(shape, rows=1, title_lines=2)
    assert rgb.shape[1::-1] == layout.size == tuple(shown["size"])
    approx = reconstruct(Lf, Rf, [20, 24, channels], gray=gray)  # (20, 24, C) or (20, 24, 1)
    shown_approx = approx[..., 0] if gray else frames_to_matrices(approx[None])[0]  # the stacked (C*H, W) matrix
    np.testing.assert_array_equal(_crop(rgb, layout.panels[0][1]), _enlarged(shown_approx, layout.panel))
    original = read_frame(str(tmp_path), "cam", HOUR, 4)
    shown_original = np.clip(np.rint(frames_to_matrices(original[None], gray=True)[0]), 0, 255).astype(np.uint8) if gray else frames_to_matrices(original[None])[0]
    np.testing.assert_array_equal(_crop(rgb, layout.panels[0][0]), _enlarged(shown_original, layout.panel))
