"""Evaluation reports: one Parquet row per (stream, hour, sketch version), read back with pyarrow.

Each evaluation is one single-row file at ``store.report_path(S, hour,
version)``, in the stream's folder ``store.reports_dir(S)``; names sort by
hour, then version. Files are published with create-if-absent semantics
(:meth:`lrstream.data.store.Store.publish`): a repeated or concurrent run of
the same hour and version adds nothing. Any Parquet reader sees the folder
as one table (``pyarrow.dataset.dataset(<the reports folder's URL>)``).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError
from .store import Store

SCHEMA = pa.schema(
    [
        ("stream", pa.string()),
        ("hour", pa.string()),
        ("version", pa.int64()),
        ("kind", pa.string()),
        ("k", pa.int64()),
        ("m", pa.int64()),
        ("n", pa.int64()),
        ("d", pa.int64()),
        ("frames", pa.int64()),
        ("sample", pa.int64()),
        ("sample_seed", pa.int64()),
        ("optimal_error", pa.float64()),
        ("gap_sketch", pa.float64()),
        ("gap_sparse_random", pa.float64()),
        ("gap_dense_random", pa.float64()),
        ("gap_random_half", pa.float64()),
        ("se_sketch", pa.float64()),
        ("se_sparse_random", pa.float64()),
        ("se_dense_random", pa.float64()),
        ("se_random_half", pa.float64()),
        ("se_difference", pa.float64()),
        ("ratio", pa.float64()),
        ("sketch_rel_error", pa.float64()),
        ("factors_reused", pa.bool_()),
        ("seconds_per_frame", pa.float64()),
        ("evaluate_seconds", pa.float64()),
        ("sparse_seed", pa.int64()),
        ("dense_seed", pa.int64()),
        ("drift", pa.bool_()),
        ("margin", pa.float64()),
        ("drift_z", pa.float64()),
        ("device", pa.string()),
        ("evaluated_at", pa.timestamp("s", tz="UTC")),
    ]
)


def write_report(store: Store | str, stream: str, row: dict[str, Any]) -> bool:
    """Publish ``row``; False if a row for this (hour, version) already exists (nothing is written then)."""
    store = Store.of(store)
    values = {name: row.get(name) for name in SCHEMA.names}
    if isinstance(values["evaluated_at"], str):
        values["evaluated_at"] = datetime.fromisoformat(values["evaluated_at"])
    table = pa.Table.from_pylist([values], schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return store.publish(store.report_path(stream, row["hour"], row["version"]), buf.getvalue(), exclusive=True)


def _read_rows(store: Store, path: str) -> list[dict[str, Any]]:
    try:
        with store.fs.open(path, "rb") as f:
            table = pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"report file {path} is unreadable: {exc}") from None
    rows = table.to_pylist()
    for row in rows:
        if isinstance(row.get("evaluated_at"), datetime):
            row["evaluated_at"] = row["evaluated_at"].isoformat(timespec="seconds")
    return rows


def read_report(store: Store | str, stream: str, hour: str, version: int) -> dict[str, Any] | None:
    """The row of (hour, version), or None if that evaluation has not run; reads that one file only."""
    store = Store.of(store)
    path = store.report_path(stream, hour, version)
    if not store.fs.exists(path):
        return None
    rows = _read_rows(store, path)
    return rows[-1] if rows else None


def read_reports(store: Store | str, stream: str, last: int | None = None) -> list[dict[str, Any]]:
    """The report rows of ``stream`` (only the ``last`` ones if given), oldest hour first, then version.

    File names sort like (hour, version), so ``last`` reads ``last`` files
    however long the history is.
    """
    store = Store.of(store)
    files = sorted(store.fs.glob(f"{store.reports_dir(stream)}/*.parquet"))
    if last is not None:
        files = files[-last:] if last > 0 else []
    rows = [row for path in files for row in _read_rows(store, path)]
    return sorted(rows, key=lambda r: (r["hour"], r["version"], r["evaluated_at"] or ""))


def _num(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(scale * value, spec)


def format_reports(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of report rows: the gaps (with the sampling error of the sketch's), the ratio over sparse random, drift.

    Rows written before sampled evaluation (no ``sample``) show every frame as the sample.
    """
    head = f"{'hour':<14}{'v':>4}  {'kind':<8}{'frames':>7}{'sample':>7}{'optimum':>9}{'gap':>10}{'+-se':>9}{'sparse':>10}{'dense':>10}{'half':>10}{'ratio':>8}{'rel err':>8}{'ms/frame':>9}  drift"
    lines = [head, "-" * len(head)]
    for r in rows:
        sample = r.get("sample") or r["frames"]
        lines.append(
            f"{r['hour']:<14}{r['version']:>4}  {r['kind']:<8}{r['frames']:>7}{sample:>7}{r['optimal_error']:>9.4f}{r['gap_sketch']:>10.5f}{_num(r.get('se_sketch'), '.5f'):>9}"
            f"{r['gap_sparse_random']:>10.5f}{r['gap_dense_random']:>10.5f}{_num(r.get('gap_random_half'), '.5f'):>10}{_num(r.get('ratio'), '.1f') + 'x':>8}"
            f"{_num(r.get('sketch_rel_error'), '.4f'):>8}{_num(r.get('seconds_per_frame'), '.2f', 1e3):>9}  {'DRIFT' if r['drift'] else 'ok'}"
        )
    return "\n".join(lines)


def plot_reports(rows: list[dict[str, Any]], path: str, title: str = "") -> None:
    """PNG of the error gap per hour: the stored sketches (one line per kind), sparse and dense random, random halves."""
    import fsspec
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = sorted({r["hour"] for r in rows})
    x = {h: i for i, h in enumerate(hours)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(hours) + 3), 4))
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        for label, key in ((f"stored sketch ({r['kind']})", "sketch"), ("sparse random", "sparse_random"), ("dense random", "dense_random"), ("random half of the mixed sketch", "random_half")):
            if r.get(f"gap_{key}") is not None:
                series.setdefault(label, []).append((x[r["hour"]], r[f"gap_{key}"], r.get(f"se_{key}") or 0.0))
    for label, pts in series.items():
        pts.sort()
        # Error bars: one standard error of the sampled gap (none where every frame was scored).
        ax.errorbar([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=label, linestyle="--" if "random" in label else "-")
    ax.set_yscale("log")
    ax.set_xticks(range(len(hours)), hours, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("error gap (mean SCW error - optimum)")
    ax.set_title(title or "error gap per hour")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    # A plot goes wherever the user points, not under a store root.
    with fsspec.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
