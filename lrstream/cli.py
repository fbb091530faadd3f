"""The ``lrstream`` command line.

Conventions (DESIGN.md, shared by every command):

* exit codes: 0 done, 1 internal error, 2 bad usage, 3 bad input data,
  4 nothing to work on, 5 drift;
* an error the user can fix prints one line to stderr (``--debug`` shows the
  traceback);
* ``--json`` prints exactly one JSON object as the last line of stdout; human
  output and progress go to stderr;
* ``--config FILE`` (YAML or TOML) supplies the same keys as the flags, with
  dashes or underscores; flags given on the command line win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Callable

from .config import load_config_file
from .errors import EXIT_INTERNAL, EXIT_OK, LrstreamError, UsageError


class _CommandFailed(LrstreamError):
    """A command that finished with a failure but still has a JSON result to print."""

    def __init__(self, message: str, exit_code: int, result: dict):
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors follow the one-line convention."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file with default values for these options")


def _add_hour_selection(p: argparse.ArgumentParser) -> None:
    hours = p.add_mutually_exclusive_group()
    hours.add_argument("--last", type=int, help="use the last N ingested hours (the newest one validates)")
    hours.add_argument("--hours", help="comma-separated hours YYYY-MM-DDTHH to use (the last one validates)")


def _selected_hours(args) -> list[str] | None:
    """The explicit hour list of --hours (None without it); checks --last."""
    if args.last is not None and args.last < 1:
        raise UsageError("--last must be >= 1")
    return [h.strip() for h in args.hours.split(",") if h.strip()] if args.hours else None


# ---------------------------------------------------------------- factorize


def _add_factorize(sub) -> None:
    p = sub.add_parser("factorize", help="classic rank-k factorisation of one matrix (.npy, .csv or image)")
    p.add_argument("input", help="path or fsspec URL of a .npy, .csv or image file")
    p.add_argument("--k", type=int, required=True, help="target rank")
    p.add_argument("--method", choices=["svd", "uv", "complete"], default="svd", help="truncated SVD, gradient U.V, or masked completion")
    p.add_argument("--out", required=True, help="output folder (path or fsspec URL) for L.npy, R.npy and metrics.json")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps for uv/complete")
    p.add_argument("--lr", type=float, default=None, help="learning rate for uv/complete (default: the method's own)")
    p.add_argument("--mask", help="complete: .npy bool mask of observed entries (default: the finite entries)")
    p.add_argument("--observed", type=float, default=None, help="complete: observe this seeded random fraction of the entries instead")
    p.add_argument("--holdout", type=float, default=0.1, help="complete: fraction of observed entries held out to report error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    _common(p)
    p.set_defaults(run=_run_factorize)


def _run_factorize(args, log) -> dict:
    import numpy as np

    from . import factorize as fz
    from .sources import read_matrix
    from .storage import url_to_fs

    A = read_matrix(args.input)
    if A.ndim != 2:
        raise UsageError(f"factorize takes one matrix, {args.input} holds a stack of shape {A.shape}")
    A = A.astype(np.float64)
    if args.method == "svd":
        res = fz.truncated_svd(A, args.k)
    elif args.method == "uv":
        res = fz.uv_factorize(A, args.k, steps=args.steps, lr=args.lr, seed=args.seed, device=args.device)
    else:
        if args.mask and args.observed is not None:
            raise UsageError("give either --mask or --observed, not both")
        if args.mask:
            mask = read_matrix(args.mask).astype(bool)
        elif args.observed is not None:
            if not 0 < args.observed <= 1:
                raise UsageError("--observed must lie in (0, 1]")
            mask = np.random.default_rng(args.seed).random(A.shape) < args.observed
        else:
            mask = np.isfinite(A)
        res = fz.complete_matrix(A, mask, args.k, steps=args.steps, lr=args.lr, holdout=args.holdout, seed=args.seed, device=args.device)
    fs, root = url_to_fs(args.out)
    fs.makedirs(root, exist_ok=True)
    for name, arr in (("L", res.L), ("R", res.R)):
        with fs.open(f"{root}/{name}.npy", "wb") as f:
            np.save(f, arr.detach().cpu().numpy(), allow_pickle=False)
    metrics = {"input": args.input, "method": args.method, "k": args.k, "shape": list(A.shape), **res.metrics()}
    with fs.open(f"{root}/metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    for key, value in metrics.items():
        log(f"{key:>24}: {value}")
    log(f"factors and metrics written to {args.out}")
    return {**metrics, "out": args.out}


# ---------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on this machine: ingest 3 hours, retrain on Ray, evaluate, report")
    p.add_argument("--root", default="lrstream-demo", help="where shards, sketches, reports and the plot go (path or fsspec URL)")
    p.add_argument("--source", default="auto", help="auto (sample video, else synthetic), bigbuckbunny, synthetic, or a video URL")
    p.add_argument("--stream", default="demo")
    p.add_argument("--hours", type=int, default=3, help="hours to split the source into (train, validate, ..., evaluate)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=20)
    p.add_argument("--sketch", default="learned", choices=["learned", "mixed-j", "mixed-s"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--no-ray", action="store_true", help="run every stage in this process")
    _common(p)
    p.set_defaults(run=_run_demo)


def _run_demo(args, log) -> dict:
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig(
        root=args.root, source=args.source, stream=args.stream, hours=args.hours, k=args.k, m=args.m, kind=args.sketch, steps=args.steps,
        workers=args.workers, seed=args.seed, device=args.device, address=args.address, use_ray=not args.no_ray, progress=sys.stderr.isatty(),
    )  # fmt: skip
    result = run_demo(cfg, log=log)
    log(result["table"])
    for what, where in result["locations"].items():
        log(f"{what:>8}: {where}")
    log(f"done in {result['seconds']:.0f} s")
    return result


# ---------------------------------------------------------------- ingest


def _add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="ingest one hour of one or more streams into Arrow shards (one Ray actor per stream)")
    p.add_argument("--root", required=True, help="storage root (path or fsspec URL)")
    p.add_argument("--stream", help="stream name")
    p.add_argument("--hour", help="hour label YYYY-MM-DDTHH")
    p.add_argument("--source", help="video file, image folder, .npy stack, or synthetic://?frames=N&height=H&width=W&seed=S")
    p.add_argument("--plan", help="YAML/TOML file listing streams: [{stream, hour, source}] to ingest at once")
    p.add_argument("--force", action="store_true", help="replace an hour that is already ingested (atomically)")
    p.add_argument("--rows-per-shard", type=int, default=32)
    p.add_argument("--compression", default="zstd", choices=["zstd", "lz4", "none"])
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--no-ray", action="store_true", help="run the ingest actors in this process")
    _common(p)
    p.set_defaults(run=_run_ingest)


def _run_ingest(args, log) -> dict:
    from .ingest import IngestSpec, ingest_many, load_plan
    from .shards import WriteOptions

    single = (args.stream, args.hour, args.source)
    if args.plan and any(single):
        raise UsageError("give either --plan or --stream/--hour/--source, not both")
    if args.plan:
        specs = load_plan(args.plan)
    elif all(single):
        specs = [IngestSpec(args.stream, args.hour, args.source)]
    else:
        raise UsageError("ingest needs --stream, --hour and --source (or --plan FILE)")
    options = WriteOptions(rows_per_shard=args.rows_per_shard, compression=args.compression, force=args.force)
    results = ingest_many(args.root, specs, options, address=args.address, use_ray=not args.no_ray)
    failed = [r for r in results if not r["ok"]]
    for r in results:
        if r["ok"]:
            what = {"exists": "already ingested, nothing to do", "concurrent": "ingested by a concurrent run, kept that copy"}.get(r["status"], r["status"])
            log(f"stream {r['stream']} hour {r['hour']}: {what}: {r['rows']} frames in {r['files']} shards, {r['bytes'] / 1e6:.1f} MB ({r['raw_bytes'] / 1e6:.1f} MB raw), {r['quarantined']} quarantined")
    for r in failed[1:]:
        log(f"lrstream: error: stream {r['stream']} hour {r['hour']}: {r['error']}")
    if failed:
        first = failed[0]
        raise _CommandFailed(f"stream {first['stream']} hour {first['hour']}: {first['error']}", first["exit_code"], {"results": results})
    return results[0] if len(results) == 1 and not args.plan else {"results": results}


# ---------------------------------------------------------------- train


def _half_life(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive fraction of the training window or 'none', got {text!r}") from None


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="learn a sketch from a stream's stored hours with W Ray workers and publish it as a new version")
    p.add_argument("--root", required=True, help="storage root (path or fsspec URL)")
    p.add_argument("--stream", required=True)
    p.add_argument("--k", type=int, required=True, help="target rank")
    p.add_argument("--m", type=int, required=True, help="sketch rows")
    p.add_argument("--sketch", default="learned", choices=["learned", "mixed-j", "mixed-s", "dense"], help="sketch kind (dense: all m x n entries, started from the training data's top-m subspace)")
    p.add_argument("--init", choices=["tensor", "spectral", "random"], help="dense: start from the top-m subspace (tensor, the default), its recency/spectrum-weighted form (spectral), or a Gaussian")
    p.add_argument("--power", type=float, default=2.0, help="spectral: weigh each frame's singular values to this power (2 = the plain Gram)")
    p.add_argument("--half-life", type=_half_life, default=0.25, help="spectral: a frame's weight halves every this fraction of the training window, counted back from the newest; 'none' for no decay")
    _add_hour_selection(p)
    p.add_argument("--start", help="first hour of a range (inclusive)")
    p.add_argument("--end", help="last hour of a range (inclusive)")
    p.add_argument("--workers", type=int, default=2, help="gradient workers (Ray actors)")
    p.add_argument("--mode", choices=["sync", "async"], default="sync", help="synchronous steps, or asynchronous with bounded staleness")
    p.add_argument("--staleness", type=int, default=2, help="async: drop gradients more than this many versions old")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=8, help="frames per step, split over the workers")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--loss", choices=["fro", "v"], default="fro")
    p.add_argument("--val-fraction", type=float, default=0.1, help="with one training hour, the share of its last frames held out (0: no validation)")
    p.add_argument("--eval-every", type=int, default=25, help="validate every N steps")
    p.add_argument("--patience", type=int, default=6, help="stop after N validations without improvement")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--checkpoint-every", type=int, default=25, help="parameter-server checkpoint interval (steps)")
    p.add_argument("--gray", action="store_true", help="frames as (H, W) luminance instead of (C*H, W)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=None, help="default: 1 GPU per worker when the cluster has GPUs, else none")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when the cluster (or, with --no-ray, this machine) has a GPU")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--no-ray", action="store_true", help="run the server and workers in this process")
    p.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    _common(p)
    p.set_defaults(run=_run_train)


def _run_train(args, log) -> dict:
    from .learn import LearnConfig
    from .retrain import RetrainConfig, retrain

    hours = _selected_hours(args)
    gpus_per_worker = args.gpus_per_worker
    if args.device == "auto":
        import torch

        device = "cuda" if args.gpus_per_worker or (args.no_ray and torch.cuda.is_available()) else "cpu"
    else:
        device = args.device
        if device == "cpu" and gpus_per_worker is None:
            gpus_per_worker = 0.0  # keeps retrain from moving the workers onto the cluster's GPUs
    learn_cfg = LearnConfig(
        k=args.k, m=args.m, kind=args.sketch, loss=args.loss, steps=args.steps, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, val_fraction=args.val_fraction, eval_every=args.eval_every, patience=args.patience, seed=args.seed,
        device=device, progress=args.progress, time_budget=args.time_budget, dtype=args.dtype,
        init=args.init, powers=(args.power,), half_lives=(args.half_life,),
    )  # fmt: skip
    cfg = RetrainConfig(
        learn=learn_cfg, workers=args.workers, mode=args.mode, staleness=args.staleness, checkpoint_every=args.checkpoint_every,
        gray=args.gray, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=gpus_per_worker,
    )  # fmt: skip
    result = retrain(args.root, args.stream, cfg, hours=hours, last=args.last, start=args.start, end=args.end, address=args.address, use_ray=not args.no_ray, log=log)
    out = result.summary()
    gap = "n/a (no validation data)" if out["val_gap"] is None else f"{out['val_gap']:.5g} (sparse random {out['val_gap_sparse_random']:.5g}, {out['val_ratio']:.1f}x)"
    log(f"stream {args.stream}: version {out['version']} ({out['kind']}, k={out['k']}, m={out['m']}) at {out['url']}")
    log(f"validation gap {gap}; {out['steps']} steps in {out['seconds']:.1f} s, {out['frames_per_second']:.1f} frames/s, {cfg.workers} workers")
    return out


# ---------------------------------------------------------------- plan


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="find the smallest sketch size m whose learned sketch meets a target error gap on held-out data")
    p.add_argument("--root", required=True, help="storage root (path or fsspec URL)")
    p.add_argument("--stream", required=True)
    p.add_argument("--k", type=int, required=True, help="target rank")
    p.add_argument("--target", type=float, required=True, help="the error gap to meet (sigma_1-normalised, as evaluate reports it)")
    p.add_argument("--sketch", default="learned", choices=["learned", "mixed-j", "mixed-s", "dense"], help="sketch kind")
    p.add_argument("--positions", action="store_true", help="sparse kinds: place the nonzeros by the greedy search before training values")
    _add_hour_selection(p)
    p.add_argument("--m-max", type=int, default=None, help="largest m to try (default: min(n, d))")
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per probe")
    p.add_argument("--val-fraction", type=float, default=0.25, help="with one hour, the share of its last frames held out")
    p.add_argument("--gray", action="store_true", help="frames as (H, W) luminance instead of (C*H, W)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(run=_run_plan)


def _run_plan(args, log) -> dict:
    from .errors import EXIT_NOTHING
    from .learn import LearnConfig
    from .plan import plan_sketch_size
    from .retrain import load_segments, plan_data

    hours = _selected_hours(args)
    if not 0 < args.val_fraction < 1:
        raise UsageError("--val-fraction must lie in (0, 1): plan measures the gap on held-out frames")
    data = plan_data(args.root, args.stream, 1, hours=hours, last=args.last, val_fraction=args.val_fraction, gray=args.gray)
    train = load_segments(args.root, args.stream, data.train[0], args.gray)
    val = load_segments(args.root, args.stream, data.val[0], args.gray)
    cfg = LearnConfig(k=args.k, m=args.k, kind=args.sketch, positions=args.positions, steps=args.steps, seed=args.seed)
    log(f"planning on {train.shape[0]} training and {val.shape[0]} held-out frames ({data.validation}); target gap {args.target:g}")
    result = plan_sketch_size(train, val, args.k, args.target, m_max=args.m_max, config=cfg, log=log)
    out = {"stream": args.stream, "train_hours": data.train_hours, "val_hours": data.val_hours, **result.summary()}
    if not result.met:
        tried = max(p["m"] for p in result.probes)
        raise _CommandFailed(f"no sketch size up to m={tried} meets the target gap {args.target:g} (best {min(p['gap'] for p in result.probes):.5g})", EXIT_NOTHING, out)
    log(f"smallest m meeting gap {args.target:g}: m={result.m} (validation gap {result.gap:.5g}, {len(result.probes)} probes)")
    return out


# ---------------------------------------------------------------- evaluate and report


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="apply the current sketch to the newest hour and report its error gap next to random sketches")
    p.add_argument("--root", required=True, help="storage root (path or fsspec URL)")
    p.add_argument("--stream", required=True)
    p.add_argument("--hour", help="evaluate this hour (default: the newest one the sketch did not train on)")
    p.add_argument("--version", type=int, help="sketch version (default: LATEST)")
    p.add_argument("--k", type=int, help="rank (default: the sketch's)")
    p.add_argument("--drift-margin", type=float, default=0.0, help="drift when the sketch's gap exceeds sparse random's by more than this fraction")
    p.add_argument("--retrain-on-drift", action="store_true", help="on drift, submit `lrstream train` for the stream (a Ray job with id retrain-S-HOUR when RAY_ADDRESS is a dashboard URL)")
    p.add_argument("--workers", type=int, default=2, help="workers for a retraining submitted on drift")
    p.add_argument("--address", help="Ray dashboard address for --retrain-on-drift (default: $RAY_ADDRESS)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    _common(p)
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args, log) -> dict:
    from . import evaluation
    from .errors import EXIT_DRIFT
    from .reports import format_reports

    row = evaluation.run_evaluation(args.root, args.stream, hour=args.hour, version=args.version, k=args.k, margin=args.drift_margin, batch_size=args.batch_size, device=args.device)
    out = {**row, "gap": {"sketch": row["gap_sketch"], "sparse_random": row["gap_sparse_random"], "dense_random": row["gap_dense_random"], "random_half": row["gap_random_half"]}}
    log(format_reports([row]))
    if row["status"] == "exists":
        log(f"hour {row['hour']} was already evaluated with version {row['version']}; no row added")
    if not row["drift"]:
        return out
    message = f"drift: stream {args.stream} hour {row['hour']}: sketch version {row['version']} has gap {row['gap_sketch']:.5g}, sparse random {row['gap_sparse_random']:.5g} (margin {row['margin']:.0%})"
    if args.retrain_on_drift:
        meta = evaluation.load_version(args.root, args.stream, row["version"]).meta
        argv = evaluation.retrain_argv(args.root, args.stream, meta, workers=args.workers)
        out["retrain"] = evaluation.submit_retrain(argv, f"retrain-{args.stream}-{row['hour']}", address=args.address)
        message += f"; retraining {out['retrain']['status']} ({out['retrain']['mode']} {out['retrain']['submission_id']})"
    raise _CommandFailed(message, EXIT_DRIFT, out)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="print the last evaluation runs of a stream (and plot the gap over time)")
    p.add_argument("--root", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--last", type=int, default=24, help="how many runs to show")
    p.add_argument("--plot", metavar="PNG", help="also write a plot of the gap per hour for every sketch kind")
    _common(p)
    p.set_defaults(run=_run_report)


def _run_report(args, log) -> dict:
    from .errors import NothingToDoError
    from .reports import format_reports, plot_reports, read_reports

    if args.last < 1:
        raise UsageError("--last must be >= 1")
    rows = read_reports(args.root, args.stream, last=args.last)
    if not rows:
        raise NothingToDoError(f"stream {args.stream} has no evaluation reports under {args.root} (run `lrstream evaluate` first)")
    log(format_reports(rows))
    if args.plot:
        plot_reports(rows, args.plot, title=f"stream {args.stream}: error gap per hour (k={rows[-1]['k']}, m={rows[-1]['m']})")
        log(f"plot written to {args.plot}")
    return {"stream": args.stream, "rows": rows, "plot": args.plot}


# ---------------------------------------------------------------- main

COMMANDS: list[Callable] = [_add_factorize, _add_ingest, _add_train, _add_plan, _add_evaluate, _add_report, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lrstream", description="Learned sketches for low-rank approximation of streaming matrices.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    choices = parser._subparsers._group_actions[0].choices  # subcommand name -> its parser
    command = next((a for a in argv if a in choices), None)
    if known.config and command is not None:
        values = load_config_file(known.config)
        sub = choices[command]
        dests = {a.dest: a for a in sub._actions}
        unknown = set(values) - set(dests) - {"config"}
        if unknown:
            raise UsageError(f"config {known.config}: unknown option(s) {', '.join(sorted(unknown))}")
        for name in values:
            dests[name].required = False  # supplied by the file; a flag still wins
        sub.set_defaults(**values)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("LRSTREAM_DEBUG") == "1"

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        args = _parse(argv)
        result = args.run(args, log)
        if args.json:
            print(json.dumps(result, default=float))
        return EXIT_OK
    except LrstreamError as exc:
        if debug:
            traceback.print_exc()
        print(f"lrstream: error: {exc}", file=sys.stderr)
        if isinstance(exc, _CommandFailed) and "--json" in argv:
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
