"""The simulated deployment: interface servers, workers, shards, load and faults.

Every message is placed by the sending process's own router (`layer.routing`), on
that process's own host list; nothing here computes a shard. Every fate passes
through `World.settle`, which applies the precedence of causes:

- a message written where its listener never looks is ``misrouted``, whatever
  later removes it (expiry, a crash, the end of the run);
- otherwise a response whose interface server had died (or restarted under a new
  prefix) by the time of its fate is ``orphaned``.

Processes
---------
Interface server (``iface0``...): owns a response-channel prefix
(``http.response.<8 letters>!``; a 2015 profile uses ``!http.response.<token>``
names), listens where its router says, turns each client request into a message
on ``request_channel``, and (``reply = "group"``) adds its response channel to a
per-client group first. It is modelled as always listening on its listen shards, so
a response that reaches the right shard is received at once; a response that
arrives after ``client_timeout`` finds the client gone (``orphaned``).

Worker (``worker0``...): repeatedly asks its router which shard to poll for the
request channel and waits there (with the profile's timeout, or until a message
arrives when the profile's receive stayed on one shard), serves for a drawn
service time, then replies by ``send()`` or ``group_send()`` through its router.

Actor (scripted scenarios, the field cases): a named interface-server-like process
with a given prefix and channels, listening unless it is a stalled consumer, that
performs the scenario's steps (send, group_add, group_discard, group_send) at their
times. Scripted messages carry a trace: the shard written, the fate and its time.

Host-list changes reload a process's layer in place: same name and prefix, a new
router instance (its round robin restarts at host 0) on the new list.
"""

from __future__ import annotations

import random
import string

import simpy

from layer.names import local_token, non_local_name
from layer.routing import make_router
from sim.load import arrivals
from sim.ledger import (DELIVERED, DROPPED_BY_DEAD_WORKER, DUPLICATE, EXPIRED,
                        IN_FLIGHT, LOST_IN_CRASH, MISROUTED, ORPHANED, REJECTED_FULL,
                        REQUEST, RESPONSE, SCRIPTED, UNREACHABLE, FATES, KINDS,
                        Ledger)
from sim.monitors import Monitors
from sim.scenario import Fault, Scenario
from sim.shard import Msg, Shard
from sim.topology import build_topology

__all__ = ["World", "SimulationError"]

# Fates that a message written to the wrong shard gets instead: the misroute is the
# cause (a key on a shard nobody reads fills up, expires or crashes with it).
_MISROUTE_WINS = (EXPIRED, LOST_IN_CRASH, IN_FLIGHT, ORPHANED, REJECTED_FULL)
_ORPHAN_WINS = (EXPIRED, LOST_IN_CRASH, IN_FLIGHT)
#: Seconds a receiver waits before it reconnects after an error (a crashed or cut
#: shard); experiments derive predictions from it.
RECEIVE_RETRY_S = 1.0


#: Scripted messages traced one by one; beyond this the ledger still counts them.
TRACE_LIMIT = 10_000


class SimulationError(RuntimeError):
    """The run broke its own accounting (a bug, never a result)."""


class _Process:
    """What every process shares: identity, its own router instance, host lists."""

    def __init__(self, world: "World", name: str):
        node = world.graph.nodes[name]
        self.world = world
        self.env = world.env
        self.name = name
        self.router_name = node["router"]
        self.hash_seed = node["hash_seed"]
        self.hosts: tuple[str, ...] = node["hosts"]
        self.response_hosts: tuple[str, ...] = node["response_hosts"]
        self.gen = 0
        self.up = True
        self.ended: dict[int, float] = {}
        self.router = None
        self._new_router()

    def _new_router(self) -> None:
        rng = random.Random(f"{self.world.sc.seed}/{self.name}/layer{self.gen}")
        seed = self.hash_seed
        if self.gen and self.world.sc.hash_seeds == "per-process":
            seed = random.Random(f"{self.world.sc.seed}/{self.name}/hash_seed/{self.gen}"
                                 ).randrange(1, 2**32)  # a restarted process re-salts
        self.router = make_router(self.router_name, rng=rng, hash_seed=seed)


class Iface(_Process):
    def __init__(self, world: "World", name: str):
        super().__init__(world, name)
        self.rng = random.Random(f"{world.sc.seed}/{name}")
        self.listening: dict[str, frozenset] = {}   # key -> shard names listened on
        self.readable = frozenset(self.response_hosts)
        self.groups: dict[str, str] = {}             # group -> shard holding membership
        self._attaching: tuple[str, str] | None = None  # event log: (shard, key) in _attach
        self._new_prefix()

    def _new_prefix(self) -> None:
        letters = "".join(self.rng.choice(string.ascii_letters) for _ in range(8))
        if self.router.dialect == "channels-2015":
            self.prefix = f"!http.response.{letters}"
        else:
            self.prefix = f"http.response.{letters}!"
        self.count = 0

    # -- listening ------------------------------------------------------------------
    def listen_ids(self, key: str, channel: str) -> frozenset:
        ids = self.listening.get(key)
        if ids is None:
            hosts = self.response_hosts
            ids = frozenset(hosts[i] for i in self.router.listen_shards(channel, hosts))
        return ids

    def _register(self, key: str, channel: str) -> None:
        hosts = self.response_hosts
        ids = frozenset(hosts[i] for i in self.router.listen_shards(channel, hosts))
        self.listening[key] = ids
        partitions = self.world.partitions
        for sid in ids:
            if (self.name, sid) not in partitions:
                self._attach(self.world.shards[sid], key)

    def _attach(self, shard: Shard, key: str) -> None:
        """Listen on ``key`` at ``shard``, which hands over what is queued there (the
        event log records those as ``receive``)."""
        if self.world.events is not None:
            self._attaching = (shard.name, key)
        shard.listen(key, self.on_message)
        self._attaching = None

    def _unregister(self, key: str) -> None:
        for sid in self.listening.pop(key, ()):
            self.world.shards[sid].unlisten(key, self.on_message)

    def _detach_all(self) -> None:
        for key in list(self.listening):
            for sid in self.listening[key]:
                self.world.shards[sid].unlisten(key, self.on_message)

    # -- requests and responses -----------------------------------------------------
    def request(self) -> None:
        w = self.world
        token = local_token(self.count)
        self.count += 1
        channel = self.prefix + token
        if w.events is not None:
            w.events.append(("request", self.env.now, self.name, self.gen, token, channel))
        router = self.router
        pubsub = router.storage == "pubsub"
        group = None
        if w.sc.reply == "group":
            group = f"client.{self.name}.{self.gen}.{token}"
            if pubsub:
                key = router.group_channel(group)
                self._register(key, key)
            else:
                self._group_add(group, channel)
        if not pubsub or group is None:
            key = router.storage_key(channel)
            if key not in self.listening:
                self._register(key, channel)
        msg = Msg(REQUEST, self, self.gen, channel, self.env.now, group)
        w.send_request(self, msg)

    def _group_add(self, group: str, channel: str) -> None:
        hosts = self.response_hosts
        sid = hosts[self.router.group_shard(group, hosts)]
        shard = self.world.shards[sid]
        if shard.up and (self.name, sid) not in self.world.partitions:
            shard.group_add(group, channel, self.world.sc.group_expiry)
            self.groups[group] = sid

    def on_message(self, msg: Msg) -> None:
        """A response reached a key this server listens on."""
        w = self.world
        now = self.env.now
        if self._attaching is not None:
            w.events.append(("receive", now, self.name, *self._attaching, msg.channel))
        if msg.owner is not self or msg.owner_gen != self.gen:
            w.settle(msg, ORPHANED)
        elif now - msg.start > w.sc.client_timeout:
            w.settle(msg, ORPHANED)
        else:
            w.settle(msg, DELIVERED)
            w.ledger.latency.add(now - msg.start)
        router = self.router
        if router.storage == "pubsub" and msg.group is not None:
            self._unregister(router.group_channel(msg.group))
        elif router.storage_key(msg.channel) == msg.channel:
            self._unregister(msg.channel)    # a per-request key: stop listening
        if msg.group is not None:
            sid = self.groups.pop(msg.group, None)
            if sid is not None and w.shards[sid].up:
                w.shards[sid].group_discard(msg.group, msg.channel)

    # -- faults ---------------------------------------------------------------------
    def crash(self) -> None:
        self.up = False
        self.ended[self.gen] = self.env.now
        self._detach_all()
        self.listening.clear()
        self.groups.clear()

    def restart(self) -> None:
        self.gen += 1
        self.up = True
        self._new_router()
        self._new_prefix()

    def change_hosts(self, hosts: tuple[str, ...]) -> None:
        self._detach_all()
        pending = dict(self.listening)
        self.listening.clear()
        self.hosts = self.response_hosts = hosts
        self.readable = frozenset(hosts)
        self._new_router()
        for key in pending:  # keep listening for what is outstanding, on the new list
            self._register(key, key)

    def partition(self, sid: str, on: bool) -> None:
        shard = self.world.shards[sid]
        for key, ids in list(self.listening.items()):  # listen() may deliver and unregister
            if sid in ids:
                if on:
                    shard.unlisten(key, self.on_message)
                else:
                    self._attach(shard, key)


class Worker(_Process):
    def __init__(self, world: "World", name: str):
        super().__init__(world, name)
        self.rng = random.Random(f"{world.sc.seed}/{name}/service")
        self.holding: Msg | None = None
        self.wait_ev = None
        self.wait_at: tuple[str, str] | None = None
        self.wait_more: tuple[str, ...] = ()  # further shards the same wait is on
        # Receive from every shard at once (no release did): set by an experiment
        # before the run starts; not a scenario setting.
        self.wait_all_shards = False
        self.inbox: list[Msg] = []
        self._sub: tuple[str, str] | None = None
        self.proc = self.env.process(self.run())

    def service_time(self) -> float:
        sc = self.world.sc
        if sc.service_distribution == "constant" or sc.service_time == 0:
            return sc.service_time
        return self.rng.expovariate(1.0 / sc.service_time)

    def run(self):
        if self.gen and self.world.events is not None:
            self.world.events.append(("worker_restart", self.env.now, self.name))
        try:
            if self.router.storage == "pubsub":
                yield from self._run_pubsub()
            else:
                yield from self._run_queue()
        except simpy.Interrupt:
            self._drop_all()

    def _run_queue(self):
        if self.wait_all_shards:
            yield from self._run_queue_all()
            return
        w = self.world
        env = self.env
        key = w.sc.request_channel
        router = self.router
        sticky = router.poll_sticks
        timeout = router.receive_timeout
        log = w.events
        while True:
            router = self.router  # a host change swaps it
            hosts = self.hosts
            sid = hosts[router.poll_shard(hosts)]
            shard = w.shards[sid]
            if not shard.up or (self.name, sid) in w.partitions:
                yield env.timeout(RECEIVE_RETRY_S)
                continue
            msg = shard.take(key)
            if msg is None:
                ev = env.event()
                self.wait_ev, self.wait_at = ev, (sid, key)
                shard.wait(key, ev)
                if sticky:
                    msg = yield ev
                else:
                    yield ev | env.timeout(timeout)
                    if not ev.triggered:
                        ev.succeed(None)  # retire it, so no send hands it a message
                        shard.unwait(key, ev)
                    msg = ev.value
                self.wait_ev = self.wait_at = None
                if msg is None:
                    if sticky:
                        yield env.timeout(RECEIVE_RETRY_S)  # the connection broke: reconnect
                    continue
            elif log is not None:
                log.append(("take", env.now, self.name, sid, msg.channel))
            yield from self._serve(msg)

    def _run_queue_all(self):
        """The receive loop of a worker that waits on every shard of its list at once.

        No release did this; it is the comparison for the one-shard-per-receive
        releases. Each receive takes the oldest queued request over all reachable
        shards (so the shards together are one FIFO queue); if none is queued it
        waits on all of them with one event, which the first send to any of them
        hands its message to (a send skips a waiter already handed one). A wait ends
        after the profile's receive timeout (none if its receive stayed on one shard)
        and is then renewed at once; while a shard is down or cut off, the others
        are waited on and the full list is tried again every ``RECEIVE_RETRY_S``.
        """
        w = self.world
        env = self.env
        key = w.sc.request_channel
        log = w.events
        while True:
            router = self.router  # a host change swaps it
            live = [w.shards[sid] for sid in self.hosts
                    if w.shards[sid].up and (self.name, sid) not in w.partitions]
            if not live:
                yield env.timeout(RECEIVE_RETRY_S)
                continue
            oldest = None
            for shard in live:
                k = shard.keys.get(key)
                if k is not None and k.q and (oldest is None or k.q[0].t0 < head):
                    oldest, head = shard, k.q[0].t0
            if oldest is not None:
                msg = oldest.take(key)
                if msg is None:
                    continue  # its head had expired; take() settled it
                if log is not None:
                    log.append(("take", env.now, self.name, oldest.name, msg.channel))
                yield from self._serve(msg)
                continue
            ev = env.event()
            self.wait_ev, self.wait_at = ev, (live[0].name, key)
            self.wait_more = tuple(shard.name for shard in live[1:])
            for shard in live:
                shard.wait(key, ev)
            if len(live) < len(self.hosts):
                yield ev | env.timeout(RECEIVE_RETRY_S)
            elif router.poll_sticks:
                yield ev
            else:
                yield ev | env.timeout(router.receive_timeout)
            if not ev.triggered:
                ev.succeed(None)  # retire it, so no send hands it a message
            for shard in live:
                shard.unwait(key, ev)
            msg = ev.value
            self.wait_ev = self.wait_at = None
            self.wait_more = ()
            if msg is not None:
                yield from self._serve(msg)

    def _run_pubsub(self):
        self._subscribe()
        while True:
            if not self.inbox:
                self.wait_ev = self.env.event()
                yield self.wait_ev
                self.wait_ev = None
                continue
            yield from self._serve(self.inbox.pop(0))

    def _subscribe(self) -> None:
        key = self.world.sc.request_channel
        sid = self.hosts[self.router.listen_shards(key, self.hosts)[0]]
        self._sub = (sid, key)
        self.world.shards[sid].listen(key, self._on_publish)

    def _unsubscribe(self) -> None:
        sub = self._sub
        if sub is not None:
            self.world.shards[sub[0]].unlisten(sub[1], self._on_publish)
            self._sub = None

    def _on_publish(self, msg: Msg) -> None:
        self.inbox.append(msg)
        if self.wait_ev is not None and not self.wait_ev.triggered:
            self.wait_ev.succeed()

    def _serve(self, msg: Msg):
        self.holding = msg
        yield self.env.timeout(self.service_time())
        self.holding = None
        self.world.settle(msg, DELIVERED)
        if msg.trace is not None:
            msg.trace["deliveries"] += 1
        if msg.kind == REQUEST:  # a scripted message on the channel is served, not answered
            self.world.reply(self, msg)

    def _drop_all(self) -> None:
        w = self.world
        ev = self.wait_ev
        if w.events is not None:
            handed = ev.value if ev is not None and ev.triggered else None
            held = [m.channel for m in (self.holding, handed, *self.inbox)
                    if isinstance(m, Msg)]
            w.events.append(("worker_crash", self.env.now, self.name, tuple(held)))
        if self.holding is not None:
            w.settle(self.holding, DROPPED_BY_DEAD_WORKER)
            self.holding = None
        if ev is not None:
            if ev.triggered and isinstance(ev.value, Msg):
                w.settle(ev.value, DROPPED_BY_DEAD_WORKER)  # handed over as it died
            elif self.wait_at is not None:
                for sid in (self.wait_at[0], *self.wait_more):
                    w.shards[sid].unwait(self.wait_at[1], ev)
                if not ev.triggered:
                    ev.succeed(None)
        self.wait_ev = self.wait_at = None
        self.wait_more = ()
        for m in self.inbox:
            w.settle(m, DROPPED_BY_DEAD_WORKER)
        self.inbox.clear()
        self._unsubscribe()

    def crash(self) -> None:
        self.up = False
        self.ended[self.gen] = self.env.now
        if self.proc.is_alive:
            self.proc.interrupt("crash")

    def restart(self) -> None:
        self.gen += 1
        self.up = True
        self._new_router()
        self.proc = self.env.process(self.run())

    def wake(self, sid: str | None = None) -> None:
        """Break the current blocking receive (its connection failed or was replaced)."""
        ev = self.wait_ev
        if ev is not None and not ev.triggered and self.wait_at is not None \
                and (sid is None or self.wait_at[0] == sid or sid in self.wait_more):
            for s in (self.wait_at[0], *self.wait_more):
                self.world.shards[s].unwait(self.wait_at[1], ev)
            ev.succeed(None)

    def change_hosts(self, hosts: tuple[str, ...]) -> None:
        self.hosts = self.response_hosts = hosts
        self._new_router()
        if self.router.storage == "pubsub":
            self._unsubscribe()
            self._subscribe()
        else:
            self.wake()


class Actor(Iface):
    """A named process of a scripted scenario (a field case).

    It owns the channels under its ``prefix`` and those listed in ``channels``, and
    listens for them where its router says unless it is a stalled consumer
    (``listening = false``): then what is sent to it stays queued, filling the key.
    It performs the scenario's steps that name it, through its own router.
    """

    def __init__(self, world: "World", name: str):
        node = world.graph.nodes[name]
        self.fixed_prefix = node["prefix"]
        self.channels = tuple(node["channels"])
        self.listens = node["listening"]
        self.group_channels: dict[str, list[str]] = {}  # pub/sub: kept by the process
        super().__init__(world, name)

    def _new_prefix(self) -> None:
        self.prefix = self.fixed_prefix
        self.count = 0

    def owned_channels(self) -> list[str]:
        own = list(self.channels)
        for step in self.world.sc.steps:
            c = step.channel
            if c and c not in own and self.prefix and non_local_name(c) == self.prefix:
                own.append(c)
        return own

    def start_listening(self) -> None:
        if not self.listens:
            return
        for channel in self.owned_channels():
            key = self.router.storage_key(channel)
            if key not in self.listening:
                self._register(key, channel)

    def on_message(self, msg: Msg) -> None:
        self.world.settle(msg, DELIVERED)
        if msg.trace is not None:
            msg.trace["deliveries"] += 1

    def restart(self) -> None:
        super().restart()
        self.start_listening()


#: ``Msg.done`` once settled: by a delivery, or by any other fate.
_SETTLED, _DELIVERED = 1, 2


class World:
    """One run of one scenario; ``events=True`` keeps the event log (`sim.events`) in
    ``events`` (None when off)."""

    def __init__(self, sc: Scenario, events: bool = False, placement: bool = False):
        self.sc = sc
        self.env = simpy.Environment()
        # response channel -> the shard its send() wrote to (or tried to: a full key
        # counts), when asked for; the record `shardlab compare` checks per name
        self.placement: dict[str, str] | None = {} if placement else None
        self.ledger = Ledger()
        self.monitors = Monitors()
        self.graph = build_topology(sc)
        self.events: list[tuple] | None = [] if events else None
        self._crash_lost: list[str] = []
        if events:  # log fates, and which shard expired or lost a message
            self.settle = self._settle_logged
        self.shards = {s: Shard(self.env, s, sc.expiry,
                                self._shard_settle(s) if events else self.settle,
                                len(KINDS), self._on_full)
                       for s in sc.shard_names}
        self.cross_channel_full = 0
        self.cross_channel_first: dict | None = None
        self.trace: list[dict] = []
        self.trace_omitted = 0
        self.partitions: set[tuple[str, str]] = set()
        self._faults_on: dict[tuple, int] = {}  # overlapping faults on one part
        # ChannelFull errors raised to senders (send()); group_send drops silently
        self.channel_full_errors = [0] * len(KINDS)
        self.ifaces = [Iface(self, f"iface{i}") for i in range(sc.interface_servers)]
        self.workers = [Worker(self, f"worker{i}") for i in range(sc.workers)]
        self.actors = [Actor(self, a.name) for a in sc.actors]
        self.procs = {p.name: p for p in (*self.ifaces, *self.workers, *self.actors)}
        # who owns a process-specific channel in a scripted scenario: by prefix or name
        self.owners: dict[str, "Actor"] = {}
        for a in self.actors:
            if a.prefix:
                self.owners[a.prefix] = a
            for c in a.channels:
                self.owners[c] = a
        for a in self.actors:
            a.start_listening()
        for i, step in enumerate(sc.steps):
            self.env.process(self._step(i, step))
        self.load_done = self.env.event()
        self.env.process(self._load())
        for fault in sc.faults:
            self.env.process(self._fault(fault))
        if events:
            for p in (*self.ifaces, *self.workers):
                self.events.append(("start", 0.0, p.name, getattr(p, "prefix", None),
                                    p.hash_seed, p.hosts))

    # -- accounting -----------------------------------------------------------------
    def settle(self, msg: Msg, fate: int, at: float | None = None) -> None:
        """Give ``msg`` its one fate (a second call for the same message is ignored).

        Every delivery is also shown to the at_most_once monitor: a message delivered
        a second time (``done`` is `_DELIVERED` already) breaks it, whatever storage
        carried it.
        """
        if fate == DELIVERED:
            self.monitors.on_delivered(self.env.now if at is None else at, msg.channel,
                                       2 if msg.done == _DELIVERED else 1)
        if msg.done:
            return
        msg.done = _DELIVERED if fate == DELIVERED else _SETTLED
        if msg.misrouted and fate in _MISROUTE_WINS:
            fate = MISROUTED
        elif fate in _ORPHAN_WINS and msg.kind != REQUEST and msg.owner is not None:
            ended = msg.owner.ended.get(msg.owner_gen)
            if ended is not None and ended <= (self.env.now if at is None else at):
                fate = ORPHANED
        self.ledger.fates[msg.kind][fate] += 1
        if msg.trace is not None:
            msg.trace["fate"] = FATES[fate]
            msg.trace["fate_at"] = round(self.env.now if at is None else at, 6)

    def _settle_logged(self, msg: Msg, fate: int, at: float | None = None) -> None:
        if not msg.done:
            self.events.append(("fate", self.env.now, KINDS[msg.kind], msg.channel,
                                FATES[fate]))
        World.settle(self, msg, fate, at)

    def _shard_settle(self, sid: str):
        """Shard ``sid``'s fate entry when the event log is on: notes its expiries and
        crash losses, then settles."""
        def settle(msg: Msg, fate: int, at: float | None = None) -> None:
            if not msg.done:
                if fate == EXPIRED:
                    self.events.append(("expire", self.env.now, sid, msg.channel,
                                        KINDS[msg.kind]))
                elif fate == LOST_IN_CRASH:
                    self._crash_lost.append(msg.channel)
            self.settle(msg, fate, at)
        return settle

    def _log_write(self, verb: str, sender: _Process, msg: Msg, sid: str, ok: bool,
                   reached: tuple[str, ...]) -> None:
        """A ``send_request`` or ``reply`` event: where ``msg`` went and what happened
        (``ok``: the put or publish was made; ``reached``: the listeners it had)."""
        shard = self.shards[sid]
        detail = None
        if not shard.up:
            outcome = "down"
        elif (sender.name, sid) in self.partitions:
            outcome = "unreachable"
        elif sender.router.storage == "pubsub":
            outcome, detail = "published", reached
        elif not ok:
            outcome = "full"
        elif msg.kind == REQUEST:
            k = shard.keys.get(self.sc.request_channel)
            if k is not None and k.q and k.q[-1] is msg:
                outcome = "queued"
            else:
                outcome = "handed"
                detail = next(w.name for w in self.workers if w.wait_ev is not None
                              and w.wait_ev.triggered and w.wait_ev.value is msg)
        elif msg.done:
            outcome, detail = "delivered", reached[0]
        else:
            outcome = "stored"
        self.events.append((verb, self.env.now, sender.name, msg.channel, sid, outcome,
                            detail))

    @staticmethod
    def _listener_names(shard: Shard, key: str) -> tuple[str, ...]:
        return tuple(cb.__self__.name for cb in shard.listeners.get(key, ()))

    # -- writes ---------------------------------------------------------------------
    def _reachable(self, sender: str, sid: str, msg: Msg) -> Shard | None:
        shard = self.shards[sid]
        if not shard.up:
            self.settle(msg, LOST_IN_CRASH)
            return None
        if (sender, sid) in self.partitions:
            self.settle(msg, UNREACHABLE)
            return None
        return shard

    def send_request(self, iface: Iface, msg: Msg) -> None:
        self.ledger.sent[REQUEST] += 1
        self._send_normal(iface, msg, self.sc.request_channel)

    def _send_normal(self, sender: _Process, msg: Msg, channel: str) -> None:
        """send() on a normal channel: the shard the sender's router picks."""
        router = sender.router
        sid = sender.hosts[router.send_shard(channel, sender.hosts)]
        if msg.trace is not None:
            msg.trace["shard"] = sid
        shard = self._reachable(sender.name, sid, msg)
        ok = False
        if shard is not None:
            if router.storage == "pubsub":
                self._publish(shard, channel, msg, sender.name)
            elif not (ok := shard.put(channel, msg, self.sc.capacity,
                                      router.storage == "sorted_set")):
                self.channel_full_errors[msg.kind] += 1
        if self.events is not None and msg.kind == REQUEST:
            self._log_write("send_request", sender, msg, sid, ok,
                            self._listener_names(self.shards[sid], channel))

    def _publish(self, shard: Shard, key: str, msg: Msg, sender: str) -> None:
        n = shard.publish(key, msg)
        now = self.env.now
        if msg.group is None:  # a group publish reaches each member: not a duplicate
            self.monitors.on_deliveries(now, key, sender, shard.name, n)
        if msg.kind == REQUEST:
            # pub/sub routes even the request channel by its name: the workers must
            # have derived the same shard to subscribe on
            listened = frozenset(w._sub[0] for w in self.workers if w._sub) if n == 0 \
                else frozenset((shard.name,))
            if not self.monitors.on_rendezvous(now, key, sender, shard.name, listened):
                msg.misrouted = True
        if n == 0:
            if msg.kind == REQUEST and not msg.misrouted:
                msg.misrouted = True   # no worker subscribed anywhere
            # pub/sub keeps nothing: lost at once; misrouted if the listener derived
            # another shard, else nobody was subscribed any more (listener gone)
            self.settle(msg, ORPHANED)
        elif n > 1 and msg.group is None:
            self.settle(msg, DUPLICATE)

    def reply(self, worker: Worker, req: Msg) -> None:
        owner = req.owner
        resp = Msg(RESPONSE, owner, req.owner_gen, req.channel, req.start, req.group)
        self.ledger.sent[RESPONSE] += 1
        router = worker.router
        hosts = worker.response_hosts
        if req.group is None:
            self._write_response(worker, resp, req.channel,
                                 router.send_shard(req.channel, hosts))
        elif router.storage == "pubsub":
            gch = router.group_channel(req.group)
            self._write_response(worker, resp, gch, router.send_shard(gch, hosts))
        else:
            self._group_send(worker, resp)

    def _write_response(self, worker: Worker, msg: Msg, channel: str, idx: int) -> None:
        router = worker.router
        sid = worker.response_hosts[idx]
        shard = self._reachable(worker.name, sid, msg)
        log = self.events is not None and msg.kind == RESPONSE
        if shard is None:
            if log:
                self._log_write("reply", worker, msg, sid, False, ())
            return
        owner = msg.owner
        key = router.storage_key(channel)
        if msg.trace is not None:
            msg.trace["shard"] = sid
        if self.placement is not None and msg.kind == RESPONSE:
            self.placement[channel] = sid
        if owner is not None and owner.up and owner.gen == msg.owner_gen:
            if not self.monitors.on_specific_write(
                    self.env.now, channel, worker.name, sid,
                    owner.listen_ids(key, channel), owner.readable):
                msg.misrouted = True
        reached = self._listener_names(shard, key) if log else ()
        ok = True
        if router.storage == "pubsub":
            self._publish(shard, key, msg, worker.name)
        elif not (ok := shard.put(key, msg, self.sc.capacity,
                                  router.storage == "sorted_set")) and msg.group is None:
            self.channel_full_errors[msg.kind] += 1  # send() raised ChannelFull
        if log:
            self._log_write("reply", worker, msg, sid, ok, reached)

    def _group_send(self, worker: Worker, msg: Msg) -> None:
        router = worker.router
        hosts = worker.response_hosts
        group = msg.group
        gsid = hosts[router.group_shard(group, hosts)]
        gshard = self._reachable(worker.name, gsid, msg)
        if gshard is None:
            return
        members = gshard.group_members(group, self.sc.group_expiry)
        if msg.trace is not None:
            msg.trace["shard"] = gsid
        if not members:
            if group in gshard.groups:  # found where it was derived, past group_expiry
                self.settle(msg, EXPIRED)
                return
            elsewhere = [s for s, sh in self.shards.items() if group in sh.groups]
            if elsewhere:  # the membership is on a shard this worker does not derive
                self.monitors.on_specific_write(
                    self.env.now, group, worker.name, gsid, frozenset(elsewhere),
                    msg.owner.readable if msg.owner is not None else frozenset(elsewhere))
                msg.misrouted = True
            # no member anywhere: lost with a crash of the group's shard, else the
            # group was simply empty (nobody to receive it)
            self.settle(msg, EXPIRED if elsewhere else LOST_IN_CRASH
                        if group in gshard.lost_groups else ORPHANED)
            return
        # One copy per member channel, as a consumer sees it (channels_redis 4 writes
        # one message per key listing its channels; the process hands each its copy).
        for i, channel in enumerate(members):
            owner = self.owner_of(channel) or msg.owner
            if i == 0:
                copy = msg
            else:
                copy = Msg(msg.kind, owner, 0, channel, msg.start, group)
                self.ledger.sent[msg.kind] += 1
                if msg.trace is not None:
                    copy.trace = {**msg.trace, "shard": None, "fate": None,
                                  "fate_at": None, "deliveries": 0}
                    self.trace.append(copy.trace)
            copy.owner = owner
            copy.owner_gen = owner.gen if owner is not None else 0
            copy.channel = channel
            if copy.trace is not None:
                copy.trace["channel"] = channel
            self._write_response(worker, copy, channel,
                                 router.group_send_shard(channel, hosts))

    # -- load -----------------------------------------------------------------------
    def _pick_iface(self, i: int) -> Iface | None:
        n = len(self.ifaces)
        for j in range(n):
            p = self.ifaces[(i + j) % n]
            if p.up:
                return p
        return None

    def _load(self):
        """Offer the scenario's requests (`sim.load.arrivals`) to the interface servers;
        a draw that lands on a crashed one goes to the next one that is up."""
        sc, env = self.sc, self.env
        count = 0
        for gap, draw in arrivals(sc):
            if gap:
                yield env.timeout(gap)
            if draw is None:
                continue
            p = self._pick_iface(draw)
            if p is not None:
                p.request()
            count += 1
        if not sc.load.requests and env.now < sc.duration:
            yield env.timeout(sc.duration - env.now)  # a timed load lasts its duration
        self.load_done.succeed(count)

    # -- scripted steps (field cases) -------------------------------------------------
    def _step(self, index: int, step):
        yield self.env.timeout(step.at)
        actor = self.procs[step.actor]
        op = getattr(self, "_op_" + step.op)
        for _ in range(step.count):
            if actor.up:
                op(actor, index, step)

    def _traced(self, actor: "Actor", index: int, step, owner, channel: str,
                group: str | None) -> Msg:
        msg = Msg(SCRIPTED, owner, owner.gen if owner is not None else 0, channel,
                  self.env.now, group)
        self.ledger.sent[SCRIPTED] += 1
        if len(self.trace) >= TRACE_LIMIT:  # the ledger still counts it
            self.trace_omitted += 1
            return msg
        msg.trace = {"step": index, "at": round(self.env.now, 6), "actor": actor.name,
                     "op": step.op, "channel": channel, "group": group, "shard": None,
                     "fate": None, "fate_at": None, "deliveries": 0}
        self.trace.append(msg.trace)
        return msg

    def owner_of(self, channel: str) -> "Actor | None":
        """The actor that listens for ``channel`` (by name or prefix), if any."""
        return self.owners.get(channel) or self.owners.get(non_local_name(channel))

    def _op_send(self, actor: "Actor", index: int, step) -> None:
        channel = step.channel
        router = actor.router
        owner = self.owner_of(channel)
        msg = self._traced(actor, index, step, owner, channel, None)
        if owner is not None:  # a channel with one listener: routed by its name
            self._write_response(actor, msg, channel,
                                 router.send_shard(channel, actor.response_hosts))
            return
        self._send_normal(actor, msg, channel)

    def _op_group_add(self, actor: "Actor", index: int, step) -> None:
        router = actor.router
        if router.storage == "pubsub":
            # the pub/sub layer keeps group membership in the process, and subscribes
            # the process to the group's channel while any of its channels is in it
            members = actor.group_channels.setdefault(step.group, [])
            if step.channel not in members:
                members.append(step.channel)
            gch = router.group_channel(step.group)
            if gch not in actor.listening:
                actor._register(gch, gch)
            return
        hosts = actor.response_hosts
        sid = hosts[router.group_shard(step.group, hosts)]
        shard = self.shards[sid]
        if shard.up and (actor.name, sid) not in self.partitions:
            shard.group_add(step.group, step.channel, self.sc.group_expiry)

    def _op_group_discard(self, actor: "Actor", index: int, step) -> None:
        router = actor.router
        if router.storage == "pubsub":
            members = actor.group_channels.get(step.group, [])
            if step.channel in members:
                members.remove(step.channel)
            if not members:
                actor.group_channels.pop(step.group, None)
                actor._unregister(router.group_channel(step.group))
            return
        hosts = actor.response_hosts
        sid = hosts[router.group_shard(step.group, hosts)]
        shard = self.shards[sid]
        if shard.up and (actor.name, sid) not in self.partitions:
            shard.group_discard(step.group, step.channel)

    def _op_group_send(self, actor: "Actor", index: int, step) -> None:
        router = actor.router
        msg = self._traced(actor, index, step, None, "", step.group)
        if router.storage != "pubsub":
            self._group_send(actor, msg)
            return
        gch = router.group_channel(step.group)
        hosts = actor.response_hosts
        sid = hosts[router.send_shard(gch, hosts)]
        msg.channel = gch
        msg.trace["channel"] = gch
        msg.trace["shard"] = sid
        shard = self._reachable(actor.name, sid, msg)
        if shard is None:
            return
        shard.writes[msg.kind] += 1  # one publish
        # One message per member channel, as the receiving processes hand them out;
        # each member hears the publish only if it subscribed on this very shard.
        members = [(a, ch) for a in self.actors if a.up
                   for ch in a.group_channels.get(step.group, ())]
        if not members:
            self.settle(msg, ORPHANED)  # nobody subscribed: pub/sub keeps nothing
            return
        now = self.env.now
        for i, (member, channel) in enumerate(members):
            copy = msg
            if i:
                copy = Msg(msg.kind, member, member.gen, channel, msg.start, step.group)
                copy.trace = {**msg.trace, "deliveries": 0}
                self.trace.append(copy.trace)
                self.ledger.sent[msg.kind] += 1
            copy.owner, copy.owner_gen, copy.channel = member, member.gen, channel
            copy.trace["channel"] = channel
            if not self.monitors.on_rendezvous(now, gch, actor.name, sid,
                                               member.listening.get(gch, frozenset())):
                copy.misrouted = True
            if copy.misrouted or (member.name, sid) in self.partitions:
                self.settle(copy, ORPHANED)  # misrouted when it derived another shard
            else:
                self.settle(copy, DELIVERED)
                copy.trace["deliveries"] += 1

    def _on_full(self, shard: Shard, key: str, msg: Msg, queued) -> None:
        """A send was refused: note it when other channels' messages filled the key."""
        channel = msg.channel
        for m in queued:  # usually decided by the first message: this is a hot path
            if m.channel != channel:
                break
        else:
            return
        self.cross_channel_full += 1
        if self.cross_channel_first is None:
            others = sorted({m.channel for m in queued if m.channel != channel})
            self.cross_channel_first = {
                "time": round(self.env.now, 6), "shard": shard.name, "key": key,
                "channel": channel, "filled_by": others[:5], "queued": len(queued)}

    # -- faults ---------------------------------------------------------------------
    def _begin(self, what) -> bool:
        """A fault on ``what`` starts; True when it was not already under one."""
        n = self._faults_on.get(what, 0)
        self._faults_on[what] = n + 1
        return n == 0

    def _end(self, what) -> bool:
        """A fault on ``what`` ends; True when it was the last one covering it."""
        self._faults_on[what] -= 1
        return self._faults_on[what] == 0

    def _fault(self, f: Fault):
        env = self.env
        yield env.timeout(f.at)
        log = self.events
        if f.kind == "shard_crash":
            # Overlapping faults nest: the shard is back when the last one ends.
            if self._begin(("down", f.target)):
                self._crash_lost = []
                self.shards[f.target].crash()
                if log is not None:
                    log.append(("shard_crash", env.now, f.target, tuple(self._crash_lost)))
            yield env.timeout(f.duration)
            if self._end(("down", f.target)):
                self.shards[f.target].restart()
                if log is not None:
                    log.append(("shard_restart", env.now, f.target))
        elif f.kind in ("worker_crash", "iface_crash"):
            p = self.procs[f.target]
            if not p.up:
                return
            p.crash()
            yield env.timeout(f.duration)
            p.restart()
        elif f.kind == "partition":
            pair = (f.target, f.shard)
            p = self.procs[f.target]
            if self._begin(("cut", pair)):
                if log is not None:
                    log.append(("partition", env.now, f.target, f.shard, True))
                self.partitions.add(pair)
                if isinstance(p, Iface):
                    p.partition(f.shard, True)
                else:
                    p.wake(f.shard)
            yield env.timeout(f.duration)
            if self._end(("cut", pair)):
                self.partitions.discard(pair)
                if log is not None:
                    log.append(("partition", env.now, f.target, f.shard, False))
                if isinstance(p, Iface) and p.up:
                    p.partition(f.shard, False)
        elif f.kind == "host_change":
            for name in f.processes:
                p = self.procs[name]
                if log is not None:
                    log.append(("host_change", env.now, name, f.hosts))
                if p.up:
                    p.change_hosts(f.hosts)
                else:  # down: its restart reads the new configuration
                    p.hosts = p.response_hosts = f.hosts
                    if isinstance(p, Iface):
                        p.readable = frozenset(f.hosts)

    # -- the run --------------------------------------------------------------------
    def finish(self) -> None:
        """End of run: whatever has no fate yet is in flight (or expired by now)."""
        left = lambda m: self.settle(m, IN_FLIGHT)  # noqa: E731
        self.queued_at_end = {name: q for name, shard in self.shards.items()
                              if (q := shard.finish(left))}
        for wk in self.workers:
            if wk.holding is not None:
                left(wk.holding)
            ev = wk.wait_ev
            if ev is not None and ev.triggered and isinstance(ev.value, Msg):
                left(ev.value)
            for m in wk.inbox:
                left(m)
        sent, fates = self.ledger.sent_by_kind(), self.ledger.fates_by_kind()
        self.monitors.on_end(sent, fates)
        bad = self.ledger.unbalanced()
        if bad:
            raise SimulationError(
                f"fates do not add up for {', '.join(bad)}: sent {sent}, fates {fates}")
