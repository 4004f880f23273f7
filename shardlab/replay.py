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
every duration multiplied by ``--time-scale`` (wall seconds per scenario second).

Faults are applied for real: a shard's redis-server is killed (SIGKILL) and restarted
empty on its port (only with servers the replay started, ``--redis-servers``); an
interface server or worker process is killed and started again; a partition or a host
change is sent to the processes, which rebuild their layer. Fates come from what the
processes saw and from inspecting the servers afterwards (a reply written to a shard
its owner does not listen on is misrouted; one found nowhere and older than
``expiry`` expired); every message sent gets exactly one fate, or the replay stops
with an error. Latencies (``latency_s``) are in scenario seconds (wall latency divided
by the time scale); wall-clock figures are under ``wall`` only. Each run also records
``placement`` (response channel -> shard written) and ``shard_load`` (writes per shard
and kind), which ``compare`` checks exactly. Not replayed (refused with one line):
scripted scenarios, reply by group, per-process overrides, clusters, and a shard crash
on servers given with ``--redis``.

Compare
-------
Per router in both results: each fate's share per kind, the difference and whether it
lies inside the 95 % sampling interval; latency side by side; and placement, exactly:
per channel name when both results hold ``placement`` (a replay, or ``shardlab run
--placement``), else the writes per shard and kind.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import string
import time
from typing import Any

from layer.routing import PROFILE_NAMES, ROUTERS, make_router
from sim.ledger import FATES
from sim.load import schedule
from shardlab.output import (STDOUT, UsageError, check_output_path, int_arg, router_arg,
                             write_json_atomic)

__all__ = ["add_replay_parser", "cmd_replay", "replay_scenario", "add_compare_parser",
           "cmd_compare", "compare_results", "STACKS"]

STACKS = ("shardlab", "channels_redis")
#: Routers --stack shardlab replays: those that store in sorted sets (channels_redis
#: 2+, ``fixed``), the only storage the after-run inspection of the servers reads.
REPLAYABLE = tuple(n for n in PROFILE_NAMES
                   if n.startswith("live:") or ROUTERS[n]().storage == "sorted_set")
#: Routers --stack channels_redis accepts: the installed package's rule.
CHANNELS_REDIS_ROUTERS = ("channels_redis-4", "live:channels_redis")
#: Wall seconds without a delivery, once every request is answered, that end a replay.
QUIET_S = 0.5


# -- argument types ----------------------------------------------------------------------

def _scale(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and 0.001 <= v <= 1000):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number from 0.001 to 1000")
    return v


def _url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a redis:// (or rediss://, unix://) URL")
    return text


# -- the replay itself ---------------------------------------------------------------------

def iface_letters(sc, i: int) -> str:
    """The 8 letters of ``ifaceI``'s reply prefix, as the simulator draws them."""
    rng = random.Random(f"{sc.seed}/iface{i}")
    return "".join(rng.choice(string.ascii_letters) for _ in range(8))


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
    from rich.console import Console

    from shardlab.cli import _ROW_LEGEND, _notes, _run_table, _stdout_console, _title
    from sim.scenario import load_scenario, read_scenario_data

    if args.json is not None:
        check_output_path(args.json, inputs=[args.scenario or ""])
    if args.redis and args.redis_servers is not None:
        raise UsageError("give --redis URL... or --redis-servers N, not both")
    overrides: dict[str, Any] = {}
    if args.shards is not None:
        overrides["shards"] = args.shards
    elif args.redis:
        overrides["shards"] = len(args.redis)
    elif args.redis_servers is not None:
        overrides["shards"] = args.redis_servers
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.requests is not None:
        data, _ = read_scenario_data(args.scenario)
        load = data.get("load", {})
        overrides["load"] = {**(dict(load) if isinstance(load, dict) else {}),
                             "requests": args.requests}
    base = load_scenario(args.scenario, overrides)
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
            if elapsed > 1 and not args.quiet:
                console.print(f"{args.stack} {sc.router}: replayed {total} requests in "
                              f"{elapsed:.1f} s", highlight=False)

    from shardlab.replay_proc import ReplayError
    from shardlab.servers import RedisServerError, RedisServers, Terminated, stop_on_sigterm
    try:
        with stop_on_sigterm():
            if args.redis:
                # servers we did not start: a prefix of our own, deleted afterwards
                run_all(list(args.redis), f"shardlabreplay{random.getrandbits(32):08x}")
            else:
                try:
                    with RedisServers(base.shards) as servers:
                        run_all(servers.urls, "asgi", servers)
                except RedisServerError as e:
                    raise UsageError(str(e)) from None
    except Terminated:
        import sys
        print("shardlab: terminated (SIGTERM): replay processes and redis servers stopped",
              file=sys.stderr)
        return 143
    except ReplayError as e:
        import sys
        print(f"shardlab: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if "connect" in str(e).lower() or isinstance(e, ConnectionError):
            raise UsageError(f"cannot reach a Redis server: {e}") from None
        raise
    except Exception as e:  # redis-py's ConnectionError is not an OSError
        if type(e).__name__ in ("ConnectionError", "TimeoutError", "AuthenticationError"):
            raise UsageError(f"cannot reach a Redis server: {e}") from None
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
        for line in _notes(results)[len(_ROW_LEGEND):]:
            out.print(line, highlight=False, soft_wrap=True)
        for r in results:
            if r.get("faults_applied"):
                done = "; ".join(f"t={a['at']:g} s {a['action']}" for a in r["faults_applied"])
                out.print(f"{r['router']}: faults applied: {done}", highlight=False,
                          soft_wrap=True)
    return 0


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
                    "reply by group and per-process overrides are refused. Names, arrivals "
                    "and service times come from the simulator's seeded streams. Fates "
                    "come from what the processes saw and from inspecting the servers "
                    "afterwards. SIGTERM and Ctrl-C stop every process and server.",
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
                   help="a Redis server to use, one per shard, in shard order (repeatable); "
                        "keys go under a fresh prefix, deleted afterwards")
    r.add_argument("--redis-servers", type=int_arg(1, 64), metavar="N",
                   help="start N redis-server processes on free ports of 127.0.0.1 (no "
                        "persistence) and stop them at the end; N is also the shard count "
                        "unless --shards says otherwise (default, without --redis: one per "
                        "shard)")
    r.add_argument("--time-scale", type=_scale, default=1.0, metavar="X",
                   help="wall seconds per scenario second (default 1; 0.1 runs 10x faster)")
    r.add_argument("--shards", type=int_arg(1, 64), metavar="N",
                   help="number of shards (overrides the scenario)")
    r.add_argument("--requests", type=int_arg(1), metavar="N",
                   help="stop the load after N client requests (overrides the duration)")
    r.add_argument("--seed", type=int_arg(0, 2**63 - 1), metavar="N",
                   help="seed of every random stream (overrides the scenario)")
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
    return data


def _label(data: dict[str, Any]) -> str:
    mode = data.get("mode", "sim")
    return f"{mode}/{data['stack']}" if data.get("stack") else mode


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Per router in both results, per kind (request, response) and fate seen in
    either: the two shares, their difference, and whether the difference lies inside
    1.96 * sqrt(p1 q1 / n1 + p2 q2 / n2); and the latency quantiles side by side."""
    runs_b = {r["router"]: r for r in b["runs"]}
    out = []
    for ra in a["runs"]:
        rb = runs_b.get(ra["router"])
        if rb is None:
            continue
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
    if args.json is not None:
        write_json_atomic(args.json, {"a": {"path": args.a, "mode": la},
                                      "b": {"path": args.b, "mode": lb}, "routers": rows},
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
