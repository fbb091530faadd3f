"""What every benchmark writes next to its table: date, machine, results, as JSON."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone

import torch


def write_report(path: str, name: str, results: list[dict], **extra) -> None:
    doc = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        **extra,
        "results": results,
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")
