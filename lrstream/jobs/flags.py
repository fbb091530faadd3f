"""The flag machinery of the ``lrstream`` command line: a parser that raises, list-valued flags, and flags built from config dataclass fields.

A :class:`Command` is one subcommand. Flags that mirror a config dataclass
field (LearnConfig, RetrainConfig, the jobs' own) take default, choices and
help from the field, so the two cannot disagree; a config file (YAML or TOML)
names the same keys (:meth:`Command.config_keys`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

from ..errors import UsageError
from .fleet import FleetOptions, stream_entries

_TYPES = {"int": int, "float": float}


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors follow the one-line convention."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


class ListOf:
    """An argparse type for comma-separated values ("2,1.5" -> (2.0, 1.5)); :meth:`from_config` makes a config file's list or number the same tuple."""

    def __init__(self, item: Callable[[Any], Any], what: str):
        self.item, self.__name__ = item, what

    def one(self, value: Any) -> Any:
        try:
            return self.item(value)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.__name__}, got {value!r}") from None

    def __call__(self, text: str) -> tuple:
        return tuple(self.one(part.strip()) for part in text.split(","))

    def from_config(self, value: Any) -> Any:
        if isinstance(value, str):
            return value  # argparse parses a string default like a flag's text
        return tuple(map(self.one, value if isinstance(value, (list, tuple)) else [value]))


def _half_life(value: Any) -> float | None:
    return None if value is None or (isinstance(value, str) and value.lower() == "none") else float(value)


FLOATS = ListOf(float, "numbers, comma-separated")
HALF_LIVES = ListOf(_half_life, "positive fractions of the training window or 'none', comma-separated")


def _base_type(annotation: Any) -> str:
    """'float' for 'float | None', the annotation text itself when it is not one simple type."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in text.split("|") if p.strip() != "None"]
    return parts[0] if len(parts) == 1 else text


class Command:
    """One subcommand: its parser, every action it added (config files name them), the options it requires, and which flags fill which config fields."""

    def __init__(self, sub, name: str, help: str, run: Callable):
        self.run = run
        self.parser = sub.add_parser(name, help=help)
        self.actions: list[argparse.Action] = []
        self.required: list[argparse.Action] = []
        self.bound: dict[type, dict[str, str]] = {}  # config class -> field name -> dest

    def flag(self, *names: str, required: bool = False, group=None, **kw) -> argparse.Action:
        """add_argument; ``required`` is checked after a config file is merged, not by argparse."""
        action = (group or self.parser).add_argument(*names, **kw)
        self.actions.append(action)
        if required:
            self.required.append(action)
        return action

    def field(self, cls, name: str, *names: str, **overrides) -> argparse.Action:
        """A flag (default ``--field-name``) for field ``name`` of dataclass ``cls``.

        Default, choices and help come from the field, the type from its
        annotation (a bool becomes ``store_true``); ``overrides`` win. A
        field without a default is a required option.
        """
        f = next(f for f in fields(cls) if f.name == name)
        names = names or (f"--{name.replace('_', '-')}",)
        base = _base_type(f.type)
        kw: dict[str, Any] = {"help": f.metadata.get("help")}
        if f.metadata.get("choices") is not None:
            kw["choices"] = list(f.metadata["choices"])
        if "action" not in overrides and "type" not in overrides:
            if base == "bool":
                kw["action"] = "store_true"
            elif base != "str":  # argparse's own default
                kw["type"] = _TYPES[base]
        positional = not names[0].startswith("-")
        required = f.default is MISSING and "default" not in overrides and not positional
        if not positional:
            kw["default"] = None if f.default is MISSING else f.default
        kw.update(overrides)
        action = self.flag(*names, required=required, **kw)
        self.bound.setdefault(cls, {})[name] = action.dest
        return action

    def build(self, cls, args: argparse.Namespace, **values):
        """An instance of ``cls`` from the flags bound to its fields, with ``values`` on top."""
        bound = {name: getattr(args, dest) for name, dest in self.bound.get(cls, {}).items()}
        return cls(**{**bound, **values})

    def config_keys(self) -> dict[str, argparse.Action]:
        """Config-file key -> action: every dest and every flag name (dashes as underscores), so aliases work too."""
        keys = {}
        for action in self.actions:
            keys[action.dest] = action
            for opt in action.option_strings:
                keys[opt.lstrip("-").replace("-", "_")] = action
        return keys

    def check_required(self, args: argparse.Namespace) -> None:
        missing = ["/".join(a.option_strings) for a in self.required if getattr(args, a.dest) is None]
        if missing:
            raise UsageError(f"{self.parser.prog}: the following arguments are required: {', '.join(missing)}")


# ---------------------------------------------------------------- config files and plans of streams

def add_streams(cmd: Command, placement: bool = True) -> None:
    """--root and one of --stream, --streams, --plan (a job over many streams, scheduled by the fleet options)."""
    cmd.flag("--root", required=True, help="storage root (path or fsspec URL)")
    cmd.flag("--stream", help="stream name (or --streams / --plan for many)")
    cmd.flag("--streams", help="comma-separated stream names: one job over all of them, one result line each")
    cmd.flag("--plan", metavar="FILE", help="YAML/TOML file: streams: [name, or {stream: name, <option>: value, ...}]")
    cmd.field(FleetOptions, "max_concurrent")
    if placement:
        cmd.field(FleetOptions, "placement")
        cmd.field(FleetOptions, "single_max_mb")


_NOT_PER_STREAM = {"root", "stream", "streams", "plan", "config", "json", "debug", "max_concurrent", "placement", "single_max_mb", "address", "no_ray"}


def config_values(values: dict, keys: dict[str, argparse.Action], where: str) -> dict:
    """dest -> value for a config file's (or a plan entry's) keys, list flags converted like their text would be."""
    unknown = set(values) - set(keys)
    if unknown:
        raise UsageError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    try:
        return {keys[name].dest: keys[name].type.from_config(v) if isinstance(keys[name].type, ListOf) else v for name, v in values.items()}
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{where}: {exc}") from None


def stream_namespaces(cmd: Command, args) -> list[tuple[str, argparse.Namespace]] | None:
    """None for one --stream; else (stream, its options: the job's flags with the plan entry's values on top) per stream."""
    if sum(bool(v) for v in (args.stream, args.streams, args.plan)) != 1:
        raise UsageError(f"{cmd.parser.prog}: give one of --stream, --streams or --plan")
    if args.stream:
        return None
    keys = {name: a for name, a in cmd.config_keys().items() if a.dest not in _NOT_PER_STREAM}
    out = []
    for name, values in stream_entries(args.streams, args.plan):
        ns = argparse.Namespace(**vars(args))
        for dest, value in config_values(values, keys, f"plan {args.plan}, stream {name}").items():
            setattr(ns, dest, value)
        ns.stream = name
        out.append((name, ns))
    return out
