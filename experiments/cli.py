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
import logging
import os
import sys
import time
from pathlib import Path

from experiments import ExperimentError, registry
from experiments.base import (MAX_WORKERS, agreement, run_experiment, write_json,
                              write_plot, write_summary)

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
                     help="small sweeps: all experiments together in under two minutes")
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


def _check_out(text: str) -> Path:
    """Refuse, before any work, an --out the results cannot be written whole into:
    empty, not a directory, unwritable, or holding an unreadable result of ours."""
    if not text:
        raise ExperimentError("--out '': give a directory")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {text!r} is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise ExperimentError(f"--out {text!r}: cannot create or write in {str(probe)!r}")
    for name in registry():
        path = out / f"{name}.json"
        if path.exists():
            try:
                data = json.loads(path.read_text("utf8"))
                ok = isinstance(data, dict) and data.get("experiment") == name
            except (ValueError, UnicodeDecodeError):
                ok = False
            if not ok:
                raise ExperimentError(f"--out {text!r}: {str(path)!r} is not a result of "
                                      f"experiment {name!r}; remove it or choose another "
                                      "--out (summary.md is built from the results there)")
    return out


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
        raise ExperimentError(f"--dask {address!r}: no Dask scheduler reached there within "
                              f"{timeout:g} s ({type(e).__name__}: {_first_line(e)}); give "
                              "the address of a running scheduler, e.g. "
                              "tcp://10.0.0.5:8786") from None
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def run_all(classes, out: Path, quick: bool, workers: int, show_progress: bool = True,
            stream=None, client=None) -> list[dict]:
    """Run the experiments in ``classes``, write their files; return the results.

    ``client``: a ``distributed.Client`` to run the points on instead of local cores.
    """
    stream = stream or sys.stdout
    out.mkdir(parents=True, exist_ok=True)
    results = []
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
        write_json(result, out / f"{exp.name}.json")
        write_plot(exp, result, out / f"{exp.name}.png")
        ok, total, _ = agreement(exp, result)
        verdict = ("no prediction" if total == 0 else
                   "agrees" if ok == total else f"disagrees ({total - ok} of {total} points)")
        claim, _ = exp.claim_verdict(result)
        print(f"{exp.name}: simulation {verdict}; documented claim {claim}; "
              f"{len(result['points'])} points in "
              f"{time.monotonic() - start:.1f} s -> {out / (exp.name + '.json')}", file=stream)
        results.append(result)
    summary = write_summary([cls(quick=quick) for cls in registry().values()], out)
    print(f"summary: {summary}", file=stream)
    return results


def cmd_experiment(args) -> int:
    """Run ``shardlab experiment ...``; returns the exit code."""
    action = getattr(args, "action", None)
    if action == "list":
        for name, cls in registry().items():
            print(f"{name:<12} {cls.claim}")
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
    out = _check_out(args.out)
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
