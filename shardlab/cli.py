"""The ``shardlab`` command line: run scenarios and show where channels go.

Bad input of any kind (a scenario file, a flag, a channel name) ends with one line on
stderr that names the key, the value and what is allowed, and exit code 2. Output
files are written whole (to a temporary file, then renamed) or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from layer import names
from layer.routing import PROFILE_NAMES, RouterError, live_available, make_router
from sim.ledger import FATES
from sim.scenario import ScenarioError, load_scenario

__all__ = ["main"]

_LOSSES = ("expired", "lost_in_crash", "rejected_full", "dropped_by_dead_worker",
           "orphaned", "unreachable")


class UsageError(Exception):
    """Bad input from the command line: one line, exit code 2."""


# -- helpers -------------------------------------------------------------------------

def _positive_int(flag: str, lo: int = 1, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo or (hi is not None and v > hi):
            rng = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {rng}")
        return v
    return parse


def _router_name(text: str) -> str:
    if text not in PROFILE_NAMES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is unknown; allowed: {', '.join(PROFILE_NAMES)}")
    return text


def check_output_path(path: str, flag: str = "--json") -> str:
    """Fail early (before any work) on an output path that cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{flag} {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r}: is a directory; give a file name")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{flag} {path!r}: directory {directory!r} is not writable")
    return directory


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` whole, or leave ``path`` untouched."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    directory = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=".shardlab-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _stdout_console() -> Console:
    """The terminal's width on a terminal; wide enough for whole rows in a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _default_routers() -> list[str]:
    return [r for r in PROFILE_NAMES if not r.startswith("live:") or live_available()]


# -- shardlab run ----------------------------------------------------------------------

def _fmt_latency(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def _run_table(results: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("router", "requests", "responses", "delivered", "misrouted", "expired",
                "other", "p50", "p99", "properties"):
        t.add_column(col, justify="left" if col in ("router", "properties") else "right",
                     no_wrap=col != "properties")
    for r in results:
        sent = r["sent"]
        resp = r["fates_by_kind"]["response"]
        f = r["fates"]
        n_resp = max(1, sent["response"])
        other = sum(f[k] for k in _LOSSES if k != "expired") + f["duplicate"]
        broken = [name for name, v in r["invariants"].items() if not v["holds"]]
        t.add_row(
            r["router"], str(sent["request"]), str(sent["response"]),
            f"{resp['delivered']} {100 * resp['delivered'] / n_resp:3.0f}%",
            f"{f['misrouted']} {100 * resp['misrouted'] / n_resp:3.0f}%",
            str(f["expired"]), str(other),
            _fmt_latency(r["latency_s"]["p50"]), _fmt_latency(r["latency_s"]["p99"]),
            "[red]✗ " + ", ".join(broken) + "[/red]" if broken else "[green]all hold[/green]",
        )
    return t


def _notes(results: list[dict[str, Any]]) -> list[str]:
    out = ["delivered and misrouted: responses (share of responses sent); other: "
           "lost_in_crash, rejected_full, dropped_by_dead_worker, orphaned, unreachable, "
           "duplicate (all kinds); latency: client request to response, delivered ones"]
    for r in results:
        name = r["router"]
        for prop, v in r["invariants"].items():
            if v["holds"]:
                continue
            first = v["first_violation"] or {}
            line = f"{name}: {prop} broken {v['violations']} times"
            if prop == "rendezvous" and first:
                line += (f"; first at t={first['time']} s: {first['sender']} wrote "
                         f"{first['channel']} to {first['shard_written']}, its owner "
                         f"listens on {', '.join(first['shards_listened']) or 'nothing'}")
            out.append(line)
        full = r["channel_full_errors"]
        if full["response"] and r["fates_by_kind"]["response"]["misrouted"]:
            out.append(f"{name}: workers got ChannelFull on {full['response']} replies: "
                       "misrouted replies fill the owner's key on shards it never reads")
        elif full["response"]:
            out.append(f"{name}: workers got ChannelFull on {full['response']} replies")
        if full["request"]:
            out.append(f"{name}: interface servers got ChannelFull on {full['request']} "
                       "requests (a shard's request queue was full)")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    from sim.runner import expected_requests, run_scenario

    if args.json:
        check_output_path(args.json)
    overrides: dict[str, Any] = {}
    if args.shards is not None:
        overrides["shards"] = args.shards
    if args.seed is not None:
        overrides["seed"] = args.seed
    base = load_scenario(args.scenario, overrides)
    if args.requests is not None:
        overrides["load"] = {**_load_table(args.scenario), "requests": args.requests}
        base = load_scenario(args.scenario, overrides)
    if args.router:
        routers = list(dict.fromkeys(args.router))
    elif args.scenario is None:
        routers = _default_routers()
    else:
        routers = [base.router]
    scenarios = [load_scenario(args.scenario, {**overrides, "router": r}) for r in routers]
    for r in routers:
        make_router(r)  # a missing optional package is a usage error, before any work

    console = Console(stderr=True)
    results = []
    show_progress = console.is_terminal and not args.quiet
    if show_progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} requests"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            for sc in scenarios:
                task = bar.add_task(sc.router, total=expected_requests(sc))
                results.append(run_scenario(
                    sc, progress=lambda n, task=task: bar.update(task, completed=n)))
                bar.update(task, completed=expected_requests(sc))
    else:
        results = [run_scenario(sc) for sc in scenarios]

    if args.json:
        write_json_atomic(args.json, {"mode": "sim", "runs": results})
    if not args.quiet:
        out = _stdout_console()
        sc = scenarios[0]
        out.print(_run_table(results, f"scenario {sc.name!r}: {sc.shards} shards, "
                             f"{sc.interface_servers} interface servers, {sc.workers} "
                             f"workers, seed {sc.seed}, reply by {sc.reply}"))
        for line in _notes(results):
            out.print(line, highlight=False)
    return 0


def _load_table(path: str | None) -> dict[str, Any]:
    from sim.scenario import read_scenario_data
    data, _ = read_scenario_data(path)
    load = data.get("load", {})
    return dict(load) if isinstance(load, dict) else {}


# -- shardlab route ---------------------------------------------------------------------

def cmd_route(args: argparse.Namespace) -> int:
    routers = list(dict.fromkeys(args.router)) if args.router else _default_routers()
    hosts = tuple(f"shard{i}" for i in range(args.hosts))
    rows = []
    for name in args.names:
        for rname in routers:
            router = make_router(rname)
            try:
                names.validate_channel_name(name, router.dialect)
            except names.ChannelNameError as e:
                if len(routers) == 1 or args.router:
                    raise UsageError(f"{e} (router {rname})") from None
                continue  # another generation's name: not routable by this profile
            rows.append({
                "name": name,
                "router": rname,
                "hosts": args.hosts,
                "kind": names.kind_of(name, router.dialect),
                "non_local_name": names.non_local_name(name)
                if router.dialect == "channels" else router.storage_key(name),
                "send_shard": router.send_shard(name, hosts),
                "listen_shards": list(router.listen_shards(name, hosts)),
                "group_send_shard": router.group_send_shard(name, hosts),
            })
        if not any(r["name"] == name for r in rows):
            raise UsageError(f"channel name {name!r} is valid under none of the routers "
                             f"asked for ({', '.join(routers)})")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table(title=f"where each channel goes with {args.hosts} host(s)", title_justify="left")
    for col in ("channel", "router", "kind", "stored under", "send to", "listens on",
                "group_send to", "meets?"):
        t.add_column(col, no_wrap=col in ("channel", "router"))
    for r in rows:
        specific = r["kind"] != names.NORMAL
        meets = ("yes" if r["send_shard"] in r["listen_shards"] else "[red]NO[/red]") \
            if specific else "any worker"
        send = str(r["send_shard"]) if specific else "random" \
            if r["router"] in ("channels-2015", "asgi_redis-1.0") else "round robin"
        listen = ", ".join(map(str, r["listen_shards"])) if specific else "any"
        t.add_row(r["name"], r["router"], r["kind"], r["non_local_name"], send, listen,
                  str(r["group_send_shard"]) if specific else "-", meets)
    _stdout_console().print(t)
    return 0


# -- parser -------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="shardlab",
        description="A lab for the sharding model of Django Channels' Redis channel "
                    "layer: run a deployment in simulation and see every message's "
                    "fate, or ask where a channel name is routed.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True,
                           parser_class=_Parser)

    r = sub.add_parser(
        "run", help="simulate a scenario and print a table of fates per router",
        description="Simulate a deployment and print, per router profile: messages sent, "
                    "responses delivered, misrouted, expired, other losses, latency and "
                    "which properties held. With no scenario and no --router, runs the "
                    "built-in default scenario (3 shards, 4 interface servers, 20 "
                    "workers, 200 requests/s for 60 s) once per profile.",
        epilog="router profiles: " + ", ".join(PROFILE_NAMES))
    r.add_argument("scenario", nargs="?", metavar="SCENARIO",
                   help="a TOML scenario file (default: the built-in scenario)")
    r.add_argument("--router", action="append", type=_router_name, metavar="NAME",
                   help="router profile to run (repeatable; default: the scenario's, or "
                        "every profile for the built-in scenario)")
    r.add_argument("--shards", type=_positive_int("--shards", 1, 64), metavar="N",
                   help="number of Redis shards (overrides the scenario)")
    r.add_argument("--requests", type=_positive_int("--requests", 1), metavar="N",
                   help="stop the load after N client requests (overrides the duration)")
    r.add_argument("--seed", type=_positive_int("--seed", 0, 2**63 - 1), metavar="N",
                   help="seed of every random stream (overrides the scenario)")
    r.add_argument("--json", metavar="PATH",
                   help="write the whole result as JSON (no wall-clock figures in it)")
    r.add_argument("--quiet", action="store_true", help="print no table")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser(
        "route", help="show where channel names go, per router",
        description="For each channel name: its kind, the key it is stored under, the "
                    "shard a send() goes to, the shard(s) its receiver listens on, the "
                    "shard a group_send() writes to, and whether send and listener meet. "
                    "Normal channels rotate or go at random; their send shard is the "
                    "first choice of a fresh process.",
        epilog="router profiles: " + ", ".join(PROFILE_NAMES))
    q.add_argument("names", nargs="+", metavar="NAME", help="channel names")
    q.add_argument("--router", action="append", type=_router_name, metavar="NAME",
                   help="router profile (repeatable; default: every profile)")
    q.add_argument("--hosts", type=_positive_int("--hosts", 1, 64), default=3, metavar="N",
                   help="number of hosts in the layer's host list (default: 3)")
    q.add_argument("--json", action="store_true",
                   help="print JSON: a list of {name, router, hosts, kind, "
                        "non_local_name, send_shard, listen_shards, group_send_shard}")
    q.set_defaults(func=cmd_route)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ScenarioError, RouterError, names.ChannelNameError, UsageError) as e:
        print(f"shardlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shardlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
