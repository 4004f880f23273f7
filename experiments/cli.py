"""``shardlab experiment``: list the experiments, run one or all of them.

``shardlab experiment list`` prints each name and its claim.
``shardlab experiment run NAME [--quick] [--out DIR] [--serial | --dask ADDRESS]``
runs one; ``run --all`` runs every one. Each writes ``DIR/NAME.json`` and
``DIR/NAME.png`` (whole or not at all) and rewrites ``DIR/summary.md`` from the
results in ``DIR``. Points run on local cores, in this process (``--serial``) or on
the Dask distributed cluster whose scheduler is at ADDRESS (``--dask``; needs the
``dask`` extra, and workers that can import shardlab); the results are the same.
Bad input raises `experiments.ExperimentError` (one line); the caller exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import logging
import sys
import time
from pathlib import Path

from experiments import ExperimentError, registry
from experiments.base import (MAX_WORKERS, run_experiment, write_result,
                              write_summary)
from shardlab.output import cannot_write_in

__all__ = ["add_experiment_parser", "cmd_experiment", "connect_dask"]

#: Seconds to wait for the Dask scheduler at ``--dask ADDRESS`` before giving up.
DASK_CONNECT_TIMEOUT = 10.0


def add_experiment_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``experiment`` (actions ``list`` and ``run``) to a subparsers object."""
    p = subparsers.add_parser("experiment", help="reproduce the documented claims",
                              description="Reproduce the documented claims of the "
                              "sharding model: simulation, analytic prediction, plot.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="list the experiments and their claims")
    run = actions.add_parser("run", help="run one experiment, or all with --all")
    run.add_argument("name", nargs="?", help="experiment name (see `experiment list`)")
    run.add_argument("--all", action="store_true", help="run every experiment")
    run.add_argument("--quick", action="store_true",
                     help="small sweeps: all experiments together in about a minute on "
                     "2 cores")
    run.add_argument("--out", default="results", metavar="DIR",
                     help="output directory (default: results)")
    run.add_argument("--serial", action="store_true",
                     help="run points in this process (the results are the same)")
    run.add_argument("--dask", metavar="ADDRESS",
                     help="run points on the Dask distributed cluster whose scheduler is "
                     "at ADDRESS, e.g. tcp://10.0.0.5:8786 (pip install 'shardlab[dask]'; "
                     "the results are the same)")
    p.set_defaults(func=cmd_experiment)
    return p


def _selected(args) -> list:
    reg = registry()
    if args.all and args.name:
        raise ExperimentError("give an experiment name or --all, not both")
    if args.all:
        return list(reg.values())
    if not args.name:
        raise ExperimentError("give an experiment name or --all; names: " + ", ".join(reg))
    if args.name not in reg:
        raise ExperimentError(f"experiment {args.name!r} is unknown; allowed: "
                              + ", ".join(reg))
    return [reg[args.name]]


def _check_out(text: str, names: list[str]) -> Path:
    """Refuse, before any work, an --out the results cannot be written whole into:
    empty, not a directory, not writable (tried with a scratch file), an output path
    (``NAME.json``, ``NAME.png`` for ``names``, ``summary.md``) that is not a writable
    regular file, or a result there that is not a complete result of ours."""
    if not text:
        raise ExperimentError("--out '': give a directory")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {text!r} is not a directory")
    probe = out
    while not probe.exists() and not probe.is_symlink():
        probe = probe.parent
    if not probe.is_dir():
        raise ExperimentError(f"--out {text!r}: {str(probe)!r} is not a directory")
    problem = cannot_write_in(probe)  # outputs go through scratch files made there
    if problem:
        raise ExperimentError(f"--out {text!r}: cannot create or write in {str(probe)!r} "
                              f"({problem})")
    targets = [out / f"{n}.{ext}" for n in names for ext in ("json", "png")]
    for path in targets + [out / "summary.md"]:
        if path.exists() and not path.is_file():
            raise ExperimentError(f"--out {text!r}: {str(path)!r} exists and is not a "
                                  "regular file; remove it or choose another --out")
    for name in registry():
        path = out / f"{name}.json"
        if path.exists():
            problem = result_problem(path, name)
            if problem:
                raise ExperimentError(f"--out {text!r}: {str(path)!r} is not a result of "
                                      f"experiment {name!r} ({problem}); remove it or choose "
                                      "another --out (summary.md is built from the results "
                                      "there)")
    return out


#: Fields every point of a result has.
POINT_FIELDS = ("series", "params", "value", "low", "high", "prediction")


def result_problem(path: Path, name: str) -> str:
    """Why the file at ``path`` is not a complete result of experiment ``name`` ("" if
    it is one)."""
    try:
        data = json.loads(path.read_text("utf8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return "not readable JSON"
    if not isinstance(data, dict) or data.get("experiment") != name:
        return f"its 'experiment' is not {name!r}"
    points = data.get("points")
    if not isinstance(points, list) or not points:
        return "'points' is not a non-empty list"
    for i, p in enumerate(points):
        if not isinstance(p, dict) or any(k not in p for k in POINT_FIELDS):
            return f"points[{i}] lacks one of {', '.join(POINT_FIELDS)}"
        nums = [p["value"], p["low"], p["high"]] + (
            [] if p["prediction"] is None else [p["prediction"]])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v) for v in nums):
            return f"points[{i}] has a value that is not a finite number"
        if not isinstance(p["params"], dict) or not isinstance(p["series"], str):
            return f"points[{i}] has a malformed series or params"
    return ""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


async def _probe(address: str, timeout: float) -> None:
    """Open and close one connection to ``address`` (ValueError if it is malformed,
    OSError if nothing answers within ``timeout`` seconds)."""
    from distributed.comm import connect
    comm = await connect(address, timeout=timeout)
    await comm.close()


def connect_dask(address: str, timeout: float | None = None):
    """A ``distributed.Client`` on the scheduler at ``address``, or ExperimentError.

    Gives up after ``timeout`` seconds (`DASK_CONNECT_TIMEOUT`); the scheduler's own
    log lines about the failed attempts are kept off the terminal.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ExperimentError("--dask needs Dask's distributed scheduler, which is not "
                              "installed: install it with pip install 'shardlab[dask]'") from None
    timeout = DASK_CONNECT_TIMEOUT if timeout is None else timeout
    quiet = [logging.getLogger(n) for n in ("distributed", "distributed.client",
                                             "distributed.comm", "distributed.core")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL)
    try:
        if "://" not in address or address.startswith("tcp://"):
            # A plain connection first: a Client that fails to start prints a traceback
            # when it is collected, so one is made only once the scheduler answers.
            asyncio.run(_probe(address, timeout))
        return Client(address, timeout=timeout, set_as_default=False)
    except ValueError as e:
        raise ExperimentError(f"--dask {address!r} is not a Dask scheduler address "
                              f"({_first_line(e)}); give one like tcp://10.0.0.5:8786") from None
    except Exception as e:  # noqa: BLE001 - any failure to connect is the user's address
        # an OS error says why (refused, no route); other failures of a half-made
        # connection say nothing useful (a stray read can even fail as MemoryError)
        why = (f" ({type(e).__name__}: {_first_line(e)})"
               if isinstance(e, OSError) and not isinstance(e, TimeoutError) else "")
        raise ExperimentError(f"--dask {address!r}: no Dask scheduler answered there within "
                              f"{timeout:g} s{why}; give the address of a running "
                              "scheduler, e.g. tcp://10.0.0.5:8786") from None
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def run_all(classes, out: Path, quick: bool, workers: int, show_progress: bool = True,
            stream=None, client=None) -> list[dict]:
    """Run the experiments in ``classes``, write their files; return the results.

    ``client``: a ``distributed.Client`` to run the points on instead of local cores.
    """
    stream = stream or sys.stdout  # `out` is made by the first write: none if interrupted
    results = []
    summary = out / "summary.md"
    for cls in classes:
        exp = cls(quick=quick)
        start = time.monotonic()
        if show_progress:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                                       TextColumn, TimeElapsedColumn)
            with Progress(TextColumn("{task.description:<12}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("points"),
                          TimeElapsedColumn()) as bar:
                task = bar.add_task(exp.name, total=len(exp.points()))
                result = run_experiment(exp, workers, lambda k: bar.advance(task, k),
                                        client=client)
        else:
            result = run_experiment(exp, workers, client=client)
        write_result(exp, result, out)
        summary = write_summary([c(quick=quick) for c in registry().values()], out)
        v = result["verdicts"]
        verdict = v["simulation"] + (
            f" ({v['points_predicted'] - v['points_agreeing']} of {v['points_predicted']} "
            "points)" if v["simulation"] == "disagrees" else "")
        claim = v["claim"]
        print(f"{exp.name}: simulation {verdict}; documented claim {claim}; "
              f"{len(result['points'])} points in "
              f"{time.monotonic() - start:.1f} s -> {out / (exp.name + '.json')}", file=stream)
        results.append(result)
    print(f"summary: {summary}", file=stream)
    return results


def cmd_experiment(args) -> int:
    """Run ``shardlab experiment ...``; returns the exit code."""
    action = getattr(args, "action", None)
    if action == "list":
        width = max(len(name) for name in registry())
        for name, cls in registry().items():
            print(f"{name:<{width}}  {cls.claim}")
        return 0
    if action != "run":
        raise ExperimentError("give an action: list or run")
    dask = getattr(args, "dask", None)
    if dask is not None and args.serial:
        raise ExperimentError("--dask and --serial: give one (--serial runs the points in "
                              "this process, --dask on a cluster)")
    if dask is not None and not dask.strip():
        raise ExperimentError("--dask '': give the scheduler's address, e.g. "
                              "tcp://10.0.0.5:8786")
    classes = _selected(args)
    out = _check_out(args.out, [cls.name for cls in classes])
    workers = 1 if args.serial else MAX_WORKERS
    client = connect_dask(dask) if dask is not None else None
    try:
        run_all(classes, out, args.quick, workers, show_progress=sys.stderr.isatty(),
                client=client)
    finally:
        if client is not None:
            client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m experiments.cli``) until shardlab/cli.py wires it."""
    parser = argparse.ArgumentParser(prog="shardlab")
    sub = parser.add_subparsers(dest="command")
    add_experiment_parser(sub)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ExperimentError as e:
        print(f"shardlab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
