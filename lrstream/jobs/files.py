"""Reading the optional YAML/TOML config files that CLI commands and jobs accept."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError


def load_config_file(path: str) -> dict[str, Any]:
    """A mapping from a .toml file (tomllib) or YAML (safe_load); keys use '_' for '-'."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        if path.endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode())
        else:
            import yaml

            data = yaml.safe_load(raw) or {}
    except Exception as exc:  # any parse failure of a user file is a usage error
        raise UsageError(f"cannot parse config {path}: {exc.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config {path} must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
