"""``shardlab check``: exhaust a small deployment and print verdicts and counterexamples.

`add_check_parser` adds the subcommand to the ``shardlab`` parser; `cmd_check` runs
it. Bad input (a router, fault or property name, a number out of range, an output
path) raises a `ValueError` subclass with a one-line message that names the flag, the
value and what is allowed: `model.CheckError`, or `layer.routing.RouterError` for
routers, or `sim.scenario.ScenarioError` for a scenario file. The caller turns them
into exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from layer.routing import PROFILE_NAMES, RouterError, live_available, make_router
from model import CheckError
from model.checker import LOSS_WITH_FAULTS, check
from model.properties import MODEL_PROPERTIES
from model.protocol import FAULTS, LIMITS, Config
from model.render import (config_line, property_table, sequence_diagram, steps_lines,
                          verdict_table)
from shardlab.output import STDOUT, check_output_path, write_json_atomic

__all__ = ["add_check_parser", "cmd_check", "DEFAULT_FAULTS", "DEFAULTS"]

#: The faults a correct layer should survive; ``host_change`` (processes configured
#: with different host lists) breaks every profile and is added with ``--faults all``.
DEFAULT_FAULTS = ("shard_crash", "expiry", "worker_crash", "capacity", "partition")

#: The default small configuration (each overridden by a scenario, then by a flag).
DEFAULTS = {"servers": 2, "workers": 2, "shards": 2, "requests_per_server": 2,
            "seed": 1, "capacity": 1, "draws": 4, "max_states": 2_000_000}

#: Beyond these (requests in all, workers) a search takes minutes to hours: say so.
LARGE = {"requests": 6, "workers": 4}

_NUMBERS = {  # flag -> (Config field or None, low, high)
    "--servers": ("servers",) + LIMITS["servers"],
    "--workers": ("workers",) + LIMITS["workers"],
    "--shards": ("shards",) + LIMITS["shards"],
    "--requests-per-server": ("requests_per_server",) + LIMITS["requests_per_server"],
    "--capacity": ("capacity",) + LIMITS["capacity"],
    "--seed": ("seed",) + LIMITS["seed"],
    "--draws": ("draws", 1, 100),
    "--max-states": ("max_states", 1, 10**9),
    "--max-depth": ("max_depth", 0, 10**6),
}


def add_check_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``check`` to an argparse subparsers object; it runs `cmd_check`."""
    c = subparsers.add_parser(
        "check", help="exhaust a small deployment: verdicts and shortest counterexamples",
        description="Explore every interleaving and fault of a small deployment "
                    "(interface servers, workers, shards, a few requests each) and say, "
                    "per property, whether it holds; when it breaks, print the shortest "
                    "run that breaks it as numbered steps and a sequence diagram. With "
                    "no scenario and no --router, checks every router profile on the "
                    "default configuration (2 servers, 2 workers, 2 shards, 2 requests "
                    "per server) and prints a verdict table. The exit code is 0 when the "
                    "check ran, whatever the verdicts (a broken property is a finding, "
                    "not an error: read 'holds' in --json); 2 on bad input.",
        epilog=f"router profiles: {', '.join(PROFILE_NAMES)}. faults: {', '.join(FAULTS)} "
               f"(default: {','.join(DEFAULT_FAULTS)}). properties: "
               f"{', '.join(MODEL_PROPERTIES)}.")
    c.add_argument("scenario", nargs="?", metavar="SCENARIO",
                   help="a TOML scenario: its router, shards, interface_servers, workers "
                        "and seed are used (flags override them)")
    c.add_argument("--router", action="append", metavar="NAME",
                   help="router profile (repeatable; default: the scenario's, or every "
                        "profile)")
    c.add_argument("--faults", metavar="LIST",
                   help="comma-separated faults to switch on, 'none' or 'all' "
                        f"(default: {','.join(DEFAULT_FAULTS)})")
    c.add_argument("--servers", metavar="M",
                   help="interface servers, %d to %d (default: 2)" % LIMITS["servers"])
    c.add_argument("--workers", metavar="K",
                   help="workers, %d to %d (default: 2)" % LIMITS["workers"])
    c.add_argument("--shards", metavar="N",
                   help="Redis shards, %d to %d (default: 2; `shardlab run` takes up to "
                        "64: the model packs a shard number into 5 bits)" % LIMITS["shards"])
    c.add_argument("--requests-per-server", metavar="R",
                   help="client requests per interface server, %d to %d (default: 2)"
                   % LIMITS["requests_per_server"])
    c.add_argument("--capacity", metavar="C",
                   help="messages a key holds with the capacity fault on, %d to %d "
                        "(default: 1)" % LIMITS["capacity"])
    c.add_argument("--seed", metavar="N", help="seed of the names (default: 1)")
    c.add_argument("--draws", metavar="D",
                   help="name draws to check, each a different set of channel names and "
                        "hash seeds, 1 to 100 (default: 4; 1 checks the seed's first draw "
                        "only)")
    c.add_argument("--property", action="append", metavar="NAME",
                   help="check only this property (repeatable; default: all)")
    c.add_argument("--max-states", metavar="S",
                   help="stop cleanly after this many states per draw, 1 to 10^9 "
                        "(default: 2000000)")
    c.add_argument("--max-depth", metavar="D",
                   help="explore runs up to D steps long, 0 to 10^6 (default: no limit)")
    c.add_argument("--no-symmetry", action="store_true",
                   help="do not fold states that differ only by renaming workers or "
                        "requests (slower; shows the reduction)")
    c.add_argument("--json", metavar="PATH",
                   help="write the results as JSON: {mode, checks: [{router, config, "
                        "states, transitions, complete, properties, ...}]}; '-' prints it "
                        "on stdout instead of the tables")
    c.add_argument("--quiet", action="store_true", help="print nothing on stdout")
    c.set_defaults(func=cmd_check)
    return c


def _number(flag: str, text: Any, source: str = "") -> int:
    _, lo, hi = _NUMBERS[flag]
    try:
        v = int(text) if not isinstance(text, bool) else None
    except (TypeError, ValueError):
        v = None
    if v is None or not lo <= v <= hi:
        where = f" (from {source})" if source else ""
        raise CheckError(f"{flag} {text!r}{where}: must be an integer from {lo} to {hi}")
    return v


def _faults(text: str | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_FAULTS
    names = [f.strip() for f in text.split(",")]
    if names != [""] and "" in names:
        raise CheckError(f"--faults {text!r}: an empty name between commas; give fault "
                         f"names separated by single commas; allowed: {', '.join(FAULTS)}")
    names = [f for f in names if f]
    if names == ["none"]:
        return ()
    if names == ["all"]:
        return FAULTS
    if not names:
        raise CheckError(f"--faults {text!r}: give fault names separated by commas, "
                         f"'none' or 'all'; allowed: {', '.join(FAULTS)}")
    for f in names:
        if f in ("none", "all"):
            raise CheckError(f"--faults {text!r}: {f!r} stands alone; give it by itself, "
                             f"or only fault names from: {', '.join(FAULTS)}")
        if f not in FAULTS:
            raise CheckError(f"--faults {f!r} is unknown; allowed: {', '.join(FAULTS)}, "
                             "or none, or all")
    if len(set(names)) != len(names):
        raise CheckError(f"--faults {text!r}: names a fault twice")
    return tuple(f for f in FAULTS if f in names)   # the canonical order


def _properties(names: list[str] | None) -> tuple[str, ...]:
    if not names:
        return MODEL_PROPERTIES
    for n in names:
        if n not in MODEL_PROPERTIES:
            raise CheckError(f"--property {n!r} is unknown; allowed: "
                             f"{', '.join(MODEL_PROPERTIES)}")
    return tuple(n for n in MODEL_PROPERTIES if n in names)


def _routers(names: list[str] | None, fallback: list[str]) -> list[str]:
    routers = list(dict.fromkeys(names)) if names else fallback
    for r in routers:
        if r not in PROFILE_NAMES:
            raise RouterError(f"--router {r!r} is unknown; allowed: {', '.join(PROFILE_NAMES)}")
        make_router(r)  # a missing optional package is a usage error, before any work
    return routers


def settings(args: argparse.Namespace) -> tuple[list[str], Config, dict]:
    """Validate the arguments: the routers, the base `Config` and the search options.
    Raises `CheckError`, `RouterError` or `ScenarioError` (all one line)."""
    values: dict[str, Any] = {k: v for k, v in DEFAULTS.items()}
    sources: dict[str, str] = {}
    fallback = [r for r in PROFILE_NAMES if not r.startswith("live:") or live_available()]
    if args.scenario is not None:
        from sim.scenario import load_scenario, read_scenario_data
        sc = load_scenario(args.scenario)
        data, _ = read_scenario_data(args.scenario)
        # Only what the file says: a key it leaves out keeps check's small default,
        # not the simulation's (20 workers would not finish).
        for key, field in (("shards", "shards"), ("interface_servers", "servers"),
                           ("workers", "workers"), ("seed", "seed")):
            if key in data:
                values[field] = getattr(sc, key)
                sources[field] = f"{key} in {args.scenario}"
        if "router" in data:
            fallback = [sc.router]
        ignored = [k for k in ("faults", "processes", "actors", "steps", "topology")
                   if data.get(k)]  # what a user might expect check to honour
        if ignored:
            Console(stderr=True).print(
                f"note: check reads router, shards, interface_servers, workers and seed "
                f"from {args.scenario}; it ignores its {', '.join(ignored)} (faults come "
                "from --faults)", highlight=False, soft_wrap=True)
    flags = {"--servers": args.servers, "--workers": args.workers, "--shards": args.shards,
             "--requests-per-server": args.requests_per_server,
             "--capacity": args.capacity, "--seed": args.seed, "--draws": args.draws,
             "--max-states": args.max_states, "--max-depth": args.max_depth}
    for flag, (field, _, _) in _NUMBERS.items():
        text = flags[flag]
        if text is not None:
            values[field] = _number(flag, text)
        elif field in sources:
            values[field] = _number(flag, values[field], sources[field])
    routers = _routers(args.router, fallback)
    base = Config(router=routers[0], servers=values["servers"], workers=values["workers"],
                  shards=values["shards"], requests_per_server=values["requests_per_server"],
                  faults=_faults(args.faults), seed=values["seed"],
                  capacity=values["capacity"])
    search = {"draws": values["draws"], "max_states": values["max_states"],
              "max_depth": values.get("max_depth"), "properties": _properties(args.property),
              "symmetry": not args.no_symmetry}
    if args.json is not None:
        check_output_path(args.json, inputs=[args.scenario or ""])
    requests = base.servers * base.requests_per_server
    if requests > LARGE["requests"] or base.workers > LARGE["workers"]:
        Console(stderr=True).print(
            f"note: {base.servers} interface servers x {base.requests_per_server} requests "
            f"and {base.workers} workers is beyond what an exhaustive search finishes "
            f"quickly (the default, 2 x 2 requests and 2 workers, takes seconds per "
            f"router); this may run "
            f"for hours: --max-states (now {search['max_states']:,} per draw) caps each "
            "search and says what it covered, --draws 1 checks one name draw",
            highlight=False, soft_wrap=True)
    return routers, base, search


def cmd_check(args: argparse.Namespace) -> int:
    """Run ``shardlab check``; returns the exit code (0: checked, whatever the verdicts)."""
    routers, base, search = settings(args)
    err = Console(stderr=True)
    results = []
    if err.is_terminal and not args.quiet:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            for r in routers:
                task = bar.add_task(r)

                def show(draw, n, t, d, task=task, r=r):
                    bar.update(task, description=f"{r}: draw {draw + 1}/{search['draws']}, "
                               f"{n:,} states, {t:,} transitions, depth {d}")
                results.append(check(base.replace(router=r), progress=show, **search))
    else:
        results = [check(base.replace(router=r), **search) for r in routers]

    if args.json is not None:
        write_json_atomic(args.json, {"mode": "check", "checks": results},
                          inputs=[args.scenario] if args.scenario else [])
    if not args.quiet and args.json != STDOUT:
        out = Console() if sys.stdout.isatty() else Console(width=160)
        if len(results) == 1:
            _print_one(out, results[0])
        else:
            _print_table(out, results)
    return 0


def _print_table(out: Console, results: list[dict]) -> None:
    out.print(verdict_table(results, "shardlab check: " + config_line(results[0])))
    for r in results:
        for name, e in r["properties"].items():
            if e["holds"] is False:
                how = ("the run ends with " + "; ".join(e["ending"]) if e.get("ending")
                       else "at: " + e["counterexample"][-1]["text"])
                out.print(f"{r['router']}: {name} broken in {e['length']} steps "
                          f"(draw {e['draw']}); {how}", highlight=False, markup=False)
    incomplete = [r["router"] for r in results if not r["complete"]]
    if incomplete:
        out.print("not complete (a limit stopped the search): " + ", ".join(incomplete),
                  highlight=False)
    out.print("a router's full counterexamples: shardlab check --router NAME",
              highlight=False)


def _print_one(out: Console, r: dict) -> None:
    c = r["config"]
    out.print(property_table(r))
    out.print(f"coverage: {r['coverage']}", highlight=False)
    sym = r["symmetry"]
    if sym["on"] and sym["renamings_per_state"] > 1:
        groups = sym["interchangeable_workers"] + sym["interchangeable_requests"]
        out.print("symmetry: " + "; ".join(", ".join(g) for g in groups)
                  + f" interchangeable (up to {sym['renamings_per_state']} renamings "
                  "folded into one state)", highlight=False)
    cases = [(n, e["counterexample"], e["draw"], e.get("ending"))
             for n, e in r["properties"].items() if e["counterexample"]]
    loss = r.get(LOSS_WITH_FAULTS)
    if loss and loss["example"] and not r["properties"].get("no_silent_loss", {}).get(
            "counterexample"):
        cases.append((LOSS_WITH_FAULTS, loss["example"], loss["draw"], loss["ending"]))
    for name, steps, draw, ending in cases:
        names = next(d["names"] for d in r["draws"] if d["draw"] == draw)
        out.print()
        out.print(f"[bold]{name}[/bold]: shortest counterexample, {len(steps)} steps "
                  f"(draw {draw}: " + ", ".join(f"{k} = {v}" for k, v in names.items())
                  + ")", highlight=False)
        for line in steps_lines(steps):
            out.print("  " + line, highlight=False, markup=False)
        if ending:
            out.print("  the run ends here: " + "; ".join(ending), highlight=False,
                      markup=False)
        out.print(sequence_diagram(steps, c["servers"], c["shards"], c["workers"]))
