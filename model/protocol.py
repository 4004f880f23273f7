"""The routing protocol as an explicit-state model, in stateright's shape.

Interface servers, workers and shards are fixed; requests and responses are tokens.
A model is built from a `Config` (router profile, sizes, faults, seed, name draw) and
answers four questions, as stateright's ``Model`` does: `Model.init_states`,
`Model.actions` (in a deterministic order), `Model.next_state` and
`Model.properties`. `model.checker` explores it.

Names and routing
-----------------
Every shard choice comes from `layer.routing`, asked on concrete channel names: each
interface server owns a prefix (``http.response.AbCdEfGh!``, or the 2015 dialect's
``!http.response.AbCdEfGh``) drawn from ``random.Random(f"{seed}/names/{draw}")``,
and its requests' reply channels are the prefix plus a token (``0``, ``1``, ... in
the order the requests enter, as the simulator numbers them). Each process has its
own router instance and hash seed (drawn from the same stream), so profiles that
depend on the process (pub/sub 3.3's salted hash) disagree as they did. Where a
profile chooses (round robin or random: a normal channel's send, a worker's poll, a
2015 response send) the model lets it choose *any* of the process's hosts; a router
whose answer never varies over many calls is taken at its word.

Actions
-------
Protocol steps (their order in `Model.actions`):

``request``     a client request enters an interface server, which starts listening
                for its reply channel (the next token of that server);
``send``        the server sends it on the request channel to a shard its profile may
                choose; refused (ChannelFull) when the key is at capacity; pub/sub
                publishes it, which hands it at once to every worker subscribed there
                (its inbox), or to nobody;
``take``        an idle worker takes a queued request from a shard it polls (any queued
                request: a key is a multiset here, which allows every order Redis's
                FIFO allows and more; the properties do not depend on the order);
``reply``       the worker (pub/sub: for any request in its inbox) sends the response
                to the shard its router computes for the reply channel, into that
                channel's storage key (the owner's key); refused at capacity; pub/sub
                delivers at once to a subscribed owner or loses it;
``receive``     a server takes a response from a key it listens on, on a shard where
                it listens.

Faults, each switched on by name (`FAULTS`):

``shard_crash`` a shard holding messages loses them all and is back at once, empty;
``expiry``      any queued message expires;
``worker_crash``  a worker holding a request crashes (the request is dropped; pub/sub:
                its whole inbox) and restarts;
``capacity``    every key holds at most ``capacity`` messages: a send to a full key is
                refused with an error the sender sees (without it keys are unbounded);
``host_change`` a process's host list becomes every shard but the last (once per
                process; servers re-listen on the new list);
``partition``   a send fails because the process is cut from that shard (the sender
                sees the error). A partition that lasts longer only delays receives,
                and the interleavings already delay anything, so this is the whole of
                its effect on these properties.

States
------
A `State` holds, per process, which host list it uses; per request (in server, token
order) its `Req` record: stage, where its copies are, and its outcome; whether a
crash, an expiry or a worker crash has happened (``faulted``: it excuses a loss); and
the safety properties broken so far (``broken``, a bit mask: a property is broken *in*
a state, so a counterexample ends in a violating state). Copies are small integers
(`copy_code`): a request queued on a shard, a response stored on a shard, a request
held by a worker, a request in a pub/sub worker's inbox.

Workers with the same routing answers are interchangeable, and so are a server's
requests whose channels route alike: `Model.canonical` sorts them, so states that
differ only by such a renaming are one state.
"""

from __future__ import annotations

import dataclasses
import random
import string
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from layer.names import local_token
from layer.routing import PROFILE_NAMES, RouterError, make_router
from model import CheckError
from model.properties import MODEL_PROPERTIES, PROPERTIES, Property

__all__ = ["Config", "Model", "State", "Req", "Action", "FAULTS", "EXCUSING_FAULTS",
           "PROTOCOL_VERBS", "FAULT_VERBS", "copy_code", "LIMITS", "b36"]

FAULTS = ("shard_crash", "expiry", "worker_crash", "capacity", "host_change", "partition")
#: The faults whose losses at-most-once allows: a run with one of them is excused.
EXCUSING_FAULTS = ("shard_crash", "expiry", "worker_crash")

PROTOCOL_VERBS = ("request", "send", "take", "reply", "receive")
FAULT_VERBS = ("unreachable", "expire", "crash_shard", "crash_worker", "host_change")

# Request stages, and outcomes.
NEW, AT_IFACE, OUT = 0, 1, 2
NONE, ANSWERED, REFUSED = 0, 1, 2
_STAGES = ("new", "at server", "out")
_OUTCOMES = ("", "answered", "refused")

# Copy kinds: a copy is ``kind << 5 | index`` (a shard or a worker index, < 32).
QUEUED, STORED, HELD, INBOX = 0, 1, 2, 3
_KIND_NAMES = ("queued@shard", "response@shard", "held@worker", "inbox@worker")

# Bits of State.broken, one per safety property.
BITS = {"rendezvous": 1, "cluster_containment": 2, "at_most_once": 4, "owner_only": 8}
_RV, _CC, _AMO, _OO = (BITS[n] for n in ("rendezvous", "cluster_containment",
                                         "at_most_once", "owner_only"))

#: Allowed ranges of the sizes, as (low, high): also what the error messages say.
LIMITS = {"servers": (1, 16), "workers": (1, 31), "shards": (1, 31),
          "requests_per_server": (1, 16), "capacity": (1, 8),
          "seed": (0, 2**63 - 1), "draw": (0, 10_000)}

_rendezvous = PROPERTIES["rendezvous"].check
_containment = PROPERTIES["cluster_containment"].check
_at_most_once = PROPERTIES["at_most_once"].check
_owner_only = PROPERTIES["owner_only"].check


def copy_code(kind: int, index: int) -> int:
    """The small integer for a copy of ``kind`` (QUEUED, STORED, HELD, INBOX) at ``index``."""
    return kind << 5 | index


def b36(n: int) -> str:
    """A request token as the simulator writes it (`layer.names.local_token`)."""
    return local_token(n)


class Req(NamedTuple):
    """One request: its stage, where its copies are, and its outcome."""

    stage: int
    copies: tuple[int, ...]
    outcome: int

    def __repr__(self) -> str:
        parts = [_STAGES[self.stage]]
        parts += [f"{_KIND_NAMES[c >> 5]}{c & 31}" for c in self.copies]
        if self.outcome:
            parts.append(_OUTCOMES[self.outcome])
        return "<" + " ".join(parts) + ">"


class State(NamedTuple):
    """Host list per process (0 configured, 1 changed), requests, faulted, broken."""

    variants: tuple[int, ...]
    reqs: tuple[Req, ...]
    faulted: bool
    broken: int

    def __repr__(self) -> str:
        broken = [n for n, b in BITS.items() if self.broken & b]
        return (f"State(reqs={list(self.reqs)!r}, variants={self.variants!r}"
                f"{', faulted' if self.faulted else ''}"
                f"{', broken=' + '+'.join(broken) if broken else ''})")


class Action(NamedTuple):
    """One step: ``verb`` by ``actor`` (a process name, or "") on request ``req``
    (a position in `State.reqs`, or -1) at ``shard`` (an index, or -1)."""

    verb: str
    actor: str
    req: int
    shard: int

    def __repr__(self) -> str:
        parts = [self.verb]
        if self.actor:
            parts.append(self.actor)
        if self.req >= 0:
            parts.append(f"r{self.req}")
        if self.shard >= 0:
            parts.append(f"shard{self.shard}")
        return "Action(" + " ".join(parts) + ")"


@dataclass(frozen=True)
class Config:
    """Everything a model depends on, with its default.

    ``prefixes`` and ``hash_seeds`` (interface servers, then workers) replace the
    drawn names: a replay of a simulator run passes the run's own.
    """

    router: str = "fixed"
    servers: int = 2
    workers: int = 2
    shards: int = 2
    requests_per_server: int = 2
    faults: tuple[str, ...] = ()
    seed: int = 1
    draw: int = 0
    capacity: int = 1
    request_channel: str = "http.request"
    prefixes: tuple[str, ...] | None = None
    hash_seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.router not in PROFILE_NAMES:
            raise RouterError(f"--router {self.router!r} is unknown; allowed: "
                              f"{', '.join(PROFILE_NAMES)}")
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise CheckError(f"--{name.replace('_', '-')} {value!r}: must be an "
                                 f"integer from {lo} to {hi}")
        for f in self.faults:
            if f not in FAULTS:
                raise CheckError(f"--faults {f!r} is unknown; allowed: "
                                 f"{', '.join(FAULTS)}, or none, or all")
        if len(set(self.faults)) != len(self.faults):
            raise CheckError(f"--faults {','.join(self.faults)!r}: names a fault twice")
        if self.prefixes is not None and len(self.prefixes) != self.servers:
            raise CheckError(f"prefixes {self.prefixes!r}: need one per server ({self.servers})")
        if self.hash_seeds is not None and len(self.hash_seeds) != self.servers + self.workers:
            raise CheckError(f"hash_seeds {self.hash_seeds!r}: need one per process "
                             f"({self.servers + self.workers})")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["faults"] = list(self.faults)
        for k in ("prefixes", "hash_seeds"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d


def _answers(call, names: tuple[str, ...], ids: tuple[int, ...]) -> tuple[int, ...]:
    """The shards (global indexes) a routing call may answer on this host list: its one
    answer if it never varies over many calls, else every host (round robin, random)."""
    seen: list[int] = []
    for _ in range(8 * len(names)):
        i = call(names)
        if i not in seen:
            seen.append(i)
    return ids if len(seen) > 1 else (ids[seen[0]],)


def _mask(shards) -> int:
    m = 0
    for s in shards:
        m |= 1 << s
    return m


class Model:
    """The protocol for one `Config`: names, routing tables, actions, transitions."""

    def __init__(self, config: Config):
        self.config = c = config
        M, K, N, R = c.servers, c.workers, c.shards, c.requests_per_server
        self.M, self.K, self.N, self.R, self.P = M, K, N, R, M * R
        self.faults = frozenset(c.faults)
        self.shard_names = tuple(f"shard{i}" for i in range(N))
        self.iface_names = tuple(f"iface{i}" for i in range(M))
        self.worker_names = tuple(f"worker{w}" for w in range(K))
        self.proc_names = self.iface_names + self.worker_names
        self._proc_index = {n: i for i, n in enumerate(self.proc_names)}
        # Host lists: 0 = every shard; 1 = every shard but the last (a host change).
        lists = [tuple(range(N))]
        if N > 1:
            lists.append(tuple(range(N - 1)))
        self.host_lists = tuple(lists)
        self.host_change_possible = "host_change" in self.faults and N > 1
        names_of = [tuple(self.shard_names[s] for s in h) for h in self.host_lists]

        rng = random.Random(f"{c.seed}/names/{c.draw}")
        letters = ["".join(rng.choice(string.ascii_letters) for _ in range(8))
                   for _ in range(M)]
        seeds = [rng.randrange(1, 2**32) for _ in range(M + K)]
        probe = make_router(c.router)
        self.pubsub = probe.storage == "pubsub"
        if c.prefixes is not None:
            self.prefixes = tuple(c.prefixes)
        elif probe.dialect == "channels-2015":
            self.prefixes = tuple(f"!http.response.{x}" for x in letters)
        else:
            self.prefixes = tuple(f"http.response.{x}!" for x in letters)
        self.hash_seeds = tuple(c.hash_seeds) if c.hash_seeds is not None else tuple(seeds)
        self.routers = tuple(
            make_router(c.router, rng=random.Random(f"{c.seed}/names/{c.draw}/{p}/layer"),
                        hash_seed=self.hash_seeds[i])
            for i, p in enumerate(self.proc_names))

        # Requests, in (server, token) order.
        self.owner = tuple(p // R for p in range(self.P))
        self.token = tuple(b36(p % R) for p in range(self.P))
        self.channel = tuple(self.prefixes[p // R] + self.token[p] for p in range(self.P))
        key = tuple(self.routers[self.owner[p]].storage_key(self.channel[p])
                    for p in range(self.P))
        self.key = key
        self.per_request_key = tuple(key[p] == self.channel[p] for p in range(self.P))
        #: requests whose responses share p's storage key (p's key's listeners come
        #: from these requests' servers)
        self.same_key = tuple(tuple(q for q in range(self.P) if key[q] == key[p])
                              for p in range(self.P))
        V = range(len(self.host_lists))
        hl = self.host_lists
        # where a server listens for request q's reply channel, per host list
        self.listen = tuple(tuple(_mask(hl[v][i] for i in self.routers[self.owner[q]]
                                        .listen_shards(self.channel[q], names_of[v]))
                                  for v in V) for q in range(self.P))
        self.readable = tuple(_mask(h) for h in hl)
        ch = c.request_channel
        self.req_send = tuple(tuple(
            _answers(lambda n, r=self.routers[i]: r.send_shard(ch, n), names_of[v], hl[v])
            for v in V) for i in range(M))
        if self.pubsub:
            self.subscribed = tuple(tuple(
                hl[v][self.routers[M + w].listen_shards(ch, names_of[v])[0]] for v in V)
                for w in range(K))
            self.poll = tuple(tuple(0 for _ in V) for _ in range(K))
        else:
            self.subscribed = tuple(tuple(-1 for _ in V) for _ in range(K))
            self.poll = tuple(tuple(
                _mask(_answers(lambda n, r=self.routers[M + w]: r.poll_shard(n),
                               names_of[v], hl[v])) for v in V) for w in range(K))
        self.resp_send = tuple(tuple(tuple(
            _answers(lambda n, r=self.routers[M + w], x=self.channel[p]: r.send_shard(x, n),
                     names_of[v], hl[v]) for v in V) for w in range(K)) for p in range(self.P))
        self._listen_names = tuple(tuple(
            tuple(self.shard_names[s] for s in range(N) if m >> s & 1) for m in row)
            for row in self.listen)
        self._readable_names = tuple(tuple(self.shard_names[s] for s in h) for h in hl)
        self._symmetry_classes()

    # -- symmetry -------------------------------------------------------------------
    def _symmetry_classes(self) -> None:
        M, K, P = self.M, self.K, self.P
        wsig = [(self.poll[w], self.subscribed[w],
                 tuple(self.resp_send[p][w] for p in range(P))) for w in range(K)]
        self.worker_class = _classes(wsig)
        rsig = [(self.owner[p], self.listen[p], self.resp_send[p], self.per_request_key[p],
                 len(self.same_key[p])) for p in range(P)]
        self.req_class = _classes(rsig)
        self.worker_groups = _groups(self.worker_class)
        self.req_groups = _groups(self.req_class)
        # the positions a server's next request may take: its token's class
        self.token_group = tuple(tuple(q for q in range(P)
                                       if self.req_class[q] == self.req_class[p])
                                 for p in range(P))
        order = 1
        for g in self.worker_groups + self.req_groups:
            for k in range(2, len(g) + 1):
                order *= k
        #: how many renamings the canonical form folds together, at most
        self.symmetry_order = order

    def canonical(self, s: State) -> State:
        """The representative of ``s`` among the states that differ from it only by
        renaming interchangeable workers, or a server's interchangeable requests:
        workers sorted by (host list, what they hold), then requests sorted."""
        variants, reqs, faulted, broken = s
        changed = False
        if self.worker_groups:
            M = self.M
            rc = self.req_class
            held: dict[int, list] = {}
            for p, rq in enumerate(reqs):
                for c in rq[1]:
                    if c >= HELD << 5:
                        w = c & 31
                        item = (rc[p], c >> 5, rq[0], rq[2], len(rq[1]))
                        if w in held:
                            held[w].append(item)
                        else:
                            held[w] = [item]
            perm = None
            for g in self.worker_groups:
                keys = [(variants[M + w], sorted(held[w]) if w in held else []) for w in g]
                if all(keys[k] <= keys[k + 1] for k in range(len(g) - 1)):
                    continue
                order = sorted(range(len(g)), key=keys.__getitem__)
                if perm is None:
                    perm = list(range(self.K))
                for pos, o in enumerate(order):
                    perm[g[o]] = g[pos]
            if perm is not None:
                changed = True
                v = list(variants)
                for w in range(self.K):
                    v[M + perm[w]] = variants[M + w]
                variants = tuple(v)
                reqs = tuple(
                    Req(rq[0], tuple(sorted(c if c < HELD << 5 else (c & ~31) | perm[c & 31]
                                            for c in rq[1])), rq[2])
                    if rq[1] and rq[1][-1] >= HELD << 5 else rq
                    for rq in reqs)
        if self.req_groups:
            out = None
            for g in self.req_groups:
                recs = [reqs[q] for q in g]
                if all(recs[k] <= recs[k + 1] for k in range(len(g) - 1)):
                    continue
                if out is None:
                    out = list(reqs)
                recs.sort()
                for q, r in zip(g, recs):
                    out[q] = r
            if out is not None:
                changed = True
                reqs = tuple(out)
        return State(variants, reqs, faulted, broken) if changed else s

    # -- stateright's four ------------------------------------------------------------
    def init_states(self) -> list[State]:
        fresh = Req(NEW, (), NONE)
        return [State((0,) * (self.M + self.K), (fresh,) * self.P, False, 0)]

    def properties(self) -> tuple[Property, ...]:
        return tuple(PROPERTIES[n] for n in MODEL_PROPERTIES)

    def actions(self, s: State) -> list[Action]:
        """Every action enabled in ``s``: protocol steps first, then faults."""
        return self.successor_actions(s)[0]

    def successor_actions(self, s: State) -> tuple[list[Action], int]:
        """The enabled actions and how many of them (the first ones) are protocol steps:
        none means the run can end here (only faults could still happen)."""
        variants, reqs, _, _ = s
        M, K, R = self.M, self.K, self.R
        ifn, wkn = self.iface_names, self.worker_names
        busy = [False] * K
        for rq in reqs:
            for c in rq[1]:
                if c >> 5 == HELD:
                    busy[c & 31] = True
        acts: list[Action] = []
        add = acts.append
        for i in range(M):
            base = i * R
            t = 0
            for q in range(base, base + R):
                if reqs[q][0] != NEW:
                    t += 1
            if t < R:
                for q in self.token_group[base + t]:
                    if reqs[q][0] == NEW:
                        add(Action("request", ifn[i], q, -1))
                        break
        for p, rq in enumerate(reqs):
            stage = rq[0]
            if stage == AT_IFACE:
                i = self.owner[p]
                for x in self.req_send[i][variants[i]]:
                    add(Action("send", ifn[i], p, x))
            elif stage == OUT:
                for c in rq[1]:
                    kind, x = c >> 5, c & 31
                    if kind == QUEUED:
                        for w in range(K):
                            if not busy[w] and self.poll[w][variants[M + w]] >> x & 1:
                                add(Action("take", wkn[w], p, x))
                    elif kind == STORED:
                        for i in self._receivers(reqs, variants, p, x):
                            add(Action("receive", ifn[i], p, x))
                    else:  # HELD, or in a pub/sub worker's inbox: it serves and replies
                        for y in self.resp_send[p][x][variants[M + x]]:
                            add(Action("reply", wkn[x], p, y))
        n_protocol = len(acts)
        faults = self.faults
        if "partition" in faults:
            for p, rq in enumerate(reqs):
                if rq[0] == AT_IFACE:
                    i = self.owner[p]
                    for x in self.req_send[i][variants[i]]:
                        add(Action("unreachable", ifn[i], p, x))
                for c in rq[1]:
                    if c >> 5 >= HELD:
                        w = c & 31
                        for y in self.resp_send[p][w][variants[M + w]]:
                            add(Action("unreachable", wkn[w], p, y))
        if "expiry" in faults:
            for p, rq in enumerate(reqs):
                for c in rq[1]:
                    if c >> 5 <= STORED:
                        add(Action("expire", "", p, c & 31))
        if "shard_crash" in faults:
            occupied = 0
            for rq in reqs:
                for c in rq[1]:
                    if c >> 5 <= STORED:
                        occupied |= 1 << (c & 31)
            for x in range(self.N):
                if occupied >> x & 1:
                    add(Action("crash_shard", "", -1, x))
        if "worker_crash" in faults:
            holding = 0
            for rq in reqs:
                for c in rq[1]:
                    if c >> 5 >= HELD:
                        holding |= 1 << (c & 31)
            for w in range(K):
                if holding >> w & 1:
                    add(Action("crash_worker", wkn[w], -1, -1))
        if self.host_change_possible:
            for i, v in enumerate(variants):
                if v == 0:
                    add(Action("host_change", self.proc_names[i], -1, -1))
        return acts, n_protocol

    def _receivers(self, reqs, variants, p: int, x: int) -> list[int]:
        """Servers that read request ``p``'s storage key on shard ``x`` now."""
        out: list[int] = []
        for q in self.same_key[p]:
            i = self.owner[q]
            rq = reqs[q]
            if (rq[0] != NEW and not (self.per_request_key[q] and rq[2] == ANSWERED)
                    and self.listen[q][variants[i]] >> x & 1 and i not in out):
                out.append(i)
        return out

    def next_state(self, s: State, a: Action) -> State:
        """The state after ``a`` (which must be enabled in ``s``)."""
        variants, reqs, faulted, broken = s
        verb, p, x = a.verb, a.req, a.shard
        M = self.M
        if verb == "request":
            return State(variants, _put(reqs, p, Req(AT_IFACE, (), NONE)), faulted, broken)
        if verb == "send":
            if self.pubsub:
                subs = [w for w in range(self.K)
                        if self.subscribed[w][variants[M + w]] == x]
                if not _at_most_once(len(subs)):
                    broken |= _AMO
                rq = Req(OUT, tuple(copy_code(INBOX, w) for w in subs), NONE)
            elif self._full(reqs, range(self.P), QUEUED, x):
                rq = Req(OUT, (), REFUSED)
            else:
                rq = Req(OUT, (copy_code(QUEUED, x),), NONE)
            return State(variants, _put(reqs, p, rq), faulted, broken)
        if verb == "take":
            w = self._proc_index[a.actor] - M
            old = copy_code(QUEUED, x)
            rq = reqs[p]
            copies = tuple(sorted(copy_code(HELD, w) if c == old else c for c in rq[1]))
            return State(variants, _put(reqs, p, Req(OUT, copies, rq[2])), faulted, broken)
        if verb == "reply":
            w = self._proc_index[a.actor] - M
            rq = reqs[p]
            copies = _without(rq[1], copy_code(INBOX if self.pubsub else HELD, w))
            outcome = rq[2]
            owner = self.owner[p]
            v = variants[owner]
            written = self.shard_names[x]
            if not _rendezvous(written, self._listen_names[p][v]):
                broken |= _RV
            if not _containment(written, self._readable_names[v]):
                broken |= _CC
            out = list(reqs)
            if self.pubsub:  # published: delivered now to whoever subscribes, or lost
                got = self._receivers(reqs, variants, p, x)
                if not _at_most_once(len(got)):
                    broken |= _AMO
                for i in got:
                    if not _owner_only(self.iface_names[i], self.iface_names[owner]):
                        broken |= _OO
                    else:
                        outcome = ANSWERED
            elif self._full(reqs, self.same_key[p], STORED, x):
                if outcome == NONE:
                    outcome = REFUSED
            else:
                copies = tuple(sorted(copies + (copy_code(STORED, x),)))
            out[p] = Req(OUT, copies, outcome)
            return State(variants, tuple(out), faulted, broken)
        if verb == "receive":
            rq = reqs[p]
            copies = _without(rq[1], copy_code(STORED, x))
            outcome = rq[2]
            if not _owner_only(a.actor, self.iface_names[self.owner[p]]):
                broken |= _OO
            else:
                if not _at_most_once(2 if outcome == ANSWERED else 1):
                    broken |= _AMO
                outcome = ANSWERED
            return State(variants, _put(reqs, p, Req(OUT, copies, outcome)), faulted, broken)
        if verb == "unreachable":
            rq = reqs[p]
            outcome = rq[2] or REFUSED
            if a.actor.startswith("iface"):
                return State(variants, _put(reqs, p, Req(OUT, (), outcome)), faulted, broken)
            w = self._proc_index[a.actor] - M
            copies = _without(rq[1], copy_code(INBOX if self.pubsub else HELD, w))
            return State(variants, _put(reqs, p, Req(OUT, copies, outcome)), faulted, broken)
        if verb == "expire":
            rq = reqs[p]
            copies = tuple(c for c in rq[1] if not (c >> 5 <= STORED and c & 31 == x))
            return State(variants, _put(reqs, p, Req(OUT, copies, rq[2])), True, broken)
        if verb == "crash_shard":
            gone = (copy_code(QUEUED, x), copy_code(STORED, x))
            out = tuple(Req(rq[0], tuple(c for c in rq[1] if c not in gone), rq[2])
                        if any(c in gone for c in rq[1]) else rq for rq in reqs)
            return State(variants, out, True, broken)
        if verb == "crash_worker":
            w = self._proc_index[a.actor] - M
            gone = (copy_code(HELD, w), copy_code(INBOX, w))
            out = tuple(Req(rq[0], tuple(c for c in rq[1] if c not in gone), rq[2])
                        if any(c in gone for c in rq[1]) else rq for rq in reqs)
            return State(variants, out, True, broken)
        if verb == "host_change":
            v = list(variants)
            v[self._proc_index[a.actor]] = 1
            return State(tuple(v), reqs, faulted, broken)
        raise ValueError(f"unknown action {a!r}")

    def _full(self, reqs, positions, kind: int, x: int) -> bool:
        if "capacity" not in self.faults:
            return False
        code = copy_code(kind, x)
        n = 0
        for q in positions:
            n += reqs[q][1].count(code)
        return n >= self.config.capacity

    # -- reading a state ----------------------------------------------------------------
    def violated(self, s: State) -> list[str]:
        """The safety properties broken in ``s`` (broken once, broken from then on)."""
        return [n for n, b in BITS.items() if s.broken & b]

    def outcomes(self, s: State) -> tuple[str, ...]:
        """Per request: ``answered``, ``refused``, ``pending`` (not sent yet, or a copy
        still queued, held or stored) or ``lost`` (no copy left and no answer)."""
        out = []
        for rq in s.reqs:
            if rq[2]:
                out.append(_OUTCOMES[rq[2]])
            elif rq[0] != OUT or rq[1]:
                out.append("pending")
            else:
                out.append("lost")
        return tuple(out)

    def silent_losses(self, s: State) -> list[int]:
        """At a state where the run can end: the requests neither answered nor refused."""
        return [p for p, rq in enumerate(s.reqs) if rq[2] == NONE]

    def request_label(self, p: int) -> str:
        return f"{self.iface_names[self.owner[p]]}#{self.token[p]}"

    def describe(self, s: State) -> str:
        """One line per request, then host lists and flags: for people."""
        lines = []
        for p, rq in enumerate(s.reqs):
            where = ", ".join(self._where(c) for c in rq[1]) or "-"
            lines.append(f"{self.request_label(p)} {self.channel[p]}: {_STAGES[rq[0]]}; "
                         f"copies: {where}; {_OUTCOMES[rq[2]] or 'no outcome yet'}")
        changed = [self.proc_names[i] for i, v in enumerate(s.variants) if v]
        if changed:
            lines.append("host list changed: " + ", ".join(changed))
        if s.faulted:
            lines.append("a crash, an expiry or a worker crash has happened")
        if s.broken:
            lines.append("broken: " + ", ".join(self.violated(s)))
        return "\n".join(lines)

    def _where(self, c: int) -> str:
        kind, x = c >> 5, c & 31
        if kind == QUEUED:
            return f"request queued on {self.shard_names[x]}"
        if kind == STORED:
            return f"response stored on {self.shard_names[x]}"
        if kind == HELD:
            return f"held by {self.worker_names[x]}"
        return f"in {self.worker_names[x]}'s inbox"

    def hosts_of(self, proc: str, s: State) -> tuple[str, ...]:
        v = s.variants[self._proc_index[proc]]
        return tuple(self.shard_names[x] for x in self.host_lists[v])

    def listens_on(self, p: int, s: State) -> tuple[str, ...]:
        """Where request ``p``'s server listens for its reply channel in ``s``."""
        return self._listen_names[p][s.variants[self.owner[p]]]


def _put(reqs: tuple, p: int, rq: Req) -> tuple:
    return reqs[:p] + (rq,) + reqs[p + 1:]


def _without(copies: tuple[int, ...], c: int) -> tuple[int, ...]:
    i = copies.index(c)
    return copies[:i] + copies[i + 1:]


def _classes(signatures: Sequence) -> tuple[int, ...]:
    """Class index per item: items with equal signatures share one (first-seen order)."""
    seen: list = []
    out = []
    for sig in signatures:
        if sig not in seen:
            seen.append(sig)
        out.append(seen.index(sig))
    return tuple(out)


def _groups(classes: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Positions of each class that has two members or more, in first-seen order."""
    out = []
    for k in range(max(classes, default=-1) + 1):
        g = tuple(i for i, c in enumerate(classes) if c == k)
        if len(g) > 1:
            out.append(g)
    return tuple(out)
