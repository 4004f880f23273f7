"""Scenarios: every setting of a run, with its default, in one frozen value.

A scenario is a TOML file (or the built-in default, `sim/default.toml`: the
deployment the Channels docs describe). `load_scenario` reads and validates it;
every unknown key or bad value is a `ScenarioError` whose one-line message names the
key, the value and what is allowed. Variants are made with `dataclasses.replace`, and
the whole scenario is embedded in every result (`Scenario.to_dict`).

TOML layout (every key optional)::

    seed = 1                    # all randomness derives from it
    router = "channels_redis-4" # every process's profile, unless overridden
    shards = 3
    interface_servers = 4       # 0 with workers = 0: a scripted scenario only
    workers = 20
    duration = 60.0             # seconds of offered load
    drain = 10.0                # seconds after the load stops before the run ends
    expiry = 60.0               # message time-to-live, seconds
    capacity = 100              # per-channel capacity
    group_expiry = 86400.0
    client_timeout = 60.0       # an interface server gives up on a client after this
    reply = "send"              # workers reply by "send" or through a per-client "group"
    request_channel = "http.request"
    service_time = 0.05         # mean seconds a worker spends on a request
    service_distribution = "exponential"   # or "constant"
    hash_seeds = "per-process"  # or "same": PYTHONHASHSEED of each process (pub/sub 3.3)

    [load]
    kind = "poisson"            # "poisson", "burst" or "fixed"
    rate = 200.0                # requests per second (poisson)
    requests = 0                # stop after this many (0: as many as the duration gives)
    burst_size = 50             # "burst": this many at once ...
    burst_interval = 1.0        # ... every this many seconds

    [topology]
    clusters = 1                # shards and workers split into this many clusters
    responses = "shared"        # "shared": one ring of all shards for responses;
                                # "cluster": each process uses its own cluster's shards

    [[processes]]               # per-process overrides (a rolling upgrade, a bad host list)
    name = "worker3"
    router = "fixed"
    hosts = ["shard0", "shard1"]
    hash_seed = 7

    [[actors]]                  # named processes of a scripted scenario (field cases)
    name = "consumer"
    prefix = "specific.AbCdEf!" # it owns and listens for every channel under it
    channels = []               # ... and these (needed for pub/sub or whole-name keys)
    listening = true            # false: a stalled consumer; messages stay queued
    # router, hosts, hash_seed: as for [[processes]]

    [[steps]]                   # what the actors do, and when
    at = 0.0
    actor = "worker"
    op = "send"                 # send (channel), group_add and group_discard (group,
    channel = "specific.AbCdEf!xyz"  # channel), group_send (group)
    count = 1                   # do it this many times

    [[faults]]                  # the keys each kind takes:
    kind = "shard_crash"        #   shard_crash, worker_crash, iface_crash: target, duration
    at = 20.0                   #   partition: target (a process), shard, duration
    target = "shard1"           #   host_change: hosts, processes (default "all")
    duration = 5.0              # how long it lasts; a crashed part then comes back
                                # empty (a shard) or as a fresh process
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from layer.names import ChannelNameError, validate_channel_name, validate_group_name
from layer.routing import PROFILE_NAMES, make_router

__all__ = ["Scenario", "Load", "Topology", "ProcessOverride", "Fault", "ScenarioError",
           "load_scenario", "default_scenario", "read_scenario_data", "Actor", "Step",
           "scenario_from_dict", "FAULT_KINDS", "MAX_REQUESTS"]

#: The most requests one run may offer (a load.requests, or what a timed load makes).
MAX_REQUESTS = 10_000_000

FAULT_KINDS = ("shard_crash", "worker_crash", "iface_crash", "partition", "host_change")


class ScenarioError(ValueError):
    """A scenario file or override that cannot be run; the message is one line."""


@dataclass(frozen=True)
class Load:
    kind: str = "poisson"
    rate: float = 200.0
    requests: int = 0
    burst_size: int = 50
    burst_interval: float = 1.0


@dataclass(frozen=True)
class Topology:
    clusters: int = 1
    responses: str = "shared"


@dataclass(frozen=True)
class ProcessOverride:
    name: str
    router: str | None = None
    hosts: tuple[str, ...] | None = None
    hash_seed: int | None = None


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    target: str = ""
    duration: float = 0.0
    shard: str = ""
    hosts: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Actor:
    """A named process of a scripted scenario (field cases): it owns ``channels`` (and
    every channel under ``prefix``), listens for them unless ``listening`` is false (a
    stalled consumer), and performs the `Step` s that name it."""

    name: str
    prefix: str = ""
    channels: tuple[str, ...] = ()
    router: str | None = None
    hosts: tuple[str, ...] | None = None
    hash_seed: int | None = None
    listening: bool = True


@dataclass(frozen=True)
class Step:
    """One scripted operation: at time ``at``, ``actor`` does ``op`` ``count`` times."""

    at: float
    actor: str
    op: str
    channel: str = ""
    group: str = ""
    count: int = 1


STEP_OPS = ("send", "group_add", "group_discard", "group_send")  # see _STEP_KEYS


@dataclass(frozen=True)
class Scenario:
    seed: int = 1
    router: str = "channels_redis-4"
    shards: int = 3
    interface_servers: int = 4
    workers: int = 20
    duration: float = 60.0
    drain: float = 10.0
    expiry: float = 60.0
    capacity: int = 100
    group_expiry: float = 86400.0
    client_timeout: float = 60.0
    reply: str = "send"
    request_channel: str = "http.request"
    service_time: float = 0.05
    service_distribution: str = "exponential"
    hash_seeds: str = "per-process"
    load: Load = field(default_factory=Load)
    topology: Topology = field(default_factory=Topology)
    processes: tuple[ProcessOverride, ...] = ()
    faults: tuple[Fault, ...] = ()
    actors: tuple[Actor, ...] = ()
    steps: tuple[Step, ...] = ()
    name: str = "default"

    def to_dict(self) -> dict[str, Any]:
        """The whole scenario as plain data (for results)."""
        return dataclasses.asdict(self)

    @property
    def shard_names(self) -> tuple[str, ...]:
        return tuple(f"shard{i}" for i in range(self.shards))

    @property
    def process_names(self) -> tuple[str, ...]:
        return (tuple(f"iface{i}" for i in range(self.interface_servers))
                + tuple(f"worker{i}" for i in range(self.workers))
                + tuple(a.name for a in self.actors))


# -- validation ---------------------------------------------------------------------

_MISSING = object()


def _show(value: Any) -> str:
    """A value as the user wrote it in TOML (not as Python prints it)."""
    if value is _MISSING or value is None:
        return "(missing)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (str, list)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except ValueError:
            return repr(value)
    return repr(value)


def _fail(where: str, key: str, value: Any, allowed: str) -> None:
    raise ScenarioError(f"key {where + key!r} = {_show(value)}: {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    if _is_int(v):  # TOML integers are unbounded in tomllib: 10**400 is no float
        return -1e308 <= v <= 1e308
    return isinstance(v, float) and math.isfinite(v)


# key -> (check, what is allowed); checks take the value and return True when fine.
def _int_range(lo: int, hi: int | None = None):
    def check(v: Any) -> bool:
        return _is_int(v) and v >= lo and (hi is None or v <= hi)
    return check, (f"must be an integer from {lo} to {hi}" if hi is not None
                   else f"must be an integer >= {lo}")


def _positive(hi: float = 1e9):
    return (lambda v: _is_num(v) and 0 < v <= hi), f"must be a finite number > 0 and <= {hi:g}"


def _non_negative(hi: float = 1e9):
    return (lambda v: _is_num(v) and 0 <= v <= hi), f"must be a finite number >= 0 and <= {hi:g}"


def _normal_channel():
    def check(v: Any) -> bool:
        try:
            validate_channel_name(v, "channels")
        except ChannelNameError:
            return False
        return "!" not in v
    return check, ("must be a normal channel name: ASCII letters, digits, '-', '_' or "
                   "'.', no '!', fewer than 100 characters")


def _choice(*options: str):
    return (lambda v: v in options), "must be one of " + ", ".join(repr(o) for o in options)


def _string():
    return (lambda v: isinstance(v, str) and v != ""), "must be a non-empty string"


_TOP = {
    "seed": _int_range(0, 2**63 - 1),
    "router": _choice(*PROFILE_NAMES),
    "shards": _int_range(1, 64),
    "interface_servers": _int_range(0, 1000),
    "workers": _int_range(0, 10000),
    "duration": _positive(1e7),
    "drain": _non_negative(1e7),
    "expiry": _positive(),
    "capacity": _int_range(1),
    "group_expiry": _positive(),
    "client_timeout": _positive(),
    "reply": _choice("send", "group"),
    "request_channel": _normal_channel(),
    "service_time": _non_negative(),
    "service_distribution": _choice("exponential", "constant"),
    "hash_seeds": _choice("per-process", "same"),
    "name": _string(),
}
_LOAD = {
    "kind": _choice("poisson", "burst", "fixed"),
    "rate": _positive(1e6),
    "requests": _int_range(0, MAX_REQUESTS),
    "burst_size": _int_range(1, 1_000_000),
    "burst_interval": _positive(),
}
_TOPOLOGY = {
    "clusters": _int_range(1, 64),
    "responses": _choice("shared", "cluster"),
}
_TABLES = {"load", "topology", "processes", "faults", "actors", "steps"}


def _check_table(data: Any, spec: dict, where: str) -> dict:
    if not isinstance(data, dict):
        _fail("", where.rstrip("."), data, "must be a table")
    for key, value in data.items():
        if key not in spec:
            allowed = ", ".join(sorted(spec) + (sorted(_TABLES) if where == "" else []))
            raise ScenarioError(f"key {where + key!r} is unknown; allowed: {allowed}")
        check, allowed = spec[key]
        if not check(value):
            _fail(where, key, value, allowed)
    return dict(data)


def _hosts(value: Any, where: str, key: str, shard_names: tuple[str, ...]) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(h, str) for h in value)):
        _fail(where, key, value, "must be a non-empty list of shard names")
    bad = [h for h in value if h not in shard_names]
    if bad:
        _fail(where, key, value, "every entry must be one of " + ", ".join(shard_names))
    if len(set(value)) != len(value):
        _fail(where, key, value, "must not name a shard twice")
    return tuple(value)


def _own_setup(item: dict, where: str, sc: Scenario):
    """A process's own router, host list and hash seed, each None when not given."""
    router = item.get("router")
    if router is not None and router not in PROFILE_NAMES:
        _fail(where, "router", router, "must be one of " + ", ".join(PROFILE_NAMES))
    hosts = item.get("hosts")
    if hosts is not None:
        hosts = _hosts(hosts, where, "hosts", sc.shard_names)
    seed = item.get("hash_seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= 4294967295):
        _fail(where, "hash_seed", seed, "must be an integer from 0 to 4294967295")
    return router, hosts, seed


def _processes(items: Any, sc: Scenario) -> tuple[ProcessOverride, ...]:
    if not isinstance(items, list):
        _fail("", "processes", items, "must be an array of tables ([[processes]])")
    out, seen = [], set()
    names = sc.process_names[:sc.interface_servers + sc.workers]  # actors say their own
    for i, item in enumerate(items):
        where = f"processes[{i}]."
        if not isinstance(item, dict):
            _fail("", f"processes[{i}]", item, "must be a table")
        unknown = set(item) - {"name", "router", "hosts", "hash_seed"}
        if unknown:
            raise ScenarioError(f"key {where + sorted(unknown)[0]!r} is unknown; "
                                "allowed: hash_seed, hosts, name, router")
        name = item.get("name")
        if name not in names:
            _fail(where, "name", name, f"must name a process: iface0..iface"
                  f"{sc.interface_servers - 1} or worker0..worker{sc.workers - 1}")
        if name in seen:
            _fail(where, "name", name, "must not be overridden twice")
        seen.add(name)
        router, hosts, seed = _own_setup(item, where, sc)
        out.append(ProcessOverride(name, router, hosts, seed))
    return tuple(out)


# The keys each fault kind takes (beyond "kind" and "at").
FAULT_KEYS = {
    "shard_crash": ("target", "duration"),
    "worker_crash": ("target", "duration"),
    "iface_crash": ("target", "duration"),
    "partition": ("target", "shard", "duration"),
    "host_change": ("hosts", "processes"),
}


def _faults(items: Any, sc: Scenario) -> tuple[Fault, ...]:
    if not isinstance(items, list):
        _fail("", "faults", items, "must be an array of tables ([[faults]])")
    out = []
    shards, procs = sc.shard_names, sc.process_names
    workers = tuple(p for p in procs if p.startswith("worker"))
    ifaces = tuple(p for p in procs if p.startswith("iface"))
    targets = {
        "shard_crash": (shards, "a shard: " + ", ".join(shards)),
        "worker_crash": (workers, f"a worker: worker0..worker{len(workers) - 1}"
                         if workers else "a worker, and this scenario has none"),
        "iface_crash": (ifaces, f"an interface server: iface0..iface{len(ifaces) - 1}"
                        if ifaces else "an interface server, and this scenario has none"),
        "partition": (procs, "a process name (iface0, worker3, ...)"),
    }
    # A fault after the end of the run would never fire: refuse it (when the end is known).
    end = None if sc.load.requests else sc.duration + sc.drain
    for i, item in enumerate(items):
        where = f"faults[{i}]."
        if not isinstance(item, dict):
            _fail("", f"faults[{i}]", item, "must be a table")
        kind, at = _tagged(item, where, "kind", FAULT_KEYS, ("processes",), end)
        allowed = ("kind", "at") + FAULT_KEYS[kind]
        duration = item.get("duration", 0.0)
        if "duration" in allowed and not (_is_num(duration) and 0 < duration <= 1e9):
            _fail(where, "duration", duration, "must be a number of seconds > 0 and at "
                  "most 1e9 (how long it lasts; a crashed part comes back after it)")
        target = item.get("target", "")
        if kind in targets and target not in targets[kind][0]:
            _fail(where, "target", target, "must be " + targets[kind][1])
        shard = item.get("shard", "")
        if kind == "partition" and shard not in shards:
            _fail(where, "shard", shard, "must be a shard: " + ", ".join(shards))
        hosts: tuple[str, ...] = ()
        processes: tuple[str, ...] = ()
        if kind == "host_change":
            hosts = _hosts(item["hosts"], where, "hosts", shards)
            raw = item.get("processes", "all")
            if raw == "all":
                processes = procs
            elif (isinstance(raw, list) and raw and all(p in procs for p in raw)
                  and len(set(raw)) == len(raw)):
                processes = tuple(raw)
            else:
                _fail(where, "processes", raw, "must be \"all\" or a list of distinct "
                      "process names (iface0, worker3, ...)")
        out.append(Fault(kind, float(at), target, float(duration), shard, hosts, processes))
    return tuple(sorted(out, key=lambda f: f.at))


_ACTOR_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
_ACTOR_KEYS = ("name", "prefix", "channels", "router", "hosts", "hash_seed", "listening")
_STEP_KEYS = {"send": ("actor", "channel", "count"),
              "group_add": ("actor", "channel", "group", "count"),
              "group_discard": ("actor", "channel", "group", "count"),
              "group_send": ("actor", "group", "count")}


def _tagged(item: dict, where: str, tag: str, keys: dict[str, tuple[str, ...]],
            optional: tuple[str, ...], end: float | None) -> tuple[str, float]:
    """Check a table whose ``tag`` (a fault's kind, a step's op) decides its keys:
    the tag, unknown and missing keys, and ``at`` within the run. Returns both."""
    value = item.get(tag, _MISSING)
    if value not in keys:
        _fail(where, tag, value, "must be one of " + ", ".join(keys))
    allowed = (tag, "at") + keys[value]
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise ScenarioError(f"key {where + unknown[0]!r} is not used by {tag} {value!r}; "
                            "allowed: " + ", ".join(allowed))
    missing = [k for k in allowed if k not in item and k not in optional]
    if missing:
        _fail(where, missing[0], _MISSING, f"is required for {tag} {value!r}")
    at = item["at"]
    if not (_is_num(at) and 0 <= at <= 1e9) or (end is not None and at >= end):
        _fail(where, "at", at, "must be a number of seconds from 0 up to "
              + (f"(not including) {end:g}, the end of the run" if end is not None
                 else "1e9"))
    return value, at


def _actors(items: Any, sc: Scenario) -> tuple[Actor, ...]:
    if not isinstance(items, list):
        _fail("", "actors", items, "must be an array of tables ([[actors]])")
    out: list[Actor] = []
    taken = set(sc.process_names)
    for i, item in enumerate(items):
        where = f"actors[{i}]."
        if not isinstance(item, dict):
            _fail("", f"actors[{i}]", item, "must be a table")
        unknown = sorted(set(item) - set(_ACTOR_KEYS))
        if unknown:
            raise ScenarioError(f"key {where + unknown[0]!r} is unknown; allowed: "
                                + ", ".join(_ACTOR_KEYS))
        name = item.get("name", _MISSING)
        if not isinstance(name, str) or not _ACTOR_NAME.match(name) \
                or re.fullmatch(r"(iface|worker)\d+", name):
            _fail(where, "name", name, "must be a short lower-case name (letters, digits, "
                  "'-', '_'), not ifaceN or workerN")
        if name in taken:
            _fail(where, "name", name, "must not name two processes")
        taken.add(name)
        prefix = item.get("prefix", "")
        if prefix and not (isinstance(prefix, str) and _valid_name(prefix)
                           and prefix.endswith("!") and prefix.count("!") == 1):
            _fail(where, "prefix", prefix, "must be a process-specific prefix ending at "
                  "its only '!', such as \"specific.AbCd!\"")
        channels = item.get("channels", [])
        if not isinstance(channels, list) or not all(
                isinstance(c, str) and _valid_name(c) for c in channels):
            _fail(where, "channels", channels, "must be a list of valid channel names")
        router, hosts, seed = _own_setup(item, where, sc)
        listening = item.get("listening", True)
        if not isinstance(listening, bool):
            _fail(where, "listening", listening, "must be true or false")
        if prefix and any(a.prefix == prefix for a in out):
            _fail(where, "prefix", prefix, "must not be another actor's prefix (a prefix "
                  "names one process)")
        out.append(Actor(name, prefix, tuple(channels), router, hosts, seed, listening))
    return tuple(out)


_DIALECT_WORDS = {"channels": "Channels 2+ names, such as specific.AbCd!x1",
                  "asgi1": "ASGI 1 names, with '!' or '?'",
                  "channels-2015": "2015 names, such as !http.response.abc"}


def _valid_name(name: str, dialect: str | None = None) -> bool:
    """Valid under ``dialect``, or under any generation's rule when it is None."""
    for d in (dialect,) if dialect else ("channels", "asgi1", "channels-2015"):
        try:
            validate_channel_name(name, d)
            return True
        except ChannelNameError:
            pass
    return False


def _one_generation(sc: Scenario) -> str:
    """Every process must run the same generation of layer: the same channel-name
    rules and the same storage (a pub/sub layer cannot read a list layer's keys, and
    a 2015 name is not a channels_redis name). Returns the shared dialect."""
    used = {sc.router: "router"}
    for i, o in enumerate(sc.processes):
        if o.router:
            used.setdefault(o.router, f"processes[{i}].router")
    for i, a in enumerate(sc.actors):
        if a.router:
            used.setdefault(a.router, f"actors[{i}].router")
    def generation(name: str):
        # live:channels_redis is channels_redis 4.3.0 itself: judge it by that profile
        return make_router("channels_redis-4" if name.startswith("live:") else name)

    base = generation(sc.router)
    for name, key in used.items():
        r = generation(name)
        if (r.dialect, r.storage == "pubsub") != (base.dialect, base.storage == "pubsub"):
            raise ScenarioError(
                f"key {key!r} = \"{name}\": must be a router of the same generation as "
                f"{sc.router!r} (one channel-name rule and one storage for the whole "
                "deployment; a rolling upgrade within a generation is fine)")
    return base.dialect


def _steps(items: Any, sc: Scenario) -> tuple[Step, ...]:
    if not isinstance(items, list):
        _fail("", "steps", items, "must be an array of tables ([[steps]])")
    actors = {a.name: a for a in sc.actors}
    dialect = _one_generation(sc)  # also checked for the whole scenario at the end
    owned = {c for a in sc.actors for c in a.channels}
    prefixes = {a.prefix for a in sc.actors if a.prefix}
    end = None if sc.load.requests else sc.duration + sc.drain
    out = []
    for i, item in enumerate(items):
        where = f"steps[{i}]."
        if not isinstance(item, dict):
            _fail("", f"steps[{i}]", item, "must be a table")
        op, at = _tagged(item, where, "op", _STEP_KEYS, ("count",), end)
        allowed = ("at", "op") + _STEP_KEYS[op]
        actor = item["actor"]
        if actor not in actors:
            _fail(where, "actor", actor, "must name an actor: " + (", ".join(actors) or
                                                                 "(none declared)"))
        count = item.get("count", 1)
        if not (_is_int(count) and 1 <= count <= 100_000):
            _fail(where, "count", count, "must be an integer from 1 to 100000")
        channel = item.get("channel", "")
        if "channel" in allowed:
            if not isinstance(channel, str) or not _valid_name(channel, dialect):
                _fail(where, "channel", channel, f"must be a valid channel name for the "
                      f"scenario's routers ({_DIALECT_WORDS[dialect]}), fewer than 100 "
                      "characters")
            local = channel[:channel.find("!") + 1] if "!" in channel else ""
            if ("!" in channel or "?" in channel) and channel not in owned \
                    and local not in prefixes:
                _fail(where, "channel", channel, "a process-specific channel must belong "
                      "to an actor (its prefix or its channels)")
        group = item.get("group", "")
        if "group" in allowed:
            try:
                validate_group_name(group)
            except ChannelNameError:
                _fail(where, "group", group, "must be a valid group name (ASCII letters, "
                      "digits, '-', '_' or '.')")
        out.append(Step(float(at), actor, op, channel, group, count))
    return tuple(out)


def scenario_from_dict(data: dict[str, Any], name: str = "scenario") -> Scenario:
    """Validate plain data (as read from TOML) and build a `Scenario`."""
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {name!r} must be a TOML table")
    top = {k: v for k, v in data.items() if k not in _TABLES}
    top = _check_table(top, _TOP, "")
    top = {k: float(v) if isinstance(Scenario.__dataclass_fields__[k].default, float)
           else v for k, v in top.items()}
    top.setdefault("name", name)
    load = _check_table(data.get("load", {}), _LOAD, "load.")
    load = {k: float(v) if k in ("rate", "burst_interval") else v for k, v in load.items()}
    topology = _check_table(data.get("topology", {}), _TOPOLOGY, "topology.")
    sc = Scenario(**top, load=Load(**load), topology=Topology(**topology))
    if sc.topology.clusters > 1:
        if sc.shards % sc.topology.clusters or sc.workers % sc.topology.clusters:
            _fail("topology.", "clusters", sc.topology.clusters,
                  f"must divide both shards ({sc.shards}) and workers ({sc.workers})")
    offered = sc.load.requests or (
        sc.duration * sc.load.rate if sc.load.kind != "burst"
        else sc.duration / sc.load.burst_interval * sc.load.burst_size)
    if offered > MAX_REQUESTS:
        raise ScenarioError(f"keys 'duration' and 'load' offer {offered:.3g} requests; "
                            f"allowed: at most {MAX_REQUESTS} (use load.requests, a "
                            "shorter duration or a lower rate)")
    sc = dataclasses.replace(sc, actors=_actors(data.get("actors", []), sc))
    if sc.interface_servers == 0 and sc.workers == 0 and not sc.actors:
        raise ScenarioError("keys 'interface_servers' and 'workers' are both 0 and no "
                            "[[actors]] are declared: nothing to simulate")
    sc = dataclasses.replace(sc, steps=_steps(data.get("steps", []), sc))
    sc = dataclasses.replace(sc, processes=_processes(data.get("processes", []), sc))
    sc = dataclasses.replace(sc, faults=_faults(data.get("faults", []), sc))
    _one_generation(sc)
    return sc


def read_scenario_data(path: str | None) -> tuple[dict[str, Any], str]:
    """The raw table of a TOML scenario file (None: the built-in default) and its name.

    Callers may merge command-line overrides into it before `scenario_from_dict`.
    """
    if path is None:
        text = resources.files("sim").joinpath("default.toml").read_text()
        return tomllib.loads(text), "default"
    try:
        with open(path, "rb") as f:
            data = tomllib.loads(f.read().decode("utf-8-sig"))  # a BOM is harmless
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ScenarioError(f"scenario file {path!r} is a directory") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"scenario file {path!r} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"scenario file {path!r} is not UTF-8 text") from None
    except OSError as e:
        raise ScenarioError(f"scenario file {path!r} cannot be read: {e.strerror}") from None
    return data, path.rsplit("/", 1)[-1].removesuffix(".toml")


def load_scenario(path: str | None, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read, override and validate a scenario (None: the built-in default)."""
    data, name = read_scenario_data(path)
    data.update(overrides or {})
    try:
        return scenario_from_dict(data, name)
    except ScenarioError as e:
        raise ScenarioError(f"{path or 'default scenario'}: {e}") from None


def default_scenario() -> Scenario:
    """The built-in scenario: the deployment the Channels docs describe."""
    return load_scenario(None)
