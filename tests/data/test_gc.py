"""lrstream gc: attempt folders no manifest names go once they are old; anything a manifest names, and a live writer's parts, stay."""

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
from conftest import ingest_hours

from lrstream.cli import main
from lrstream.data.factors import iter_factor_tables, publish_factors
from lrstream.data.gc import collect_garbage
from lrstream.data.parts import ipc_bytes, write_part
from lrstream.data.shards import WriteOptions, iter_hour_frames, read_manifest, write_hour
from lrstream.data.sources import Frame, synthetic_frames
from lrstream.data.store import Store, new_attempt_id

DAY = 86400
H0, H1 = "2026-01-01T00", "2026-01-01T01"


def _age(path, seconds):
    """Make every file under ``path`` (or ``path`` itself) look last written ``seconds`` ago."""
    t = time.time() - seconds
    for top, _, names in os.walk(path):
        for name in names:
            os.utime(os.path.join(top, name), (t, t))
    if os.path.isfile(path):
        os.utime(path, (t, t))


def _orphan(store, folder, rows=3):
    """Parts of a writer killed before it published: a fresh attempt under ``folder``, no manifest naming it."""
    attempt = new_attempt_id()
    table = next(iter(_tables(store)))
    write_part(store, folder, attempt, 0, ipc_bytes(table.slice(0, rows), "zstd"), rows)
    return f"{folder}/attempt={attempt}"


def _tables(store):
    from lrstream.data.shards import iter_hour_tables

    return iter_hour_tables(store, "cam", H0)


def _factors(store, version=1):
    """Published factors of hour H0 for ``version`` (a tiny but real factor part named by its manifest)."""
    from lrstream.data.factors import factor_table

    B, n, k, d = 2, 4, 2, 3
    rng = np.random.default_rng(0)
    table = factor_table(np.arange(B), next(iter(_tables(store))).column("timestamp").combine_chunks().slice(0, B),
                         rng.standard_normal((B, n, k)).astype("float32"), rng.standard_normal((B, k, d)).astype("float32"),
                         np.ones(B), np.ones(B) / 2, np.ones(B) * 2)  # fmt: skip
    attempt = new_attempt_id()
    folder = store.factors_dir("cam", H0, version)
    entry = write_part(store, folder, attempt, 0, ipc_bytes(table, "zstd"), B, first_row=0, error_sum=2.0, rel_error_sum=1.0)
    publish_factors(store, "cam", H0, version, attempt, [entry], {"kind": "learned", "k": k, "m": 4, "n": n, "d": d, "raw_bytes": 100})
    return folder, attempt


def _frames(store, hour):
    return np.concatenate([f for f, _ in iter_hour_frames(store, "cam", hour)])


@pytest.fixture
def root(tmp_path):
    ingest_hours(tmp_path, hours=[H0, H1], frames=6, height=4, width=6)
    return tmp_path


def test_published_hours_and_factors_survive_gc_at_age_zero(root, capsys):
    store = Store(str(root))
    folder, attempt = _factors(store)
    before = {h: _frames(store, h) for h in (H0, H1)}
    stale = _orphan(store, folder)  # a killed apply beside the published factors
    assert main(["gc", "--root", str(root), "--older-than", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["removed"] == [stale] and not os.path.exists(stale)
    assert f"{folder}/attempt={attempt}" in out["kept_named"] and out["counts"]["kept_named"] == 3  # two hours and the factors
    for h in (H0, H1):
        np.testing.assert_array_equal(_frames(store, h), before[h])
    assert sum(t.num_rows for t in iter_factor_tables(store, "cam", H0, 1)) == 2


def test_orphans_go_when_old_young_ones_stay_and_dry_run_removes_nothing(root):
    store = Store(str(root))
    hdir = store.hour_dir("cam", H0)
    old, young = _orphan(store, hdir), _orphan(store, hdir)
    killed = _orphan(store, store.hour_dir("cam", "2026-01-01T05"))  # the only writer of an hour died before publishing
    named_q = f"{store.quarantine_dir('cam', H0)}/attempt={read_manifest(store, 'cam', H0)['attempt']}"
    old_q = f"{store.quarantine_dir('cam', H0)}/attempt={new_attempt_id()}"  # a replaced ingest's rejects
    evidence = f"{store.quarantine_dir('cam', '2026-01-01T07')}/attempt={new_attempt_id()}"  # an ingest whose every frame was bad
    for q in (named_q, old_q, evidence):
        store.write_bytes(f"{q}/frame-000000.npy", b"x")
    tmp_old, tmp_young = f"{hdir}/_MANIFEST.json.{new_attempt_id()}.tmp", f"{hdir}/_MANIFEST.json.{new_attempt_id()}.tmp"
    for t in (tmp_old, tmp_young):
        store.write_bytes(t, b"{}")
    for p in (old, killed, named_q, old_q, evidence, tmp_old):
        _age(p, 2 * DAY)
    dry = collect_garbage(store, dry_run=True)
    assert sorted(dry["removed"]) == sorted([old, killed, old_q, tmp_old]) and all(os.path.exists(p) for p in dry["removed"])
    assert dry["kept_evidence"] == [evidence] and {young, tmp_young} <= set(dry["kept_young"]) and named_q in dry["kept_named"]
    done = collect_garbage(store, stream="cam")
    assert sorted(done["removed"]) == sorted(dry["removed"]) and done["bytes_freed"] == dry["bytes_freed"] > 0
    assert not any(os.path.exists(p) for p in done["removed"])
    assert all(os.path.exists(p) for p in (young, named_q, evidence, tmp_young))
    assert _frames(store, H0).shape[0] == 6
    assert collect_garbage(store, stream="other")["removed"] == []  # one stream only


def test_after_force_reingest_the_replaced_attempt_goes(root):
    store = Store(str(root))
    hdir = store.hour_dir("cam", H0)
    first = read_manifest(store, "cam", H0)["attempt"]
    keep = f"{root}/saved"
    shutil.copytree(f"{hdir}/attempt={first}", keep)
    frames = [Frame(i, a) for i, a in enumerate(synthetic_frames(5, 4, 6, 2, seed=9))]
    assert write_hour(store, "cam", H0, frames, "again", WriteOptions(force=True)).status == "replaced"
    shutil.copytree(keep, f"{hdir}/attempt={first}")  # as if the writer died between the manifest swap and the removal
    _age(f"{hdir}/attempt={first}", 2 * DAY)
    out = collect_garbage(store)
    assert out["removed"] == [f"{hdir}/attempt={first}"]
    np.testing.assert_array_equal(_frames(store, H0), np.stack([f.array for f in frames]))


def test_gc_never_collects_a_live_writer(root):
    store = Store(str(root))
    hour = "2026-01-01T09"
    source = synthetic_frames(8, 4, 6, 2, seed=5)
    go, failed = threading.Event(), []

    def slow():  # a camera that delivers four frames, then stalls until the test lets it go on
        for i, a in enumerate(source):
            if i == 4:
                go.wait(30)
            yield Frame(i, a)

    def writer():
        try:
            write_hour(store, "cam", hour, slow(), "live", WriteOptions(rows_per_shard=2))
        except BaseException as exc:  # pragma: no cover - reported below
            failed.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    hdir = store.hour_dir("cam", hour)
    deadline = time.time() + 20
    while time.time() < deadline and len(store.fs.glob(f"{hdir}/attempt=*/part-*.arrow")) < 2:
        time.sleep(0.01)
    parts = store.fs.glob(f"{hdir}/attempt=*/part-*.arrow")
    assert len(parts) == 2 and read_manifest(store, "cam", hour) is None
    live = parts[0].rsplit("/", 1)[0]
    _age(live, 3 * 3600)  # hours into a stalled write, still far below a day
    out = collect_garbage(store)
    assert live in out["kept_young"] and live not in out["removed"]
    assert sorted(store.fs.glob(f"{hdir}/attempt=*/part-*.arrow")) == sorted(parts)
    go.set()
    thread.join(30)
    assert not thread.is_alive() and not failed
    assert read_manifest(store, "cam", hour)["rows"] == 8
    np.testing.assert_array_equal(_frames(store, hour), source)  # complete: nothing gc saw went missing
    assert live in collect_garbage(store, older_than_seconds=0)["kept_named"]


def test_cli_exit_codes_and_a_missing_root(tmp_path, capsys):
    assert main(["gc", "--root", str(tmp_path), "--older-than", "-1"]) == 2
    assert main(["gc", "--root", str(tmp_path), "--older-than", "nan"]) == 2
    assert main(["gc", "--root", str(tmp_path), "--stream", "bad name"]) == 2
    capsys.readouterr()
    assert main(["gc", "--root", str(tmp_path / "nowhere"), "--dry-run", "--json"]) == 0  # nothing to collect is done, not an error
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["counts"] == {"removed": 0, "kept_named": 0, "kept_young": 0, "kept_unknown": 0, "kept_evidence": 0} and out["dry_run"]
