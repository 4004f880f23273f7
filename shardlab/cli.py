"""The ``shardlab`` command line: run scenarios and show where channels go.

Bad input of any kind (a scenario file, a flag, a channel name) ends with one line on
stderr that names the key, the value and what is allowed, and exit code 2. Output
files are written whole (to a temporary file, then renamed) or not at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from layer import names
from layer.routing import PROFILE_NAMES, RouterError, live_available, make_router
from experiments import ExperimentError
from experiments.cli import add_experiment_parser
from model import CheckError
from model.cli import add_check_parser
from shardlab.output import (STDOUT, UsageError, check_output_path, int_arg, router_arg,
                             write_json_atomic)
from shardlab.replay import add_compare_parser, add_replay_parser
from shardlab.scenario_args import add_override_args, load_with_overrides
from sim.scenario import ScenarioError, load_scenario

__all__ = ["main"]

_LOSSES = ("expired", "lost_in_crash", "rejected_full", "dropped_by_dead_worker",
           "orphaned", "unreachable")


# -- helpers -------------------------------------------------------------------------

_MIN_WIDTH = 150


def _stdout_console(*renderables) -> Console:
    """Wide enough for whole rows of ``renderables``: a narrow terminal wraps lines
    rather than lose digits to an ellipsis."""
    console = Console()
    need = max([_MIN_WIDTH] + [Console(width=1000).measure(r).maximum
                               for r in renderables])
    if console.width < need:
        console = Console(width=need)
    return console


def _default_routers() -> list[str]:
    return [r for r in PROFILE_NAMES if not r.startswith("live:") or live_available()]


# -- shardlab run ----------------------------------------------------------------------

def _fmt_latency(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def _pct(part: int, whole: int) -> str:
    """A share that never rounds a shortfall up to 100 % (or a trace down to 0 %)."""
    if whole == 0:
        return "-"
    p = 100.0 * part / whole
    if part < whole:
        p = min(p, 99.9)
    if part > 0:
        p = max(p, 0.1)
    return f"{p:.1f}%" if p < 100 else "100%"


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}" + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


_ROW_LEGEND = (
    "requests, responses: messages sent. lost req: requests with a loss fate.",
    "delivered, misrouted, other lost: responses (share of responses sent); other lost:"
    " expired, lost_in_crash, rejected_full, dropped_by_dead_worker, orphaned, unreachable.",
    "in flight: still queued or being served at the end. p50, p99: client request to"
    " delivered response.",
)


def _run_table(results: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("router", "requests", "lost req", "responses", "delivered", "misrouted",
                "other lost", "in flight", "p50", "p99", "properties"):
        t.add_column(col, justify="left" if col in ("router", "properties") else "right",
                     no_wrap=True)
    for r in results:
        sent = r["sent"]
        req, resp = r["fates_by_kind"]["request"], r["fates_by_kind"]["response"]
        lost_req = sum(v for k, v in req.items()
                       if k not in ("delivered", "in_flight", "duplicate"))
        other = sum(v for k, v in resp.items()
                    if k not in ("delivered", "misrouted", "in_flight", "duplicate"))
        broken = [name for name, v in r["invariants"].items() if not v["holds"]]
        if broken:
            props = "[red]✗ " + ", ".join(broken) + "[/red]"
        elif sent["response"] == 0:
            props = "[yellow]no responses to check[/yellow]"
        else:
            props = "[green]all hold[/green]"
        t.add_row(
            r["router"], str(sent["request"]), str(lost_req), str(sent["response"]),
            f"{resp['delivered']} {_pct(resp['delivered'], sent['response'])}",
            f"{resp['misrouted']} {_pct(resp['misrouted'], sent['response'])}",
            str(other), str(r["fates"]["in_flight"]),
            _fmt_latency(r["latency_s"]["p50"]), _fmt_latency(r["latency_s"]["p99"]),
            props)
    return t


def _notes(results: list[dict[str, Any]]) -> list[str]:
    out = list(_ROW_LEGEND)
    for r in results:
        name = r["router"]
        req = r["fates_by_kind"]["request"]
        if req["misrouted"]:
            out.append(f"{name}: {_plural(req['misrouted'], 'request')} misrouted "
                       "(published where no worker listens)")
        if r["fates"]["duplicate"]:
            out.append(f"{name}: {_plural(r['fates']['duplicate'], 'message')} delivered "
                       "more than once (a pub/sub publish reaches every subscriber)")
        for prop, v in r["invariants"].items():
            if v["holds"]:
                continue
            first = v["first_violation"] or {}
            line = f"{name}: {prop} broken {_plural(v['violations'], 'time')}"
            if prop == "rendezvous" and first:
                line += (f"; first at t={first['time']} s: {first['sender']} wrote "
                         f"{first['channel']} to {first['shard_written']}, its listener "
                         f"is on {', '.join(first['shards_listened']) or 'no shard'}")
            out.append(line)
        full = r["channel_full_errors"]
        if full["scripted"]:
            out.append(f"{name}: senders got ChannelFull on "
                       f"{_plural(full['scripted'], 'scripted send')}")
        if full["response"] and r["fates_by_kind"]["response"]["misrouted"]:
            out.append(f"{name}: workers got ChannelFull on "
                       f"{_plural(full['response'], 'reply')}: misrouted replies fill "
                       "the owner's key on shards it never reads")
        elif full["response"]:
            out.append(f"{name}: workers got ChannelFull on "
                       f"{_plural(full['response'], 'reply')}")
        if full["request"]:
            out.append(f"{name}: interface servers got ChannelFull on "
                       f"{_plural(full['request'], 'request')} (a request queue was full)")
    return out


def _script_table(results: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("router", "messages", "delivered", "misrouted", "rejected_full",
                "other lost", "in flight", "properties"):
        t.add_column(col, justify="left" if col in ("router", "properties") else "right",
                     no_wrap=True)
    for r in results:
        f = r["fates_by_kind"]["scripted"]
        n = r["sent"]["scripted"]
        other = sum(v for k, v in f.items() if k not in
                    ("delivered", "misrouted", "rejected_full", "in_flight"))
        broken = [name for name, v in r["invariants"].items() if not v["holds"]]
        t.add_row(r["router"], str(n), f"{f['delivered']} {_pct(f['delivered'], n)}",
                  f"{f['misrouted']} {_pct(f['misrouted'], n)}", str(f["rejected_full"]),
                  str(other), str(f["in_flight"]),
                  "[red]✗ " + ", ".join(broken) + "[/red]" if broken
                  else "[green]all hold[/green]")
    return t


def _trace_table(r: dict[str, Any]) -> Table:
    """Each scripted message: where it was written and what became of it (identical
    consecutive rows, such as a step with count = 5, are shown once with ×N)."""
    t = Table(title=f"{r['router']}: what happened to each scripted message",
              title_justify="left")
    for col in ("step", "at", "actor", "op", "channel", "shard", "fate", "fate at",
                "received"):
        t.add_column(col, no_wrap=True, justify="right" if col in ("step", "at",
                                                                   "fate at") else "left")
    rows: list[list[Any]] = []
    shown = 0
    for e in r["trace"]:
        key = [e["step"], e["at"], e["actor"], e["op"],
               e["channel"] or f"group {e['group']}", e["shard"] or "-", e["fate"],
               e["fate_at"], e["deliveries"]]
        if rows and rows[-1][0] == key:
            rows[-1][1] += 1
        else:
            rows.append([key, 1])
    hidden = max(0, len(rows) - _TRACE_ROWS)
    for key, n in rows[:_TRACE_ROWS]:
        step, at, actor, op, channel, shard, fate, fate_at, got = key
        style = "green" if fate == "delivered" else "red" if fate in (
            "misrouted", "rejected_full", "expired", "lost_in_crash", "orphaned",
            "unreachable", "dropped_by_dead_worker") else "yellow"
        t.add_row(str(step), f"{at:.6g}", actor, op + (f" ×{n}" if n > 1 else ""),
                  channel, shard, f"[{style}]{fate}[/{style}]",
                  "-" if fate_at is None else f"{fate_at:.6g}", str(got))
    omitted = hidden + (1 if r.get("trace_omitted") else 0)
    if omitted:
        t.caption = (f"{hidden} more rows; " if hidden else "") + (
            f"{r['trace_omitted']} messages beyond the first 10 000 not traced; "
            if r.get("trace_omitted") else "") + "the whole trace is in --json"
    return t


_TRACE_ROWS = 200


def _load_notes(r: dict[str, Any], scripted: bool) -> list[str]:
    out = []
    name = r["router"]
    load = r["shard_load"]
    if load["hot_shards"]:
        writes = ", ".join(f"{s} {n}" for s, n in r["shard_writes"].items())
        out.append(f"{name}: hot shard {', '.join(load['hot_shards'])}: imbalance "
                   f"{load['imbalance']:g} (max over mean writes per shard; above 1.5 "
                   f"flags a hot shard); writes: {writes}")
    if r["queued_at_end"]:
        def top(keys: dict[str, int]) -> str:
            items = sorted(keys.items(), key=lambda kv: (-kv[1], kv[0]))
            more = f", {len(items) - 3} more keys" if len(items) > 3 else ""
            return ", ".join(f"{k} {n}" for k, n in items[:3]) + more
        left = "; ".join(f"{s}: {top(keys)}" for s, keys in r["queued_at_end"].items())
        out.append(f"{name}: left queued at the end: {left}")
    x = r["cross_channel_full"]
    if x["count"]:
        first = x["first"]
        out.append(f"{name}: cross-channel blocking: {_plural(x['count'], 'message')} "
                   f"refused because other channels filled the shared key; first at "
                   f"t={first['time']} s: {first['channel']} refused, key {first['key']} "
                   f"on {first['shard']} full of {', '.join(first['filled_by'])} "
                   f"({first['queued']} queued)")
    return out


def _title(sc) -> str:
    if sc.interface_servers or not sc.steps:
        parts = [f"scenario {sc.name!r}: {_plural(sc.shards, 'shard')}", f"{sc.interface_servers} "
                 "interface servers", f"{sc.workers} workers", f"seed {sc.seed}",
                 f"reply by {sc.reply}"]
    else:
        parts = [f"scenario {sc.name!r}: {_plural(sc.shards, 'shard')}",
                 _plural(len(sc.actors), "scripted process"), _plural(len(sc.steps), "step"),
                 f"capacity {sc.capacity}", f"expiry {sc.expiry:g} s"]
    if sc.topology.clusters > 1:
        parts.append(f"{sc.topology.clusters} clusters ({sc.topology.responses} "
                     "response ring)")
    if sc.faults:
        parts.append(_plural(len(sc.faults), "fault"))
    mixed = [o.name for o in sc.processes if o.router and o.router != sc.router] + [
        a.name for a in sc.actors if a.router and a.router != sc.router]
    if mixed:
        total = sc.interface_servers + sc.workers + len(sc.actors)
        parts.append(f"{len(mixed)} of {total} processes on another router than the "
                     "row's")
    other_hosts = [o.name for o in sc.processes if o.hosts] + [
        a.name for a in sc.actors if a.hosts]
    if other_hosts:
        parts.append(f"{_plural(len(other_hosts), 'process')} with own host lists")
    return ", ".join(parts)


def cmd_run(args: argparse.Namespace) -> int:
    from sim.runner import expected_requests, run_scenario

    if args.json is not None:
        check_output_path(args.json, inputs=[args.scenario or ""])
    base, overrides = load_with_overrides(args)
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
                    sc, progress=lambda n, task=task: bar.update(task, completed=n),
                    placement=args.placement))
                bar.update(task, completed=expected_requests(sc))
    else:
        results = [run_scenario(sc, placement=args.placement) for sc in scenarios]

    if args.json is not None:
        write_json_atomic(args.json, {"mode": "sim", "runs": results},
                          inputs=[args.scenario or ""])
    if not args.quiet and args.json != STDOUT:
        sc = scenarios[0]
        scripted = bool(sc.steps)
        if sc.interface_servers or not scripted:
            table = _run_table(results, _title(sc))
            notes = _notes(results)
        else:
            table = _script_table(results, _title(sc))
            notes = [line for line in _notes(results)[len(_ROW_LEGEND):]]
        traces = [_trace_table(r) for r in results] if scripted else []
        out = _stdout_console(table, *traces)
        out.print(table)
        for r in results:
            notes += _load_notes(r, scripted)
        for line in notes:
            out.print(line, highlight=False, soft_wrap=True)
        for t in traces:
            out.print(t)
    return 0


# -- shardlab route ---------------------------------------------------------------------

def _hash_seeds(text: str) -> tuple[int, int]:
    try:
        a, b = text.split(",")
        seeds = (int(a), int(b))
    except ValueError:
        seeds = None
    if seeds is None or not all(0 <= x <= 4294967295 for x in seeds):
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be SENDER,LISTENER: two integers from 0 to 4294967295")
    return seeds


def cmd_route(args: argparse.Namespace) -> int:
    if args.json is not None:
        check_output_path(args.json)
    routers = list(dict.fromkeys(args.router)) if args.router else _default_routers()
    hosts = tuple(f"shard{i}" for i in range(args.hosts))
    send_seed, listen_seed = args.hash_seeds
    rows, skipped = [], []
    for name in args.names:
        for rname in routers:
            # Two processes, as in a deployment: the sender and the listener.
            sender = make_router(rname, hash_seed=send_seed)
            listener = make_router(rname, hash_seed=listen_seed)
            try:
                names.validate_channel_name(name, sender.dialect)
            except names.ChannelNameError as e:
                if args.router:
                    raise UsageError(f"{e} (router {rname})") from None
                skipped.append(f"{name} under {rname}: {e}")
                continue
            rule = sender.send_rule(name)
            send = sender.send_shard(name, hosts) if rule == "hash" else None
            listen = list(listener.listen_shards(name, hosts))
            specific = sender.is_specific(name)
            rows.append({
                "name": name, "router": rname, "hosts": args.hosts,
                "kind": names.kind_of(name, sender.dialect),
                "stored_under": sender.storage_key(name),
                "send_rule": rule, "send_shard": send, "listen_shards": listen,
                "group_send_shard": sender.group_send_shard(name, hosts)
                if specific and rule == "hash" else None,
                "meets": (send in listen) if specific and send is not None else None,
                "hash_seeds": [send_seed, listen_seed]
                if rname == "channels_redis-pubsub-3.3" else None,
            })
        if not any(r["name"] == name for r in rows):
            raise UsageError(f"channel name {name!r} is valid under none of the routers "
                             f"asked for ({', '.join(routers)})")
    err = Console(stderr=True)
    for line in skipped:
        err.print(f"not routable: {line}", highlight=False, soft_wrap=True)
    if args.json is not None:
        write_json_atomic(args.json, rows)
        return 0
    t = Table(title=f"where each channel goes with {args.hosts} host(s)", title_justify="left")
    for col in ("channel", "router", "kind", "stored under", "send to", "listens on",
                "group_send to", "meets?"):
        t.add_column(col, no_wrap=True)
    n = args.hosts
    for r in rows:
        specific = r["kind"] != names.NORMAL or r["send_rule"] == "hash"
        if r["send_rule"] != "hash":
            send = r["send_rule"]
        else:
            send = f"shard{r['send_shard']}"
        if not specific:
            meets, listen = "any worker", "any"
        else:
            listen = ", ".join(f"shard{i}" for i in r["listen_shards"])
            if r["meets"] is None:
                meets = f"[red]1 in {n}[/red]" if n > 1 else "yes"
            else:
                meets = "yes" if r["meets"] else "[red]NO[/red]"
        group = "-" if r["group_send_shard"] is None else f"shard{r['group_send_shard']}"
        t.add_row(r["name"], r["router"], r["kind"], r["stored_under"], send, listen,
                  group, meets)
    out = _stdout_console(t)
    out.print(t)
    if any(r["router"] == "channels_redis-pubsub-3.3" for r in rows):
        out.print(f"channels_redis-pubsub-3.3: sender hash seed {send_seed}, listener "
                  f"hash seed {listen_seed} (--hash-seeds)", highlight=False)
    return 0


# -- parser -------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"shardlab: error: {message} (see '{self.prog} --help')\n")


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
    r.add_argument("--router", action="append", type=router_arg, metavar="NAME",
                   help="router profile to run (repeatable; default: the scenario's, or "
                        "every profile for the built-in scenario)")
    add_override_args(r)
    r.add_argument("--json", metavar="PATH",
                   help="write the whole result as JSON (no wall-clock figures in it); "
                        "'-' prints it on stdout instead of the table")
    r.add_argument("--placement", action="store_true",
                   help="add to the JSON which shard every response was written to "
                        "(by channel name), for an exact per-name 'shardlab compare' "
                        "with a replay of the same scenario")
    r.add_argument("--quiet", action="store_true", help="print no table")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser(
        "route", help="show where channel names go, per router",
        description="For each channel name and router profile: its kind, the key it is "
                    "stored under, the shard a send() goes to (or its rule: round robin "
                    "or random), the shard(s) its receiver listens on, the shard a "
                    "group_send() writes to, and whether a sender and the listener "
                    "meet. Sender and listener are two processes of the same profile. "
                    "Names a profile cannot route (another generation's syntax) are "
                    "listed on stderr.",
        epilog="router profiles: " + ", ".join(PROFILE_NAMES))
    q.add_argument("names", nargs="+", metavar="NAME", help="channel names")
    q.add_argument("--router", action="append", type=router_arg, metavar="NAME",
                   help="router profile (repeatable; default: every profile)")
    q.add_argument("--hosts", type=int_arg(1, 64), default=3, metavar="N",
                   help="number of hosts in the layer's host list (default: 3)")
    q.add_argument("--hash-seeds", type=_hash_seeds, default=(1, 2),
                   metavar="SENDER,LISTENER",
                   help="PYTHONHASHSEED of the sending and the listening process, for "
                        "channels_redis-pubsub-3.3 (default: 1,2)")
    q.add_argument("--json", nargs="?", const=STDOUT, metavar="PATH",
                   help="JSON instead of the table, on stdout (or written to PATH, as "
                        "the other commands' --json): a list of {name, router, hosts, "
                        "kind, stored_under, send_rule, send_shard (null unless hashed), "
                        "listen_shards, group_send_shard, meets, hash_seeds}; give it "
                        "after the names")
    q.set_defaults(func=cmd_route)

    add_check_parser(sub)
    add_experiment_parser(sub)
    add_replay_parser(sub)
    add_compare_parser(sub)
    return p


def _innermost(parser: argparse.ArgumentParser,
               args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the deepest subcommand ``args`` chose."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None:
            return parser
        parser = subs[0].choices[chosen]


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stdout is None:  # started with stdout closed
        sys.stdout = open(os.devnull, "w")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand they were given to, with its --help
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except (ScenarioError, RouterError, CheckError, ExperimentError,
            names.ChannelNameError, UsageError) as e:
        print(f"shardlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shardlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, and keep the interpreter's
        # final flush from complaining.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        print(f"shardlab: error: cannot write output: {e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
