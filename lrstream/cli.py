"""The ``lrstream`` command line: flags, dispatch to :mod:`lrstream.jobs`, and the one error convention.

Conventions (DESIGN.md, shared by every command):

* exit codes: 0 done, 1 internal error, 2 bad usage, 3 bad input data,
  4 nothing to work on, 5 drift;
* an error the user can fix prints one line to stderr (``--debug`` shows the
  traceback);
* ``--json`` prints exactly one JSON object as the last line of stdout; human
  output and progress go to stderr;
* ``--config FILE`` (YAML or TOML) supplies the same keys as the flags, with
  dashes or underscores; flags given on the command line win.

Flags that mirror a config dataclass field (LearnConfig, RetrainConfig, the jobs' own)
take default, choices and help from the field, so the two cannot disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable

from .data.shards import WriteOptions
from .distributed.apply import ApplyOptions
from .distributed.config import RetrainConfig
from .errors import EXIT_INTERNAL, EXIT_OK, CommandFailed, LrstreamError, UsageError
from .jobs.apply import ApplyJob, apply_work, run_apply, run_apply_fleet
from .jobs.demo import DemoConfig, run_demo
from .jobs.evaluate import EvaluateJob, evaluate_work, run_evaluate, run_evaluate_fleet
from .jobs.factorize import FactorizeJob, run_factorize
from .jobs.files import load_config_file
from .jobs.flags import FLOATS, HALF_LIVES, Command, Parser, add_streams, config_values, stream_namespaces
from .jobs.fleet import FleetOptions
from .jobs.gc import GcJob, run_gc
from .jobs.ingest import run_ingest
from .jobs.plan import run_plan
from .jobs.report import run_report
from .jobs.show import ShowJob, run_show
from .jobs.submit import SubmitJob, run_submit
from .jobs.train import run_train, run_train_fleet, train_work
from .jobs.update import add_update, update_command
from .training.config import LearnConfig


def _common(cmd: Command) -> None:
    cmd.flag("--json", action="store_true", help="print one JSON object as the last line of stdout")
    cmd.flag("--debug", action="store_true", help="show tracebacks")
    cmd.flag("--config", metavar="FILE", help="YAML or TOML file with default values for these options")


def _root_and_stream(cmd: Command) -> None:
    cmd.flag("--root", required=True, help="storage root (path or fsspec URL)")
    cmd.flag("--stream", required=True, help="stream name")


def _add_hour_selection(cmd: Command) -> None:
    hours = cmd.parser.add_mutually_exclusive_group()
    cmd.flag("--last", type=int, group=hours, help="use the last N ingested hours (the newest one validates)")
    cmd.flag("--hours", group=hours, help="comma-separated hours YYYY-MM-DDTHH to use (the last one validates)")


def _selected_hours(args) -> list[str] | None:
    """The explicit hour list of --hours (None without it); checks --last."""
    if args.last is not None and args.last < 1:
        raise UsageError("--last must be >= 1")
    if isinstance(args.hours, (list, tuple)):  # a config file's list
        return [str(h).strip() for h in args.hours]
    return [h.strip() for h in args.hours.split(",") if h.strip()] if args.hours else None


# ---------------------------------------------------------------- commands: _add_X declares the flags, _run_X calls the job


def _add_factorize(cmd: Command) -> None:
    cmd.field(FactorizeJob, "input", "input")
    for name in ("k", "method", "out", "steps", "solver", "lr", "mask", "observed", "holdout", "seed", "device", "picture"):
        cmd.field(FactorizeJob, name)
    _common(cmd)


def _run_factorize(cmd: Command, args, log) -> dict:
    return run_factorize(cmd.build(FactorizeJob, args), log)


def _add_demo(cmd: Command) -> None:
    for name in ("root", "source", "stream", "hours", "k", "m"):
        cmd.field(DemoConfig, name)
    cmd.field(DemoConfig, "kind", "--sketch")
    for name in ("steps", "workers", "seed", "device", "address"):
        cmd.field(DemoConfig, name)
    cmd.flag("--no-ray", action="store_true", help="run every stage in this process")
    _common(cmd)


def _run_demo(cmd: Command, args, log) -> dict:
    return run_demo(cmd.build(DemoConfig, args, use_ray=not args.no_ray, progress=sys.stderr.isatty()), log=log)


def _add_ingest(cmd: Command) -> None:
    cmd.flag("--root", required=True, help="storage root (path or fsspec URL)")
    cmd.flag("--stream", help="stream name")
    cmd.flag("--hour", help="hour label YYYY-MM-DDTHH")
    cmd.flag("--source", help="video file, image folder, .npy stack, or synthetic://?frames=N&height=H&width=W&seed=S")
    cmd.flag("--plan", help="YAML/TOML file listing streams: [{stream, hour, source}] to ingest at once")
    for name in ("force", "rows_per_shard", "compression"):
        cmd.field(WriteOptions, name)
    cmd.flag("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    cmd.flag("--no-ray", action="store_true", help="run the ingest actors in this process")
    _common(cmd)


def _run_ingest(cmd: Command, args, log) -> dict:
    options = cmd.build(WriteOptions, args)
    return run_ingest(args.root, stream=args.stream, hour=args.hour, source=args.source, plan=args.plan, options=options, address=args.address, use_ray=not args.no_ray, log=log)


def _add_train(cmd: Command) -> None:
    add_streams(cmd)
    for name in ("k", "m"):
        cmd.field(LearnConfig, name)
    cmd.field(LearnConfig, "kind", "--sketch")
    cmd.field(LearnConfig, "init")
    # Single values by default (one start to train), lists to choose among by forward validation.
    cmd.field(LearnConfig, "powers", "--powers", "--power", type=FLOATS, default=(2.0,), metavar="P[,P...]", help="spectral: weigh each frame's singular values to this power (2 = the plain Gram); several: choose by forward validation")
    cmd.field(
        LearnConfig, "half_lives", "--half-lives", "--half-life", type=HALF_LIVES, default=(0.25,), metavar="H[,H...]",
        help="spectral: a frame's weight halves every this fraction of the training window, counted back from the newest; 'none' for no decay; several: choose by forward validation",
    )  # fmt: skip
    for name in ("start_folds", "positions", "greedy_samples"):
        cmd.field(LearnConfig, name)
    _add_hour_selection(cmd)
    cmd.flag("--start", help="first hour of a range (inclusive)")
    cmd.flag("--end", help="last hour of a range (inclusive)")
    for name in ("workers", "mode", "staleness"):
        cmd.field(RetrainConfig, name)
    for name in ("steps", "batch_size", "lr", "lr_schedule", "min_lr_fraction", "optimizer", "loss"):
        cmd.field(LearnConfig, name)
    cmd.flag("--weight", metavar="W.npy", help="wfro: the weight matrix W (n, d) as .npy (path or fsspec URL; read without pickle)")
    cmd.field(LearnConfig, "val_fraction", help="with one training hour, the share of its last frames held out (0: no validation)")
    for name in ("val_split", "refit", "eval_every", "patience", "time_budget", "route", "power_iters"):
        cmd.field(LearnConfig, name)
    for name in ("checkpoint_every", "gray", "cpus_per_worker", "gpus_per_worker", "startup_timeout", "max_worker_failures"):
        cmd.field(RetrainConfig, name)
    cmd.flag("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when GPUs are asked for (--gpus-per-worker) or, with --no-ray, when this machine has one; else the CPU")
    for name in ("dtype", "seed"):
        cmd.field(LearnConfig, name)
    cmd.flag("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    cmd.flag("--no-ray", action="store_true", help="run the server and workers in this process")
    cmd.field(LearnConfig, "progress", action="store_true", default=False, help="show a progress bar on stderr")
    _common(cmd)


def _train_inputs(cmd: Command, args) -> tuple[RetrainConfig, dict]:
    cfg = cmd.build(RetrainConfig, args, learn=cmd.build(LearnConfig, args))
    return cfg, dict(device=args.device, hours=_selected_hours(args), last=args.last, start=args.start, end=args.end, weight=args.weight)


def _run_train(cmd: Command, args, log) -> dict:
    fleet = stream_namespaces(cmd, args)
    if fleet is None:
        cfg, selection = _train_inputs(cmd, args)
        return run_train(args.root, args.stream, cfg, **selection, address=args.address, use_ray=not args.no_ray, log=log)
    options = cmd.build(FleetOptions, args)
    works = [train_work(args.root, name, *_train_inputs(cmd, ns), options) for name, ns in fleet]
    return run_train_fleet(works, options, address=args.address, use_ray=not args.no_ray, log=log)


def _add_plan(cmd: Command) -> None:
    _root_and_stream(cmd)
    cmd.field(LearnConfig, "k")
    cmd.flag("--target", type=float, required=True, help="the error gap to meet (sigma_1-normalised, as evaluate reports it)")
    cmd.field(LearnConfig, "kind", "--sketch", help="sketch kind")
    cmd.field(LearnConfig, "positions")
    _add_hour_selection(cmd)
    cmd.flag("--m-max", type=int, default=None, help="largest m to try (default: min(n, d))")
    cmd.field(LearnConfig, "steps", help="optimiser steps per probe")
    cmd.flag("--val-fraction", type=float, default=0.25, help="with one hour, the share of its last frames held out")
    cmd.flag("--gray", action="store_true", help="frames as (H, W) luminance instead of (C*H, W)")
    cmd.field(LearnConfig, "seed")
    _common(cmd)


def _run_plan(cmd: Command, args, log) -> dict:
    hours = _selected_hours(args)
    cfg = cmd.build(LearnConfig, args, m=args.k)
    return run_plan(args.root, args.stream, cfg, args.target, hours=hours, last=args.last, m_max=args.m_max, val_fraction=args.val_fraction, gray=args.gray, log=log)


def _add_apply(cmd: Command) -> None:
    add_streams(cmd)
    for name in ("hour", "last", "start", "end", "pending", "version"):
        cmd.field(ApplyJob, name)
    for name in ("k", "dtype", "batch_size", "rows_per_part", "compression", "device", "force"):
        cmd.field(ApplyOptions, name)
    for name in ("workers", "address"):
        cmd.field(ApplyJob, name)
    cmd.flag("--no-ray", action="store_true", help="run the factor worker in this process")
    _common(cmd)


def _run_apply(cmd: Command, args, log) -> dict:
    fleet = stream_namespaces(cmd, args)
    if fleet is None:
        return run_apply(args.root, args.stream, cmd.build(ApplyJob, args, use_ray=not args.no_ray), cmd.build(ApplyOptions, args), log=log)
    options = cmd.build(FleetOptions, args)
    works = [apply_work(args.root, name, cmd.build(ApplyJob, ns), cmd.build(ApplyOptions, ns), options) for name, ns in fleet]
    return run_apply_fleet(works, options, address=args.address, use_ray=not args.no_ray, log=log)


def _add_evaluate(cmd: Command) -> None:
    add_streams(cmd, placement=False)
    for name in ("hour", "version", "k"):
        cmd.field(EvaluateJob, name)
    cmd.field(EvaluateJob, "margin", "--drift-margin")
    cmd.field(EvaluateJob, "z", "--drift-z")
    for name in ("sample", "seed", "recompute", "retrain_on_drift", "on_drift", "workers", "address", "batch_size", "device"):
        cmd.field(EvaluateJob, name)
    cmd.flag("--no-ray", action="store_true", help="with --streams/--plan: evaluate the streams one after another in this process")
    _common(cmd)


def _run_evaluate(cmd: Command, args, log) -> dict:
    fleet = stream_namespaces(cmd, args)
    if fleet is None:
        return run_evaluate(args.root, args.stream, cmd.build(EvaluateJob, args), log=log)
    works = [evaluate_work(args.root, name, cmd.build(EvaluateJob, ns)) for name, ns in fleet]
    # --address is the dashboard a drift's retraining is submitted to; the tasks join $RAY_ADDRESS or a local Ray.
    return run_evaluate_fleet(works, cmd.build(FleetOptions, args), use_ray=not args.no_ray, log=log)


def _add_report(cmd: Command) -> None:
    _root_and_stream(cmd)
    cmd.flag("--last", type=int, default=24, help="how many runs to show")
    cmd.flag("--plot", metavar="PNG", help="also write a plot of the gap per hour for every sketch kind")
    _common(cmd)


def _run_report(cmd: Command, args, log) -> dict:
    return run_report(args.root, args.stream, last=args.last, plot=args.plot, log=log)


def _add_show(cmd: Command) -> None:
    _root_and_stream(cmd)
    for name in ("hour", "frame", "version", "out"):
        cmd.field(ShowJob, name)
    _common(cmd)


def _run_show(cmd: Command, args, log) -> dict:
    return run_show(args.root, args.stream, cmd.build(ShowJob, args), log=log)


def _add_gc(cmd: Command) -> None:
    cmd.flag("--root", required=True, help="storage root (path or fsspec URL)")
    for name in ("stream", "older_than", "dry_run"):
        cmd.field(GcJob, name)
    _common(cmd)


def _run_gc(cmd: Command, args, log) -> dict:
    return run_gc(args.root, cmd.build(GcJob, args), log=log)


def _add_submit(cmd: Command) -> None:
    for name in ("address", "submission_id", "retry", "num_cpus", "num_gpus", "working_dir", "no_wait"):
        cmd.field(SubmitJob, name)
    _common(cmd)
    cmd.flag("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the lrstream command the job runs, with its flags")


def _run_submit(cmd: Command, args, log) -> dict:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    known = [name for name, *_ in COMMANDS if name != "submit"]
    if argv and argv[0] not in known:
        raise UsageError(f"submit: {argv[0]!r} is not an lrstream command ({', '.join(known)})")
    return run_submit(argv, cmd.build(SubmitJob, args), log=log)


# ---------------------------------------------------------------- main

COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    ("factorize", "classic rank-k factorisation of one matrix (.npy, .csv or image)", _add_factorize, _run_factorize),
    ("ingest", "ingest one hour of one or more streams into Arrow shards (one Ray actor per stream)", _add_ingest, _run_ingest),
    ("train", "learn a sketch from a stream's stored hours with W Ray workers and publish it as a new version", _add_train, _run_train),
    ("update", "fold one new hour into the current dense sketch's statistics and publish a new version (no full retrain)", add_update, update_command),
    ("plan", "find the smallest sketch size m whose learned sketch meets a target error gap on held-out data", _add_plan, _run_plan),
    ("apply", "store every frame's rank-k factors for an hour (or several) with the current sketch", _add_apply, _run_apply),
    ("evaluate", "apply the current sketch to the newest hour and report its error gap next to random sketches", _add_evaluate, _run_evaluate),
    ("report", "print the last evaluation runs of a stream (and plot the gap over time)", _add_report, _run_report),
    ("show", "draw one stored frame, its rank-k approximation from the stored factors and the residual as a PNG", _add_show, _run_show),
    ("gc", "remove attempt folders no manifest names that are older than a day (killed, replaced or losing writers)", _add_gc, _run_gc),
    ("submit", "run one lrstream command as a Ray job and exit with its driver's own exit code (ids that succeeded run once; --retry re-runs a failed one)", _add_submit, _run_submit),
    ("demo", "the whole pipeline on this machine: ingest 4 hours, retrain on Ray, apply, evaluate, report, picture", _add_demo, _run_demo),
]


def _build() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = Parser(prog="lrstream", description="Learned sketches for low-rank approximation of streaming matrices.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    commands = {}
    for name, help, add, run in COMMANDS:
        commands[name] = Command(sub, name, help, run)
        add(commands[name])
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def _parse(argv: list[str]) -> tuple[argparse.Namespace, Command]:
    parser, commands = _build()
    pre = Parser(prog="lrstream", add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    command = next((a for a in argv if a in commands), None)
    if known.config and command is not None:
        cmd = commands[command]
        values = {name: v for name, v in load_config_file(known.config).items() if name != "config"}
        defaults = config_values(values, cmd.config_keys(), f"config {known.config}")
        cmd.parser.set_defaults(**defaults)  # a flag on the command line still wins
    args = parser.parse_args(argv)
    cmd = commands[args.command]
    cmd.check_required(args)
    return args, cmd


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("LRSTREAM_DEBUG") == "1"

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        args, cmd = _parse(argv)
        result = cmd.run(cmd, args, log)
        if args.json:
            print(json.dumps(result, default=float))
        return EXIT_OK
    except LrstreamError as exc:
        if debug:
            traceback.print_exc()
        print(f"lrstream: error: {exc}", file=sys.stderr)
        if isinstance(exc, CommandFailed) and "--json" in argv:
            print(json.dumps(exc.result, default=float))
        return exc.exit_code
    except KeyboardInterrupt:
        print("lrstream: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place that turns any bug into exit 1 with one line
        if debug:
            traceback.print_exc()
        print(f"lrstream: internal error: {exc.__class__.__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
