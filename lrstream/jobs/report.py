"""The report job: a stream's last evaluation rows as a table on the log, and optionally a PNG of the gap per hour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..data.reports import format_reports, plot_reports, read_reports
from ..data.store import Store
from ..errors import NothingToDoError, UsageError


def run_report(store: Store | str, stream: str, last: int = 24, plot: str | None = None, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Log the last ``last`` report rows of ``stream`` (and write ``plot``, a PNG URL); returns {stream, rows, plot}."""
    if last < 1:
        raise UsageError("--last must be >= 1")
    store = Store.of(store)
    rows = read_reports(store, stream, last=last)
    if not rows:
        raise NothingToDoError(f"stream {stream} has no evaluation reports under {store.root} (run `lrstream evaluate` first)")
    log(format_reports(rows))
    if plot:
        plot_reports(rows, plot, title=f"stream {stream}: error gap per hour (k={rows[-1]['k']}, m={rows[-1]['m']})")
        log(f"plot written to {plot}")
    return {"stream": stream, "rows": rows, "plot": plot}
