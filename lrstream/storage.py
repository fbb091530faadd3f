"""fsspec helpers shared by everything that reads or writes under a URL."""

from __future__ import annotations

import fsspec


def url_to_fs(url: str):
    """(filesystem, path without trailing slash) for a local path or any fsspec URL."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")
