"""``shardlab replay``: a scenario on real Redis servers; ``shardlab compare``: two
results side by side.

Replay
------
Every interface server and worker runs as its own operating-system process
(``"processes": "separate"`` in the result; `shardlab.replay_proc` has the processes,
the fault timeline and the fate rules), each with its own channel-layer object:
`layer.redis.RedisChannelLayer` (``--stack shardlab``, placed by ``--router``) or the
installed ``channels_redis.core.RedisChannelLayer`` (``--stack channels_redis``, whose
own code places every message: the channels_redis-4 rule). Names and timing come from
the simulator's seeded streams: interface server ``ifaceI`` has the simulator's
prefix ``http.response.LETTERS!`` (``client_prefix`` LETTERS, a new draw after each
restart) and names its replies ``prefix + layer.names.local_token(n)``; arrivals are
the simulator's (the ``SEED/load`` stream, same interface server picks, the next one
up while one is down), and service times the workers' (``SEED/workerJ/service``),
every duration multiplied by ``--time-scale`` (wall seconds per scenario second),
the layers' blocking-pop timeout included. At most `MAX_PROCESSES` interface servers
plus workers (one OS process each).

Keeping up: a run that falls behind its plan (process startup, a slow restart, a time
scale the machine cannot follow) still offers every planned request, later: the drain
lasts the scenario's ``drain`` (at least `shardlab.replay_proc.MIN_DRAIN_S` wall
seconds) after the last request actually sent, and the run may go on up to
`shardlab.replay_proc.MAX_BEHIND_S` past its planned end to send them. How far behind
it fell is under ``wall`` (``late_sends``, ``max_send_lateness_s``, ``not_sent``,
``overrun_s``) and in ``warnings``, which the table prints as WARNING lines; fates
are what happened on the scaled clock (a reply later than ``client_timeout`` scaled is
``orphaned``), never a guess.

Faults are applied for real: a shard's redis-server is killed (SIGKILL) and restarted
empty on its port (only with servers the replay started, ``--redis-servers``); an
interface server or worker process is killed and started again; a partition or a host
change is sent to the processes, which rebuild their layer. Fates come from what the
processes saw and from inspecting the servers afterwards (a reply written to a shard
its owner does not listen on is misrouted; one found nowhere and older than
``expiry`` expired); every message sent gets exactly one fate, or the replay stops
with an error. Latencies (``latency_s``) are in scenario seconds (wall latency divided
by the time scale); wall-clock figures are under ``wall`` only. ``faults_applied``
gives each action's real time (``at``, scenario seconds) beside ``planned_at``, and
for a restart ``ready_at`` and whether it stayed down longer than the fault's
duration. Each run also records ``placement`` (response channel -> shard written: a
send that reached its shard, written or refused full, and not one to a shard that was
down or cut off, the set ``shardlab run --placement`` records), ``shard_load`` (writes
per shard and kind), which ``compare`` checks exactly, and ``queued_at_end`` (shard ->
key -> messages left, the simulator's shape). ``--redis`` URLs are checked before any
work: well formed, reachable, and one server and database per shard (by address and
by the server's ``run_id``). Not replayed (refused with one line):
scripted scenarios, reply by group, per-process overrides, clusters, and a shard crash
on servers given with ``--redis``.

Compare
-------
Per router in both results: each fate's share per kind, the difference and whether it
lies inside the 95 % sampling interval; latency side by side; and placement, exactly:
per channel name when both results hold ``placement`` (a replay, or ``shardlab run
--placement``), else the writes per shard and kind. Each file is validated once on read
(counts non-negative integers adding up to what was sent, latencies numbers, each
router once, placement shards named ``shardN``); what differs between the two runs
besides their mode (scenario, shards, seed, requests sent, settings) is printed as a
note and listed under ``not_comparable``: a finding about the inputs, so the exit
code stays 0.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import time
from typing import Any

from layer.routing import PROFILE_NAMES, ROUTERS, make_router
from sim.ledger import FATES
from sim.load import schedule
from shardlab.output import (STDOUT, UsageError, check_output_path, int_arg, router_arg,
                             write_json_atomic)
from shardlab.replay_proc import MAX_PROCESSES
from shardlab.scenario_args import add_override_args, load_with_overrides

__all__ = ["add_replay_parser", "cmd_replay", "replay_scenario", "add_compare_parser",
           "cmd_compare", "compare_results", "STACKS"]

STACKS = ("shardlab", "channels_redis")
#: Routers --stack shardlab replays: those that store in sorted sets (channels_redis
#: 2+, ``fixed``), the only storage the after-run inspection of the servers reads.
REPLAYABLE = tuple(n for n in PROFILE_NAMES
                   if n.startswith("live:") or ROUTERS[n]().storage == "sorted_set")
#: Routers --stack channels_redis accepts: the installed package's rule.
CHANNELS_REDIS_ROUTERS = ("channels_redis-4", "live:channels_redis")


# -- argument types ----------------------------------------------------------------------

def _scale(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and 0.001 <= v <= 1000):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number from 0.001 to 1000")
    return v


_URL_FORMS = "redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB] or unix://PATH[?db=DB]"


def server_identity(url: str) -> tuple:
    """Where ``url`` leads, as a comparable value: ``("tcp", host, port, db)`` or
    ``("unix", path, db)``. Raises ValueError with the reason for a URL that is not
    one of `_URL_FORMS` (a port outside 1-65535, a database that is not a
    non-negative integer, no host or path)."""
    import os
    from urllib.parse import parse_qs, urlsplit

    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("not a redis://, rediss:// or unix:// URL")
    u = urlsplit(url)
    query = parse_qs(u.query)
    if u.scheme == "unix":
        if not u.path:
            raise ValueError("no socket path")
        db_text = query.get("db", ["0"])[-1]
        where: tuple = ("unix", os.path.normpath(u.path))
    else:
        if not u.hostname:
            raise ValueError("no host")
        try:
            port = u.port
        except ValueError:
            port_text = u.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
            raise ValueError(f"port {port_text!r} is not an integer from 1 to "
                             "65535") from None
        if port is None:
            port = 6379
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not an integer from 1 to 65535")
        host = u.hostname.lower()
        host = "127.0.0.1" if host in ("localhost", "127.0.0.1") else host
        db_text = u.path[1:] if u.path not in ("", "/") else query.get("db", ["0"])[-1]
        where = ("tcp", host, port)
    if not (db_text.isascii() and db_text.isdigit()):
        raise ValueError(f"database {db_text!r} is not a non-negative integer")
    return (*where, int(db_text))


def _url(text: str) -> str:
    try:
        server_identity(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}; allowed: {_URL_FORMS} (PORT 1 "
                                         "to 65535, DB a non-negative integer)") from None
    return text


def check_urls(urls: list[str]) -> None:
    """One-line UsageError, before any work, when two ``--redis`` URLs name the same
    server and database (one server for two shards makes misroutes look delivered),
    or when a server cannot be used: unreachable, refusing the database (a DB index
    out of range), or the same server under two addresses (same ``run_id``)."""
    import redis

    seen: dict[tuple, str] = {}
    for url in urls:
        key = server_identity(url)
        if key in seen:
            raise UsageError(f"--redis {url}: the same server and database as --redis "
                             f"{seen[key]}; allowed: one server (or database) per shard")
        seen[key] = url
    ids: dict[tuple[str, int], str] = {}
    for url in urls:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()
            run_id = client.info("server").get("run_id")
        except redis.exceptions.ResponseError as e:
            raise UsageError(f"--redis {url}: the server refused it: {e}") from None
        except redis.exceptions.AuthenticationError as e:
            raise UsageError(f"--redis {url}: authentication failed: {e}") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                OSError) as e:
            raise UsageError(f"--redis {url}: cannot reach a Redis server: {e}") from None
        finally:
            client.close()
        key = (run_id, server_identity(url)[-1])
        if run_id and key in ids:
            raise UsageError(f"--redis {url}: the same server (run_id {run_id}) and "
                             f"database as --redis {ids[key]}; allowed: one server (or "
                             "database) per shard")
        ids[key] = url


# -- the replay itself ---------------------------------------------------------------------

#: Fault kinds a replay applies for real (all of sim.scenario.FAULT_KINDS).
REPLAYED_FAULTS = ("shard_crash", "worker_crash", "iface_crash", "partition", "host_change")


def refuse_unsupported(sc, servers_started: bool = True) -> None:
    """One-line UsageError for what a replay cannot do. ``servers_started``: the run
    started its own redis-servers (needed to crash a shard)."""
    for i, f in enumerate(sc.faults):
        if f.kind not in REPLAYED_FAULTS:
            raise UsageError(f"faults[{i}].kind {f.kind!r} cannot be replayed; replayed: "
                             f"{', '.join(REPLAYED_FAULTS)}")
        if f.kind == "shard_crash" and not servers_started:
            raise UsageError(f"faults[{i}].kind 'shard_crash' needs servers the replay "
                             "starts itself (to SIGKILL and restart): use --redis-servers N, "
                             "not --redis URL")
    if sc.steps or sc.actors:
        raise UsageError(f"scenario {sc.name!r} is scripted: scripted scenarios are not "
                         "replayed yet")
    if sc.interface_servers < 1 or sc.workers < 1:
        raise UsageError(f"scenario {sc.name!r}: interface_servers and workers must be "
                         ">= 1 to replay")
    if sc.reply != "send":
        raise UsageError(f"reply {sc.reply!r} is not replayed yet; allowed: 'send'")
    if sc.processes:
        raise UsageError("per-process overrides ([[processes]]) are not replayed yet")
    if sc.topology.clusters != 1:
        raise UsageError("clusters are not replayed yet; allowed: topology.clusters = 1")
    n = sc.interface_servers + sc.workers
    if n > MAX_PROCESSES:
        raise UsageError(f"interface_servers + workers = {sc.interface_servers} + "
                         f"{sc.workers} = {n}: a replay starts one OS process each; "
                         f"allowed: at most {MAX_PROCESSES}")


def replay_scenario(sc, urls: list[str], stack: str = "shardlab", time_scale: float = 1.0,
                    prefix: str = "asgi", progress=None, servers=None) -> dict[str, Any]:
    """Replay ``sc`` on the servers at ``urls`` (one per shard) and return its result;
    the keys under ``prefix`` are deleted before and after. ``servers`` (the
    `shardlab.servers.RedisServers` behind ``urls``) is needed for shard crashes."""
    from shardlab.replay_proc import ReplayRun

    refuse_unsupported(sc, servers_started=servers is not None)
    if len(urls) != sc.shards:
        raise UsageError(f"{len(urls)} Redis server(s) for {sc.shards} shard(s); give one "
                         "server per shard")
    if stack not in STACKS:
        raise UsageError(f"--stack {stack!r} is unknown; allowed: {', '.join(STACKS)}")
    if stack == "channels_redis" and sc.router not in CHANNELS_REDIS_ROUTERS:
        raise UsageError(f"--router {sc.router} with --stack channels_redis: the installed "
                         "package places messages by its own rule; allowed: "
                         f"{', '.join(CHANNELS_REDIS_ROUTERS)}")
    asyncio.run(_delete_prefix(urls, prefix))
    try:
        return ReplayRun(sc, urls, stack, time_scale, prefix, servers, progress).run()
    finally:
        asyncio.run(_delete_prefix(urls, prefix))


async def _delete_prefix(urls: list[str], prefix: str) -> None:
    import re

    from redis import asyncio as aioredis
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    for url in urls:
        client = aioredis.Redis.from_url(url)
        try:
            keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i:i + 1000])
        finally:
            await client.aclose()


# -- shardlab replay -----------------------------------------------------------------------

def cmd_replay(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from shardlab.cli import _load_notes, _notes, _run_table, _stdout_console, _title
    from sim.scenario import load_scenario

    if args.json is not None:
        check_output_path(args.json, inputs=[args.scenario or ""])
    if args.redis and args.redis_servers is not None:
        raise UsageError("give --redis URL... or --redis-servers N, not both")
    base, overrides = load_with_overrides(
        args, len(args.redis) if args.redis else args.redis_servers)
    routers = list(dict.fromkeys(args.router)) if args.router else [base.router]
    scenarios = [load_scenario(args.scenario, {**overrides, "router": r}) for r in routers]
    for sc in scenarios:
        refuse_unsupported(sc, servers_started=not args.redis)
        if args.stack == "channels_redis" and sc.router not in CHANNELS_REDIS_ROUTERS:
            raise UsageError(f"--router {sc.router} with --stack channels_redis: the "
                             "installed package places messages by its own rule; allowed: "
                             f"{', '.join(CHANNELS_REDIS_ROUTERS)}")
    if args.stack == "shardlab":
        bad = [r for r in routers if r not in REPLAYABLE]
        if bad:
            raise UsageError(f"--router {bad[0]}: the replay reads back sorted-set "
                             "storage only (layer.redis runs every profile, but the "
                             "replay's fate inspection does not read key_ttl lists or "
                             f"pub/sub yet); allowed: {', '.join(REPLAYABLE)}")
    else:
        make_router(routers[0])  # live:channels_redis without the package: a usage error
    if args.redis and len(args.redis) != base.shards:
        raise UsageError(f"--redis gives {len(args.redis)} server(s) for {base.shards} "
                         "shard(s); give one URL per shard")
    if args.redis_servers is not None and args.redis_servers != base.shards:
        raise UsageError(f"--redis-servers {args.redis_servers} for {base.shards} shard(s) "
                         "(--shards); give one server per shard")
    try:
        import redis  # noqa: F401
    except ImportError:
        raise UsageError("shardlab replay needs redis-py; pip install 'shardlab[real]'") from None

    console = Console(stderr=True)
    results = []

    def run_all(urls: list[str], prefix: str, servers=None) -> None:
        for sc in scenarios:
            total = len(schedule(sc))
            started = time.monotonic()
            if console.is_terminal and not args.quiet:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
                with Progress(TextColumn(f"{args.stack} {sc.router}"), BarColumn(),
                              TextColumn("{task.completed}/{task.total} requests"),
                              TimeElapsedColumn(), console=console, transient=True) as bar:
                    task = bar.add_task("replay", total=total)
                    results.append(replay_scenario(
                        sc, urls, args.stack, args.time_scale, prefix,
                        progress=lambda n: bar.update(task, completed=n), servers=servers))
            else:
                results.append(replay_scenario(sc, urls, args.stack, args.time_scale, prefix,
                                               servers=servers))
            elapsed = time.monotonic() - started
            r = results[-1]
            if elapsed > 1 and not args.quiet:
                line = (f"{args.stack} {sc.router}: replayed {r['sent']['request']} "
                        f"requests in {elapsed:.1f} s")
                if r["wall"]["not_sent"]:
                    line += f" ({r['wall']['not_sent']} planned requests not sent)"
                console.print(line, highlight=False)

    from shardlab.replay_proc import ReplayError
    from shardlab.servers import RedisServerError, RedisServers, Terminated, signals_recorded
    received: list[str] = []
    what = ("replay processes stopped (the --redis servers are not ours: left running)"
            if args.redis else "replay processes and redis servers stopped")
    try:
        with signals_recorded(received):
            if args.redis:
                check_urls(list(args.redis))
                # servers we did not start: a prefix of our own, deleted afterwards (not
                # a result-affecting draw, so from the OS, not the global random stream)
                run_all(list(args.redis), f"shardlabreplay{secrets.token_hex(4)}")
            else:
                try:
                    with RedisServers(base.shards) as servers:
                        run_all(servers.urls, "asgi", servers)
                except RedisServerError as e:
                    raise UsageError(str(e)) from None
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated)
        term = isinstance(e, Terminated) or received[:1] == ["SIGTERM"]
        print(f"shardlab: {'terminated (SIGTERM)' if term else 'interrupted (SIGINT)'}: "
              f"{what}", file=sys.stderr)
        return 143 if term else 130
    except Exception as e:
        if received:  # the failure followed a signal: report the signal, not its effect
            term = received[0] == "SIGTERM"
            print(f"shardlab: {'terminated (SIGTERM)' if term else 'interrupted (SIGINT)'}"
                  f": {what}", file=sys.stderr)
            return 143 if term else 130
        if isinstance(e, ReplayError):
            print(f"shardlab: error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, UsageError):
            raise
        if isinstance(e, ConnectionError) or type(e).__name__ in (
                "ConnectionError", "TimeoutError", "AuthenticationError"):
            raise UsageError(f"cannot reach a Redis server: {e}") from None
        if type(e).__name__ == "ResponseError":  # redis-py: the server refused a command
            raise UsageError(f"a Redis server refused a command: {e}") from None
        raise

    if args.json is not None:
        write_json_atomic(args.json, {"mode": "real", "stack": args.stack,
                                      "time_scale": args.time_scale,
                                      "processes": "separate",
                                      "runs": results}, inputs=[args.scenario or ""])
    if not args.quiet and args.json != STDOUT:
        sc = scenarios[0]
        table = _run_table(results, f"replay on real Redis ({args.stack}, one OS process "
                                    f"per interface server and worker, time scale "
                                    f"{args.time_scale:g}): " + _title(sc))
        out = _stdout_console(table)
        out.print(table)
        notes = _notes(results)
        for r in results:
            notes += _load_notes(r, False)
        for r in results:
            if r.get("faults_applied"):
                notes.append(f"{r['router']}: faults applied: " + "; ".join(
                    _applied_text(a) for a in r["faults_applied"]))
            for w in r.get("warnings", []):
                notes.append(f"{r['router']}: WARNING: {w}")
        for line in notes:
            out.print(line, highlight=False, soft_wrap=True)
    return 0


def _applied_text(a: dict[str, Any]) -> str:
    """One applied fault action: when it happened (scenario seconds), and when it was
    planned if that differs; for a restart when the process was ready again."""
    text = f"t={a['at']:g} s {a['action']}"
    if a.get("late"):
        text += f" (planned t={a['planned_at']:g} s)"
    if "ready_at" in a:
        if a["ready_at"] is None:
            text += ", not ready before the end"
        else:
            text += f", ready at t={a['ready_at']:g} s"
        if a.get("outlasted_duration"):
            text += " (LONGER than the fault's duration)"
    return text


def add_replay_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser(
        "replay", help="replay a scenario on real Redis servers (shardlab's layer or "
                       "channels_redis)",
        description="Replay a scenario on real Redis servers and print the same table as "
                    "'shardlab run'. Every interface server and worker runs as its own "
                    "operating-system process with its own layer object. Faults are "
                    "applied for real: shard_crash kills the shard's redis-server with "
                    "SIGKILL and restarts it empty (needs --redis-servers), worker_crash "
                    "and iface_crash kill and restart the process, partition and "
                    "host_change reconfigure the processes' layers. Scripted scenarios, "
                    "reply by group, per-process overrides and clusters are refused. "
                    "Names, arrivals and service times come from the simulator's seeded "
                    "streams. Fates "
                    "come from what the processes saw and from inspecting the servers "
                    "afterwards. At most %d processes (interface_servers + workers). A "
                    "run that cannot keep up with its time scale still offers every "
                    "planned request, later, and says so in a WARNING line and under "
                    "'wall'. SIGTERM and Ctrl-C stop every process and server (exit "
                    "codes 143 and 130)." % MAX_PROCESSES,
        epilog="router profiles: " + ", ".join(PROFILE_NAMES))
    r.add_argument("scenario", nargs="?", metavar="SCENARIO",
                   help="a TOML scenario file (default: the built-in scenario)")
    r.add_argument("--router", action="append", type=router_arg, metavar="NAME",
                   help="router profile (repeatable; default: the scenario's). With "
                        "--stack channels_redis: channels_redis-4 or live:channels_redis")
    r.add_argument("--stack", choices=STACKS, default="shardlab",
                   help="shardlab: layer.redis placed by --router; channels_redis: the "
                        "installed channels_redis package (default: shardlab)")
    r.add_argument("--redis", action="append", type=_url, metavar="URL",
                   help="a Redis server to use, one per shard, in shard order (repeatable; "
                        "each a different server or database): " + _URL_FORMS + "; keys "
                        "go under a fresh prefix, deleted afterwards")
    r.add_argument("--redis-servers", type=int_arg(1, 64), metavar="N",
                   help="start N redis-server processes on free ports of 127.0.0.1 (no "
                        "persistence) and stop them at the end; N is also the shard count "
                        "unless --shards says otherwise (default, without --redis: one per "
                        "shard)")
    r.add_argument("--time-scale", type=_scale, default=1.0, metavar="X",
                   help="wall seconds per scenario second, from 0.001 to 1000 (default 1; "
                        "0.1 runs 10x faster; a small scale the machine cannot follow "
                        "is warned about)")
    add_override_args(r)
    r.add_argument("--json", metavar="PATH",
                   help="write the result as JSON: the shape of 'shardlab run --json' with "
                        "mode 'real', stack, time_scale, processes 'separate', "
                        "placement, faults_applied; wall-clock figures only under 'wall'")
    r.add_argument("--quiet", action="store_true", help="print no table")
    r.set_defaults(func=cmd_replay)
    return r


# -- shardlab compare ----------------------------------------------------------------------

def _read_result(path: str) -> dict[str, Any]:
    import json
    try:
        with open(path, encoding="utf8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path!r}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path!r}: is a directory; give a result file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path!r}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path!r}: not JSON ({e.msg}, line {e.lineno}); give the file "
                         "of 'shardlab run --json' or 'shardlab replay --json'") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if (not isinstance(runs, list) or not runs or not all(
            isinstance(r, dict) and {"router", "sent", "fates_by_kind", "latency_s"} <= r.keys()
            for r in runs)):
        raise UsageError(f"{path!r}: not a run result (needs 'runs', each with router, "
                         "sent, fates_by_kind, latency_s); give the file of 'shardlab run "
                         "--json' or 'shardlab replay --json'")
    _validate_result(path, data)
    return data


def _validate_result(path: str, data: dict[str, Any]) -> None:
    """One-line UsageError for the first value of a result file that a run cannot
    have produced, naming the file, the key path and the value: counts that are not
    non-negative integers, fates that do not add up to what was sent, a latency that
    is not a non-negative number, totals (``fates``) that are not the sums over the
    kinds, a router given twice, a placement shard that is not a shard name."""
    def bad(where: str, value: Any, allowed: str) -> UsageError:
        text = json.dumps(value)
        if len(text) > 60:
            text = text[:57] + "..."
        return UsageError(f"{path!r}: {where} = {text} is not allowed; allowed: {allowed}")

    def count(where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad(where, value, "a non-negative integer")
        return value

    def mapping(where: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise bad(where, value, "an object")
        return value

    import json
    import re
    seen: set[str] = set()
    for i, r in enumerate(data["runs"]):
        at = f"runs[{i}]"
        router = r["router"]
        if not isinstance(router, str) or not router:
            raise bad(f"{at}.router", router, "a router profile name")
        if router in seen:
            raise bad(f"{at}.router", router, "each router once per file")
        seen.add(router)
        sent = mapping(f"{at}.sent", r["sent"])
        fates_by_kind = mapping(f"{at}.fates_by_kind", r["fates_by_kind"])
        for kind, n in sent.items():
            count(f"{at}.sent.{kind}", n)
        for kind, fates in fates_by_kind.items():
            fates = mapping(f"{at}.fates_by_kind.{kind}", fates)
            for fate, n in fates.items():
                if fate not in FATES:
                    raise bad(f"{at}.fates_by_kind.{kind}.{fate}", n,
                              f"fates {', '.join(FATES)}")
                count(f"{at}.fates_by_kind.{kind}.{fate}", n)
            total = sum(fates.values())
            if total != sent.get(kind, 0):
                raise bad(f"{at}.fates_by_kind.{kind}", fates,
                          f"fates adding up to {at}.sent.{kind} = {sent.get(kind, 0)} "
                          f"(these add up to {total})")
        for kind in sent:
            if sent[kind] and kind not in fates_by_kind:
                raise bad(f"{at}.sent.{kind}", sent[kind],
                          f"a count with its fates under {at}.fates_by_kind.{kind}")
        if "fates" in r:  # the totals, when given, are the sums over the kinds
            totals = mapping(f"{at}.fates", r["fates"])
            for fate, n in totals.items():
                want = sum(f.get(fate, 0) for f in fates_by_kind.values())
                if count(f"{at}.fates.{fate}", n) != want:
                    raise bad(f"{at}.fates.{fate}", n, f"the sum of {at}.fates_by_kind.*."
                              f"{fate} = {want}")
        latency = mapping(f"{at}.latency_s", r["latency_s"])
        for q in ("p50", "p99"):
            v = latency.get(q)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v < 0):
                raise bad(f"{at}.latency_s.{q}", v, "a non-negative number or null")
        placement = r.get("placement")
        if placement is not None:
            resp = mapping(f"{at}.placement", placement).get("response")
            if resp is not None:
                for channel, shard in mapping(f"{at}.placement.response", resp).items():
                    if not isinstance(shard, str) or not re.fullmatch(r"shard\d+", shard):
                        raise bad(f"{at}.placement.response[{channel!r}]", shard,
                                  "a shard name such as \"shard0\"")
        load = r.get("shard_load")
        if load is not None:
            by_kind = mapping(f"{at}.shard_load", load).get("by_kind")
            if by_kind is not None:
                for kind, shards in mapping(f"{at}.shard_load.by_kind", by_kind).items():
                    for shard, n in mapping(f"{at}.shard_load.by_kind.{kind}",
                                            shards).items():
                        count(f"{at}.shard_load.by_kind.{kind}.{shard}", n)
        for key in ("shards", "seed"):
            if key in r:
                count(f"{at}.{key}", r[key])
        if "scenario" in r and not isinstance(r["scenario"], str):
            raise bad(f"{at}.scenario", r["scenario"], "a scenario name")


def _common_runs(a: dict[str, Any], b: dict[str, Any]):
    """(run of A, run of B) for every router in both, in A's order."""
    runs_b = {r["router"]: r for r in b["runs"]}
    return [(ra, runs_b[ra["router"]]) for ra in a["runs"] if ra["router"] in runs_b]


def comparability(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between the two runs of each router besides the mode: scenario
    name, shards, seed, requests sent, and the scenario settings (``config``). Each
    difference: ``{"router", "what", "a", "b"}``; empty when the runs are comparable."""
    out = []
    for ra, rb in _common_runs(a, b):
        pairs = [("scenario", ra.get("scenario"), rb.get("scenario")),
                 ("shards", ra.get("shards"), rb.get("shards")),
                 ("seed", ra.get("seed"), rb.get("seed")),
                 ("requests sent", ra["sent"].get("request"), rb["sent"].get("request"))]
        ca, cb = ra.get("config"), rb.get("config")
        if isinstance(ca, dict) and isinstance(cb, dict):
            skip = {"router", "name", "shards", "seed"}
            keys = sorted(k for k in ca.keys() | cb.keys()
                          if k not in skip and ca.get(k) != cb.get(k))
            pairs += [(f"config.{k}", ca.get(k), cb.get(k)) for k in keys]
        out += [{"router": ra["router"], "what": what, "a": x, "b": y}
                for what, x, y in pairs if x is not None and y is not None and x != y]
    return out


def _label(data: dict[str, Any]) -> str:
    mode = data.get("mode", "sim")
    return f"{mode}/{data['stack']}" if data.get("stack") else mode


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Per router in both results, per kind (request, response) and fate seen in
    either: the two shares, their difference, and whether the difference lies inside
    1.96 * sqrt(p1 q1 / n1 + p2 q2 / n2); and the latency quantiles side by side."""
    out = []
    for ra, rb in _common_runs(a, b):
        fates = []
        for kind in ("request", "response"):
            n1, n2 = ra["sent"].get(kind, 0), rb["sent"].get(kind, 0)
            if not n1 and not n2:
                continue
            fa, fb = ra["fates_by_kind"].get(kind, {}), rb["fates_by_kind"].get(kind, {})
            for fate in FATES:
                c1, c2 = fa.get(fate, 0), fb.get(fate, 0)
                if not c1 and not c2:
                    continue
                p1 = c1 / n1 if n1 else None
                p2 = c2 / n2 if n2 else None
                if p1 is None or p2 is None:
                    diff = half = None
                    inside = None
                else:
                    diff = p2 - p1
                    half = 1.96 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
                    inside = abs(diff) <= half + 1e-12
                fates.append({"kind": kind, "fate": fate, "a": c1, "n_a": n1, "share_a": p1,
                              "b": c2, "n_b": n2, "share_b": p2, "difference": diff,
                              "half_width": half, "inside": inside})
        out.append({"router": ra["router"], "fates": fates,
                    "latency_s": {q: {"a": ra["latency_s"].get(q), "b": rb["latency_s"].get(q)}
                                  for q in ("p50", "p99")},
                    "placement": compare_placement(ra, rb)})
    return out


def compare_placement(ra: dict[str, Any], rb: dict[str, Any]) -> dict[str, Any]:
    """Where messages were written, compared exactly.

    When both runs hold ``placement`` (response channel name -> shard written), every
    name in both is compared (``method`` "per name"): ``common``, ``same``, and the
    first few names placed differently. Otherwise the writes per shard and kind
    (``shard_load.by_kind``) are compared (``method`` "per-shard counts"): ``equal``
    and the two tables. Without either on one side: ``method`` None.
    """
    pa = (ra.get("placement") or {}).get("response")
    pb = (rb.get("placement") or {}).get("response")
    if isinstance(pa, dict) and isinstance(pb, dict):
        common = sorted(pa.keys() & pb.keys())
        differ = [{"channel": c, "a": pa[c], "b": pb[c]} for c in common if pa[c] != pb[c]]
        return {"method": "per name", "kind": "response", "common": len(common),
                "same": len(common) - len(differ), "only_a": len(pa.keys() - pb.keys()),
                "only_b": len(pb.keys() - pa.keys()), "first_differences": differ[:5]}
    la = (ra.get("shard_load") or {}).get("by_kind")
    lb = (rb.get("shard_load") or {}).get("by_kind")
    if isinstance(la, dict) and isinstance(lb, dict):
        kinds = [k for k in ("request", "response") if k in la or k in lb]
        return {"method": "per-shard counts",
                "equal": {k: la.get(k) == lb.get(k) for k in kinds},
                "a": {k: la.get(k) for k in kinds}, "b": {k: lb.get(k) for k in kinds}}
    return {"method": None}


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from shardlab.cli import _fmt_latency, _stdout_console

    if args.json is not None:
        check_output_path(args.json, inputs=[args.a, args.b])
    a, b = _read_result(args.a), _read_result(args.b)
    rows = compare_results(a, b)
    if not rows:
        raise UsageError(f"{args.a!r} and {args.b!r} have no router in common "
                         f"({', '.join(r['router'] for r in a['runs'])} vs "
                         f"{', '.join(r['router'] for r in b['runs'])})")
    la, lb = _label(a), _label(b)
    differ = comparability(a, b)
    if args.json is not None:
        write_json_atomic(args.json, {"a": {"path": args.a, "mode": la},
                                      "b": {"path": args.b, "mode": lb}, "routers": rows,
                                      "not_comparable": differ},
                          inputs=[args.a, args.b])
        if args.json == STDOUT:
            return 0
    t = Table(title=f"A = {args.a} ({la}), B = {args.b} ({lb}); inside: |B - A| <= "
                    "1.96 sqrt(pA qA / nA + pB qB / nB)", title_justify="left")
    for col in ("router", "kind", "fate", "A", "B", "B - A", "± 95 %", "inside"):
        t.add_column(col, justify="left" if col in ("router", "kind", "fate") else "right",
                     no_wrap=True)

    def share(c, n, p):
        return f"{c}/{n} {100 * p:.1f}%" if p is not None else f"{c}/{n}"
    for r in rows:
        for f in r["fates"]:
            inside = ("-" if f["inside"] is None else "[green]yes[/green]" if f["inside"]
                      else "[red]NO[/red]")
            t.add_row(r["router"], f["kind"], f["fate"], share(f["a"], f["n_a"], f["share_a"]),
                      share(f["b"], f["n_b"], f["share_b"]),
                      "-" if f["difference"] is None else f"{100 * f['difference']:+.1f} pt",
                      "-" if f["half_width"] is None else f"{100 * f['half_width']:.1f} pt",
                      inside)
        for q in ("p50", "p99"):
            lat = r["latency_s"][q]
            t.add_row(r["router"], "latency", q, _fmt_latency(lat["a"]),
                      _fmt_latency(lat["b"]), "", "", "")
    out = _stdout_console(t)
    out.print(t)
    for r in rows:
        out.print(_placement_line(r["router"], r["placement"]), highlight=False,
                  soft_wrap=True)
    if differ:
        def show(v):
            text = json.dumps(v)
            return text if len(text) <= 40 else text[:37] + "..."
        by_router: dict[str, list[str]] = {}
        for d in differ:
            by_router.setdefault(d["router"], []).append(
                f"{d['what']} A {show(d['a'])}, B {show(d['b'])}")
        for router, items in by_router.items():
            out.print(f"note: {router}: the runs differ in more than their mode, so a "
                      f"difference above need not be the layer's: " + "; ".join(items),
                      highlight=False, soft_wrap=True)
    return 0


def _placement_line(router: str, p: dict[str, Any]) -> str:
    if p["method"] == "per name":
        line = (f"{router}: placement per name (responses): {p['same']} of {p['common']} "
                f"channels in both on the same shard")
        if p["first_differences"]:
            d = p["first_differences"][0]
            line += f"; first difference: {d['channel']} A {d['a']}, B {d['b']}"
        if p["only_a"] or p["only_b"]:
            line += f"; only in A: {p['only_a']}, only in B: {p['only_b']}"
        return line
    if p["method"] == "per-shard counts":
        parts = []
        for kind, equal in p["equal"].items():
            a, b = p["a"][kind] or {}, p["b"][kind] or {}
            shards = sorted(set(a) | set(b), key=lambda s: (len(s), s))
            table = ", ".join(f"{s} {a.get(s, '-')}/{b.get(s, '-')}" for s in shards)
            parts.append(f"{kind}s {'equal' if equal else 'DIFFER'} (A/B: {table})")
        return (f"{router}: placement per-shard counts (one side has no per-name "
                "placement; 'shardlab run --placement' records it): " + "; ".join(parts))
    return f"{router}: placement not compared (a result holds neither placement nor shard_load)"


def add_compare_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "compare", help="two results (run or replay --json) side by side",
        description="For every router in both result files: each fate's share of the "
                    "messages sent, per kind, side by side with the difference and "
                    "whether it lies inside the 95 % sampling interval 1.96 sqrt(p1 q1 / "
                    "n1 + p2 q2 / n2); latency p50 and p99 side by side; and shard "
                    "placement compared exactly: per channel name when both results hold "
                    "'placement' (a replay, or 'shardlab run --placement'), else writes "
                    "per shard and kind.")
    c.add_argument("a", metavar="A.json", help="a 'shardlab run' or 'replay' --json file")
    c.add_argument("b", metavar="B.json", help="another one")
    c.add_argument("--json", metavar="PATH",
                   help="write the comparison as JSON ('-': on stdout, instead of the table)")
    c.set_defaults(func=cmd_compare)
    return c


# -- standalone entry point (until `shardlab` itself has the two subcommands) ------------

def main(argv=None) -> int:
    """``python -m shardlab.replay replay|compare ...``: the two subcommands with the
    CLI's conventions (one-line errors, exit code 2)."""
    import sys

    from layer.routing import RouterError
    from shardlab.cli import _Parser
    from sim.scenario import ScenarioError

    p = _Parser(prog="shardlab")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True,
                           parser_class=_Parser)
    add_replay_parser(sub)
    add_compare_parser(sub)
    args = p.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except (ScenarioError, RouterError, UsageError) as e:
        print(f"shardlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shardlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
