"""``shardlab replay``: a scenario on real Redis servers; ``shardlab compare``: two
results side by side.

Replay (first version)
----------------------
Interface servers and workers run as asyncio tasks in ONE operating-system process
(``"processes": "one"`` in the result), each with its own channel-layer object:
`layer.redis.RedisChannelLayer` (``--stack shardlab``, placed by ``--router``) or the
installed ``channels_redis.core.RedisChannelLayer`` (``--stack channels_redis``, whose
own code places every message: the channels_redis-4 rule). Names and timing come from
the simulator's seeded streams: interface server ``ifaceI`` has the simulator's
prefix ``http.response.LETTERS!`` (``client_prefix`` LETTERS) and names its replies
``prefix + layer.names.local_token(n)``; arrivals are the simulator's (the
``SEED/load`` stream, same interface server picks), and service times the workers'
(``SEED/workerJ/service``), every duration multiplied by ``--time-scale`` (wall
seconds per scenario second).

Each interface server listens on a request's reply channel, then sends the request;
workers receive on the request channel, wait their service time and ``send()`` the
reply. Fates:

- delivered: a reply received by its interface server within ``client_timeout``
  (later: orphaned); a request received by a worker;
- rejected_full: the send raised ChannelFull;
- misrouted: after the run, a reply found (by inspecting every server) on a shard its
  owner does not listen on, by the owner's own router (for channels_redis, the
  package's ``consistent_hash``);
- expired: a reply found nowhere and older than ``expiry``;
- in_flight: the rest (still queued on the listened shard, in a layer's buffer, or
  lost by a receive cancelled at the end).

The run ends when the load is done and every request has been answered and no reply
has arrived for a quiet period, or after ``drain`` (scaled). Latencies (``latency_s``)
are in scenario seconds (wall latency divided by the time scale); wall-clock figures
are under ``wall`` only. Not replayed yet (refused with one line): faults, scripted
scenarios, reply by group, per-process overrides, clusters.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import string
import time
from typing import Any

from layer.names import local_token, non_local_name
from layer.routing import PROFILE_NAMES, make_router
from sim.ledger import FATES, KINDS
from shardlab.output import (UsageError, check_output_path, int_arg, router_arg,
                             write_json_atomic)

__all__ = ["add_replay_parser", "cmd_replay", "replay_scenario", "add_compare_parser",
           "cmd_compare", "compare_results", "STACKS"]

STACKS = ("shardlab", "channels_redis")
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

def _arrivals(sc) -> list[tuple[float, int]]:
    """(scenario time, interface server index) of every request, as `sim.world` draws
    them (the ``SEED/load`` stream; every interface server up)."""
    load = sc.load
    rng = random.Random(f"{sc.seed}/load")
    n = sc.interface_servers
    out: list[tuple[float, int]] = []
    limit = load.requests
    if load.kind == "poisson":
        t = 0.0
        while True:
            dt = rng.expovariate(load.rate)
            if not limit and t + dt > sc.duration:
                break
            t += dt
            out.append((t, rng.randrange(n)))
            if limit and len(out) >= limit:
                break
    else:
        interval = 1.0 / load.rate if load.kind == "fixed" else load.burst_interval
        size = 1 if load.kind == "fixed" else load.burst_size
        total = limit or (int(sc.duration * load.rate) if load.kind == "fixed"
                          else int(sc.duration / interval) * size)
        t = 0.0
        while len(out) < total:
            for _ in range(min(size, total - len(out))):
                out.append((t, rng.randrange(n)))
            t += interval
    return out


def iface_letters(sc, i: int) -> str:
    """The 8 letters of ``ifaceI``'s reply prefix, as the simulator draws them."""
    rng = random.Random(f"{sc.seed}/iface{i}")
    return "".join(rng.choice(string.ascii_letters) for _ in range(8))


def refuse_unsupported(sc) -> None:
    """One-line UsageError for what this first version does not replay."""
    if sc.faults:
        raise UsageError(f"scenario {sc.name!r} has {len(sc.faults)} fault(s): faults "
                         "are not replayed yet; remove [[faults]] to replay it")
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


class _Stack:
    """Makes layer objects of one stack and answers where their owner listens."""

    def __init__(self, stack: str, urls: list[str], sc, router: str, prefix: str,
                 time_scale: float):
        self.stack, self.urls, self.sc, self.router = stack, urls, sc, router
        self.prefix = prefix
        self.expiry = sc.expiry * time_scale
        if stack == "channels_redis":
            try:
                from channels_redis import core
            except ImportError as e:
                raise UsageError(f"--stack channels_redis needs the channels_redis "
                                 f"package ({e}); pip install channels_redis==4.3.0") from None
            self.core = core
            self.expiry = max(1, round(self.expiry))  # the package takes whole seconds

    def make(self, name: str, client_prefix: str):
        sc = self.sc
        if self.stack == "channels_redis":
            layer = self.core.RedisChannelLayer(hosts=self.urls, prefix=self.prefix,
                                                expiry=self.expiry, capacity=sc.capacity)
            layer.client_prefix = client_prefix
            return layer
        from layer.redis import RedisChannelLayer, RedisLayerError
        router = make_router(self.router, rng=random.Random(f"{sc.seed}/{name}/layer0"))
        try:
            return RedisChannelLayer(self.urls, router=router, prefix=self.prefix,
                                     expiry=self.expiry, capacity=sc.capacity,
                                     client_prefix=client_prefix)
        except RedisLayerError as e:
            raise UsageError(str(e)) from None

    def listen_shards(self, layer, channel: str) -> list[int]:
        if self.stack == "channels_redis":
            return [layer.consistent_hash(non_local_name(channel))]
        return list(layer.router.listen_shards(non_local_name(channel), layer.shard_names))

    def key_of(self, layer, channel: str) -> str:
        if self.stack == "channels_redis":
            return self.prefix + non_local_name(channel)
        return layer.key_of(channel)

    async def close(self, layer) -> None:
        if self.stack == "channels_redis":
            await layer.close_pools()
        else:
            await layer.close()


async def _replay(sc, urls: list[str], stack: str, time_scale: float, prefix: str,
                  progress=None) -> dict[str, Any]:
    import msgpack
    from redis import asyncio as aioredis
    try:
        from channels.exceptions import ChannelFull
    except ImportError:  # pragma: no cover
        from layer.redis import ChannelFull

    st = _Stack(stack, urls, sc, sc.router, prefix, time_scale)
    arrivals = _arrivals(sc)
    ifaces = []
    for i in range(sc.interface_servers):
        letters = iface_letters(sc, i)
        ifaces.append({"name": f"iface{i}", "prefix": f"http.response.{letters}!",
                       "layer": st.make(f"iface{i}", letters), "count": 0})
    workers = [{"name": f"worker{j}", "layer": st.make(f"worker{j}", f"worker{j}"),
                "rng": random.Random(f"{sc.seed}/worker{j}/service")}
               for j in range(sc.workers)]
    # per request: {iface, channel, start, received_by, reply_sent_at, sender, fate...}
    reqs: list[dict[str, Any]] = []
    full = {"request": 0, "response": 0}
    deliveries: dict[str, int] = {}
    state = {"last_delivery": time.monotonic(), "answered": 0, "handled": 0}
    tasks: set[asyncio.Task] = set()
    t0 = time.monotonic()

    def scen(wall: float) -> float:
        return (wall - t0) / time_scale

    async def await_reply(iface, rec):
        await iface["layer"].receive(rec["channel"])
        now = time.monotonic()
        deliveries[rec["channel"]] = deliveries.get(rec["channel"], 0) + 1
        if deliveries[rec["channel"]] > 1:
            return
        rec["reply_fate"] = ("delivered" if now - rec["start"] <= sc.client_timeout * time_scale
                             else "orphaned")
        rec["latency_wall"] = now - rec["start"]
        state["last_delivery"] = now

    async def send_request(iface, rec):
        try:
            await iface["layer"].send(sc.request_channel, {"id": rec["id"],
                                                           "reply": rec["channel"]})
            rec["request_sent"] = True
        except ChannelFull:
            full["request"] += 1
            rec["request_fate"] = "rejected_full"
            state["handled"] += 1

    async def load():
        for t, i in arrivals:
            delay = t0 + t * time_scale - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            iface = ifaces[i]
            token = local_token(iface["count"])
            iface["count"] += 1
            rec = {"id": len(reqs), "iface": i, "channel": iface["prefix"] + token,
                   "start": time.monotonic(), "request_sent": False, "request_fate": None,
                   "reply_sent": False, "reply_fate": None, "sender": None,
                   "reply_at": None, "latency_wall": None}
            reqs.append(rec)
            for coro in (await_reply(iface, rec), send_request(iface, rec)):
                task = asyncio.create_task(coro)
                tasks.add(task)
            if progress is not None:
                progress(len(reqs))

    async def work(w):
        layer = w["layer"]
        while True:
            msg = await layer.receive(sc.request_channel)
            rec = reqs[msg["id"]]
            rec["request_fate"] = "delivered"
            if sc.service_distribution == "constant" or sc.service_time == 0:
                s = sc.service_time
            else:
                s = w["rng"].expovariate(1.0 / sc.service_time)
            await asyncio.sleep(s * time_scale)
            rec["sender"], rec["reply_at"] = w["name"], scen(time.monotonic())
            try:
                await layer.send(rec["channel"], {"id": rec["id"]})
                rec["reply_sent"] = True
            except ChannelFull:
                full["response"] += 1
                rec["reply_fate"] = "rejected_full"
            state["handled"] += 1

    worker_tasks = [asyncio.create_task(work(w)) for w in workers]
    loader = asyncio.create_task(load())
    try:
        await loader
        deadline = time.monotonic() + sc.drain * time_scale
        while time.monotonic() < deadline:
            answered = sum(1 for r in reqs if r["reply_fate"] is not None)
            if answered == len(reqs):
                break
            if (state["handled"] == len(reqs)
                    and time.monotonic() - state["last_delivery"] > QUIET_S):
                break
            await asyncio.sleep(0.02)
        end = time.monotonic()
    finally:
        everything = worker_tasks + list(tasks) + [loader]
        for task in everything:
            task.cancel()
        await asyncio.gather(*everything, return_exceptions=True)

    # -- inspect the servers -----------------------------------------------------------
    clients = [aioredis.Redis.from_url(u) for u in urls]
    found: dict[str, list[int]] = {}
    try:
        for iface in ifaces:
            key = st.key_of(iface["layer"], iface["prefix"] + "0")
            for index, client in enumerate(clients):
                for member in await client.zrange(key, 0, -1):
                    body = msgpack.unpackb(member[12:], raw=False)
                    target = body.get("__asgi_channel__")
                    for ch in ([target] if isinstance(target, str) else target or []):
                        found.setdefault(ch, []).append(index)
        request_key = st.key_of(workers[0]["layer"], sc.request_channel)
        queued_requests = [await c.zcard(request_key) for c in clients]
    finally:
        for c in clients:
            await c.aclose()
        for layer in [x["layer"] for x in ifaces + workers]:
            try:
                await st.close(layer)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    # -- fates ---------------------------------------------------------------------------
    by_kind = {k: dict.fromkeys(FATES, 0) for k in KINDS}
    sent = dict.fromkeys(KINDS, 0)
    misroutes: list[dict[str, Any]] = []
    latencies = []
    expiry_wall = sc.expiry * time_scale
    for rec in reqs:
        sent["request"] += 1
        by_kind["request"][rec["request_fate"] or "in_flight"] += 1
        if not (rec["reply_sent"] or rec["reply_fate"] == "rejected_full"):
            continue
        sent["response"] += 1
        fate = rec["reply_fate"]
        if fate is None:
            owner = ifaces[rec["iface"]]
            listen = st.listen_shards(owner["layer"], rec["channel"])
            where = found.get(rec["channel"], [])
            if any(i not in listen for i in where):
                fate = "misrouted"
                misroutes.append({"time": round(rec["reply_at"], 6), "sender": rec["sender"],
                                  "channel": rec["channel"],
                                  "shard_written": f"shard{[i for i in where if i not in listen][0]}",
                                  "shards_listened": [f"shard{i}" for i in listen]})
            elif not where and end - rec["start"] > expiry_wall:
                fate = "expired"
            else:
                fate = "in_flight"
        by_kind["response"][fate] += 1
        if fate == "delivered":
            latencies.append(rec["latency_wall"])
    dupes = sum(n - 1 for n in deliveries.values() if n > 1)
    by_kind["response"]["duplicate"] += dupes
    sent["response"] += dupes
    fates = {f: sum(by_kind[k][f] for k in KINDS) for f in FATES}
    unbalanced = [k for k in KINDS if sum(by_kind[k].values()) != sent[k]]
    misroutes.sort(key=lambda m: m["time"])
    latencies.sort()

    def q(xs: list[float], p: float) -> float | None:
        if not xs:
            return None
        return xs[min(len(xs) - 1, max(0, math.ceil(p * len(xs)) - 1))]

    def scaled(x):
        return None if x is None else round(x / time_scale, 6)

    checked_resp = sent["response"]
    return {
        "router": sc.router,
        "scenario": sc.name,
        "seed": sc.seed,
        "shards": sc.shards,
        "mode": "real",
        "stack": stack,
        "time_scale": time_scale,
        "processes": "one",
        "sent": sent,
        "fates": fates,
        "fates_by_kind": by_kind,
        "latency_s": {"p50": scaled(q(latencies, 0.5)), "p99": scaled(q(latencies, 0.99))},
        "invariants": {
            "rendezvous": {"holds": not misroutes, "violations": len(misroutes),
                           "checked": checked_resp,
                           "first_violation": misroutes[0] if misroutes else None},
            "at_most_once": {"holds": dupes == 0, "violations": dupes,
                             "checked": checked_resp, "first_violation": None},
            "conservation": {"holds": not unbalanced, "violations": len(unbalanced),
                             "checked": len(KINDS), "first_violation":
                             {"kinds": unbalanced} if unbalanced else None},
        },
        "channel_full_errors": {"request": full["request"], "response": full["response"],
                                "scripted": 0},
        "queued_at_end": {"requests_by_shard": {f"shard{i}": n for i, n in
                                                enumerate(queued_requests) if n}},
        "config": sc.to_dict(),
        "wall": {"elapsed_s": round(end - t0, 3),
                 "latency_s": {"p50": q(latencies, 0.5), "p99": q(latencies, 0.99)}},
    }


def replay_scenario(sc, urls: list[str], stack: str = "shardlab", time_scale: float = 1.0,
                    prefix: str = "asgi", progress=None) -> dict[str, Any]:
    """Replay ``sc`` on the servers at ``urls`` (one per shard) and return its result;
    the keys under ``prefix`` are deleted before and after."""
    refuse_unsupported(sc)
    if len(urls) != sc.shards:
        raise UsageError(f"{len(urls)} Redis server(s) for {sc.shards} shard(s); give one "
                         "server per shard")
    if stack not in STACKS:
        raise UsageError(f"--stack {stack!r} is unknown; allowed: {', '.join(STACKS)}")
    if stack == "channels_redis" and sc.router not in CHANNELS_REDIS_ROUTERS:
        raise UsageError(f"--router {sc.router} with --stack channels_redis: the installed "
                         "package places messages by its own rule; allowed: "
                         f"{', '.join(CHANNELS_REDIS_ROUTERS)}")

    async def main():
        await _delete_prefix(urls, prefix)
        try:
            return await _replay(sc, urls, stack, time_scale, prefix, progress)
        finally:
            await _delete_prefix(urls, prefix)
    return asyncio.run(main())


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
        refuse_unsupported(sc)
        if args.stack == "channels_redis" and sc.router not in CHANNELS_REDIS_ROUTERS:
            raise UsageError(f"--router {sc.router} with --stack channels_redis: the "
                             "installed package places messages by its own rule; allowed: "
                             f"{', '.join(CHANNELS_REDIS_ROUTERS)}")
    if args.stack == "shardlab":
        try:
            from layer.redis import SUPPORTED_PROFILES
        except ImportError as e:
            raise UsageError(str(e)) from None
        bad = [r for r in routers if r not in SUPPORTED_PROFILES]
        if bad:
            raise UsageError(f"--router {bad[0]} is not supported by layer.redis; allowed: "
                             f"{', '.join(SUPPORTED_PROFILES)}")
    else:
        make_router(routers[0])  # live:channels_redis without the package: a usage error
    if args.redis and len(args.redis) != base.shards:
        raise UsageError(f"--redis gives {len(args.redis)} server(s) for {base.shards} "
                         "shard(s); give one URL per shard")
    try:
        import redis  # noqa: F401
    except ImportError:
        raise UsageError("shardlab replay needs redis-py; pip install 'shardlab[real]'") from None

    console = Console(stderr=True)
    results = []

    def run_all(urls: list[str], prefix: str) -> None:
        for sc in scenarios:
            total = len(_arrivals(sc))
            started = time.monotonic()
            if console.is_terminal and not args.quiet:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
                with Progress(TextColumn(f"{args.stack} {sc.router}"), BarColumn(),
                              TextColumn("{task.completed}/{task.total} requests"),
                              TimeElapsedColumn(), console=console, transient=True) as bar:
                    task = bar.add_task("replay", total=total)
                    results.append(replay_scenario(
                        sc, urls, args.stack, args.time_scale, prefix,
                        progress=lambda n: bar.update(task, completed=n)))
            else:
                results.append(replay_scenario(sc, urls, args.stack, args.time_scale, prefix))
            elapsed = time.monotonic() - started
            if elapsed > 1 and not args.quiet:
                console.print(f"{args.stack} {sc.router}: replayed {total} requests in "
                              f"{elapsed:.1f} s", highlight=False)

    try:
        if args.redis:
            # servers we did not start: a prefix of our own, deleted afterwards
            run_all(list(args.redis), f"shardlabreplay{random.getrandbits(32):08x}")
        else:
            from shardlab.servers import RedisServerError, RedisServers
            try:
                with RedisServers(args.redis_servers or base.shards) as servers:
                    if len(servers.urls) != base.shards:
                        raise UsageError(f"--redis-servers {len(servers.urls)} for "
                                         f"{base.shards} shard(s); give one per shard")
                    run_all(servers.urls, "asgi")
            except RedisServerError as e:
                raise UsageError(str(e)) from None
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
                                      "time_scale": args.time_scale, "processes": "one",
                                      "runs": results}, inputs=[args.scenario or ""])
    if not args.quiet:
        sc = scenarios[0]
        table = _run_table(results, f"replay on real Redis ({args.stack}, one OS process, "
                                    f"time scale {args.time_scale:g}): " + _title(sc))
        out = _stdout_console(table)
        out.print(table)
        for line in _notes(results)[len(_ROW_LEGEND):]:
            out.print(line, highlight=False, soft_wrap=True)
    return 0


def add_replay_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser(
        "replay", help="replay a scenario on real Redis servers (shardlab's layer or "
                       "channels_redis)",
        description="Replay a scenario on real Redis servers and print the same table as "
                    "'shardlab run'. FIRST VERSION: interface servers and workers run as "
                    "asyncio tasks in ONE operating-system process (each with its own "
                    "layer object), not as separate processes; faults, scripted scenarios, "
                    "reply by group and per-process overrides are refused. Names, arrivals "
                    "and service times come from the simulator's seeded streams. Fates: "
                    "delivered and rejected_full as observed, misrouted by inspecting the "
                    "servers afterwards (a reply on a shard its owner does not listen on), "
                    "expired or in_flight otherwise.",
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
                        "persistence) and stop them at the end (default, without --redis: "
                        "one per shard)")
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
                        "mode 'real', stack, time_scale, processes 'one'; wall-clock "
                        "figures only under 'wall'")
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
                                  for q in ("p50", "p99")}})
    return out


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
    return 0


def add_compare_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser(
        "compare", help="two results (run or replay --json) side by side",
        description="For every router in both result files: each fate's share of the "
                    "messages sent, per kind, side by side with the difference and "
                    "whether it lies inside the 95 % sampling interval 1.96 sqrt(p1 q1 / "
                    "n1 + p2 q2 / n2); latency p50 and p99 side by side.")
    c.add_argument("a", metavar="A.json", help="a 'shardlab run' or 'replay' --json file")
    c.add_argument("b", metavar="B.json", help="another one")
    c.add_argument("--json", metavar="PATH", help="write the comparison as JSON")
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
