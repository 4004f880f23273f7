"""Router profiles: where each generation of Channels put a message, and where it looked.

A *router* answers, for one process and that process's own host list:

- `Router.send_shard`: the host index a ``send()`` writes to;
- `Router.listen_shards`: the host index(es) the receiver of a channel waits on;
- `Router.poll_shard`: the host index one blocking receive on a normal channel waits on;
- `Router.group_shard`: the host index that keeps a group's membership;
- `Router.group_send_shard`: the host index ``group_send()`` writes a member's copy to;
- `Router.storage_key`: the key the message is stored under on that host.

Indexes are positions in the process's host list; the caller maps them to servers,
so processes configured with different host lists disagree exactly as they did.

A router instance belongs to one process, as the layer object did in the release:
round-robin cycles start at host 0 for every new instance, and random choices come
from the process's own seeded stream (``rng``). Routers never touch I/O.

Profiles (`ROUTERS`), each naming the release and the behaviour it reproduces:

=============================  ===================================================
``channels-2015``              Channels' first sharded Redis backend (master, Nov
                               2015 to Jan 2016, never tagged)
``asgi_redis-1.0``             asgi_redis 1.0.x
``asgi_redis-1``               asgi_redis 1.4.x
``channels_redis-2.0``         channels_redis 2.0.0 to 2.1.1
``channels_redis-4``           channels_redis 2.2.0 to 4.3.0 (direct-send bug, #221)
``channels_redis-pubsub-3.3``  the pub/sub layer of channels_redis 3.3.0 (salted hash)
``channels_redis-pubsub``      the pub/sub layer from 3.3.1 (CRC on the whole name)
``fixed``                      the corrected rule; ``fixed-jump``, ``fixed-rendezvous``
                               and ``fixed-ketama`` use other rings
``live:channels_redis``        the installed channels_redis package itself
=============================  ===================================================
"""

from __future__ import annotations

import functools
import random
from typing import Callable, Sequence

from layer import names
from layer.hashing import RINGS, consistent_hash, top_bits_hash
from layer.pyhash import python_str_hash

__all__ = ["Router", "ROUTERS", "PROFILE_NAMES", "make_router", "RouterError"]

Hosts = Sequence[str]


class RouterError(ValueError):
    """An unknown profile or a bad router option."""


class Router:
    """Base profile: the behaviour of channels_redis 2.2.0 to 4.3.0.

    Subclasses override only what their release did differently.

    Attributes
    ----------
    name, release : str
        Registry name and the release(s) reproduced.
    dialect : str
        Channel-name rules (`layer.names.DIALECTS`).
    storage : str
        ``"sorted_set"``: one sorted set per channel key, pruned of expired messages
        when a send arrives (channels_redis 2+); ``"key_ttl"``: each message in its own
        key with a time-to-live, the channel a list of keys (asgi_redis, 2015);
        ``"pubsub"``: nothing stored, a publish reaches the subscribers of that moment.
    receive_timeout : float
        Seconds one blocking receive waits on a shard before it gives up.
    poll_sticks : bool
        True when one receive call keeps waiting on the shard it chose until a
        message arrives (channels_redis 2+); False when it returns empty after
        ``receive_timeout`` and the next call chooses again.
    group_full : str
        What group_send did with a member whose channel was full: ``"drop"``.
    """

    name = "channels_redis-4"
    release = "channels_redis 2.2.0 to 4.3.0"
    dialect = "channels"
    storage = "sorted_set"
    receive_timeout = 5.0
    poll_sticks = True
    group_full = "drop"

    def __init__(self, rng: random.Random | None = None, hash_seed: int = 0):
        self.rng = rng if rng is not None else random.Random(0)
        self.hash_seed = hash_seed
        self._send_rr = 0
        self._recv_rr = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- helpers shared by profiles ---------------------------------------------
    def _hash(self, value: str, hosts: Hosts) -> int:
        return consistent_hash(value, len(hosts))

    def _next_send_rr(self, hosts: Hosts) -> int:
        i = self._send_rr % len(hosts)
        self._send_rr += 1
        return i

    def _next_recv_rr(self, hosts: Hosts) -> int:
        i = self._recv_rr % len(hosts)
        self._recv_rr += 1
        return i

    def kind(self, channel: str) -> str:
        return names.kind_of(channel, self.dialect)

    def is_specific(self, channel: str) -> bool:
        """True for channels with one listener (routed by name, not spread)."""
        return self.kind(channel) != names.NORMAL

    # -- the profile's answers ----------------------------------------------------
    def send_rule(self, channel: str) -> str:
        """How ``send()`` picks the shard: ``"hash"`` of the name, ``"round robin"``
        per process, or ``"random"``."""
        return "hash" if "!" in channel else "round robin"

    def storage_key(self, channel: str) -> str:
        """The key a message for ``channel`` is stored (and received) under."""
        return names.non_local_name(channel)

    def send_shard(self, channel: str, hosts: Hosts) -> int:
        """``send()``: the whole name is hashed for "!" channels (issue #221)."""
        if "!" in channel:
            return self._hash(channel, hosts)
        return self._next_send_rr(hosts)

    def listen_shards(self, channel: str, hosts: Hosts) -> tuple[int, ...]:
        """Where the one receiver of a specific channel waits: its non-local name's shard.

        For a normal channel, every host (any worker may poll any of them).
        """
        if not self.is_specific(channel):
            return tuple(range(len(hosts)))
        return (self._hash(self.storage_key(channel), hosts),)

    def poll_shard(self, hosts: Hosts) -> int:
        """The host one blocking receive on a normal channel waits on (round robin)."""
        return self._next_recv_rr(hosts)

    def group_shard(self, group: str, hosts: Hosts) -> int:
        """The host that keeps ``group``'s membership."""
        return self._hash(group, hosts)

    def group_send_shard(self, channel: str, hosts: Hosts) -> int:
        """``group_send()`` writes a member's copy at the shard of its non-local name."""
        return self._hash(names.non_local_name(channel), hosts)


class ChannelsRedis20(Router):
    """channels_redis 2.0.0 to 2.1.1: ``send()`` and ``receive()`` both hash the
    non-local part of a process-specific name, so direct sends meet the receiver.
    Normal channels: round robin per layer instance on send and per receive call."""

    name = "channels_redis-2.0"
    release = "channels_redis 2.0.0 to 2.1.1"

    def send_shard(self, channel: str, hosts: Hosts) -> int:
        if "!" in channel:
            return self._hash(names.non_local_name(channel), hosts)
        return self._next_send_rr(hosts)


class Fixed(ChannelsRedis20):
    """The corrected rule: every path hashes the non-local name, on a chosen ring.

    ``ring`` is a key of `layer.hashing.RINGS`: ``crc`` (the releases' bucket map,
    default), ``jump``, ``rendezvous`` or ``ketama``. Everything else is as in
    channels_redis 4.3.0.
    """

    release = "corrected rule (shardlab)"

    def __init__(self, rng: random.Random | None = None, hash_seed: int = 0,
                 ring: str = "crc"):
        super().__init__(rng, hash_seed)
        if ring not in RINGS:
            raise RouterError(f"ring {ring!r} is unknown; allowed: {', '.join(RINGS)}")
        self.ring = ring
        self._ring: Callable[[str, Hosts], int] = RINGS[ring]
        self.name = "fixed" if ring == "crc" else f"fixed-{ring}"

    def _hash(self, value: str, hosts: Hosts) -> int:
        return self._ring(value, hosts)


class AsgiRedis14(Router):
    """asgi_redis 1.4.x (ASGI 1).

    - "!" channels: stored under, and hashed on, the non-local part on both sides;
    - "?" channels: stored under, and hashed on, the whole name on both sides;
    - the ring is ``crc32 & 0xfff`` over ``4096 / N`` (float), as `consistent_hash`;
    - normal channels: round robin per process on send; each blocking receive call
      waits on one shard (round robin) for ``blpop_timeout`` = 5 s, then returns empty;
    - each message in its own key with a time-to-live (``storage = "key_ttl"``).
    """

    name = "asgi_redis-1"
    release = "asgi_redis 1.4.x"
    dialect = "asgi1"
    storage = "key_ttl"
    poll_sticks = False

    def send_rule(self, channel: str) -> str:
        return "hash" if self.is_specific(channel) else "round robin"

    def send_shard(self, channel: str, hosts: Hosts) -> int:
        if self.is_specific(channel):
            return self._hash(self.storage_key(channel), hosts)
        return self._next_send_rr(hosts)

    # group_send sent each member's copy with send(): the same rule.
    group_send_shard = send_shard


class AsgiRedis10(AsgiRedis14):
    """asgi_redis up to 1.0.x (ASGI 1).

    "!" and "?" channels are stored under and hashed on the *whole* name, on both
    sides, with the top-bits ring (`layer.hashing.top_bits_hash`). Normal channels
    go to a random shard on send, and each receive call waits on one random shard.
    """

    name = "asgi_redis-1.0"
    release = "asgi_redis 1.0.x"

    def _hash(self, value: str, hosts: Hosts) -> int:
        return top_bits_hash(value, len(hosts))

    def storage_key(self, channel: str) -> str:
        return channel

    def send_rule(self, channel: str) -> str:
        return "hash" if self.is_specific(channel) else "random"

    def send_shard(self, channel: str, hosts: Hosts) -> int:
        if self.is_specific(channel):
            return self._hash(channel, hosts)
        return self.rng.randrange(len(hosts))

    group_send_shard = send_shard

    def poll_shard(self, hosts: Hosts) -> int:
        return self.rng.randrange(len(hosts))


class Channels2015(AsgiRedis10):
    """Channels' first sharded Redis backend (master branch, Nov 2015 to Jan 2016).

    - Response channels are the names that start with "!"; the receiver groups its
      channels by shard (top-bits ring on the channel name) and each receive call
      waits on one of those shards for 1 s.
    - Normal channels go to a random shard; a receive call waits on one random shard.
    - As shipped, a response send hashed the message's own freshly generated storage
      key (prefix plus a random UUID hex) instead of the channel name, so its shard
      was effectively random: reproduced here by hashing such a key drawn from the
      process's stream. A response meets its receiver with probability 1/N.
    """

    name = "channels-2015"
    release = "Channels master, Nov 2015 to Jan 2016 (untagged)"
    dialect = "channels-2015"
    receive_timeout = 1.0
    key_prefix = "django-channels:"

    def send_rule(self, channel: str) -> str:
        return "random"

    def send_shard(self, channel: str, hosts: Hosts) -> int:
        if channel.startswith("!"):
            message_key = f"{self.key_prefix}{self.rng.getrandbits(128):032x}"
            return self._hash(message_key, hosts)
        return self.rng.randrange(len(hosts))

    group_send_shard = send_shard


class PubSub(Router):
    """The pub/sub layer of channels_redis from 3.3.1 to 4.3.0.

    Every channel, and every group's channel (``"asgi__group__" + group``), lives on
    the shard `consistent_hash` gives its whole name, on both sides. Nothing is stored:
    a publish reaches the processes subscribed on that shard at that moment, every
    one of them (so a normal channel with several subscribers is broadcast).
    """

    name = "channels_redis-pubsub"
    release = "channels_redis 3.3.1 to 4.3.0, RedisPubSubChannelLayer"
    storage = "pubsub"
    group_prefix = "asgi__group__"

    def storage_key(self, channel: str) -> str:
        return channel

    def is_specific(self, channel: str) -> bool:
        return True  # every name is routed by its hash

    def send_rule(self, channel: str) -> str:
        return "hash"

    def send_shard(self, channel: str, hosts: Hosts) -> int:
        return self._hash(channel, hosts)

    def listen_shards(self, channel: str, hosts: Hosts) -> tuple[int, ...]:
        return (self._hash(channel, hosts),)

    def poll_shard(self, hosts: Hosts) -> int:
        raise RouterError("the pub/sub layer subscribes by name; use listen_shards")

    def group_channel(self, group: str) -> str:
        """The pub/sub channel a group's messages are published on."""
        return self.group_prefix + group

    def group_shard(self, group: str, hosts: Hosts) -> int:
        return self._hash(self.group_channel(group), hosts)

    group_send_shard = send_shard


class PubSub33(PubSub):
    """The pub/sub layer as first shipped in channels_redis 3.3.0 (issue #273).

    A shard was the absolute value of Python's built-in, salted string ``hash`` of
    the name modulo N (one host: shard 0), so processes started with different
    ``PYTHONHASHSEED`` values disagree. Each process carries an explicit ``hash_seed``; the hash is bit-exact
    with CPython 3.11's (SipHash-1-3) under ``PYTHONHASHSEED=hash_seed``
    (`layer.pyhash.python_str_hash`).
    """

    name = "channels_redis-pubsub-3.3"
    release = "channels_redis 3.3.0, RedisPubSubChannelLayer"

    def _hash(self, value: str, hosts: Hosts) -> int:
        n = len(hosts)
        if n == 1:
            return 0
        return _salted_index(value, self.hash_seed, n)


@functools.lru_cache(maxsize=4096)
def _salted_index(value: str, hash_seed: int, n: int) -> int:
    # The pure-Python SipHash costs microseconds; a process sees few distinct names.
    return abs(python_str_hash(value, hash_seed)) % n


def _fixed(ring: str) -> Callable[..., Router]:
    return lambda rng=None, hash_seed=0: Fixed(rng, hash_seed, ring=ring)


def _live(rng: random.Random | None = None, hash_seed: int = 0) -> Router:
    from layer.live import LiveChannelsRedis  # optional dependency: imported on use
    return LiveChannelsRedis(rng, hash_seed)


#: Profile name -> factory ``(rng=None, hash_seed=0) -> Router``.
ROUTERS: dict[str, Callable[..., Router]] = {
    "channels-2015": Channels2015,
    "asgi_redis-1.0": AsgiRedis10,
    "asgi_redis-1": AsgiRedis14,
    "channels_redis-2.0": ChannelsRedis20,
    "channels_redis-4": Router,
    "channels_redis-pubsub-3.3": PubSub33,
    "channels_redis-pubsub": PubSub,
    "fixed": _fixed("crc"),
    "fixed-jump": _fixed("jump"),
    "fixed-rendezvous": _fixed("rendezvous"),
    "fixed-ketama": _fixed("ketama"),
    "live:channels_redis": _live,
}
PROFILE_NAMES = tuple(ROUTERS)


def live_available() -> bool:
    """True when the optional ``channels_redis`` package can be imported."""
    try:
        import channels_redis.core  # noqa: F401
    except ImportError:
        return False
    return True


def make_router(name: str, rng: random.Random | None = None, hash_seed: int = 0) -> Router:
    """Build a fresh router (one process's layer object) for profile ``name``.

    Raises
    ------
    RouterError
        For an unknown name (the message lists the allowed names), or for
        ``live:channels_redis`` when the package is not installed.
    """
    try:
        factory = ROUTERS[name]
    except KeyError:
        raise RouterError(
            f"router {name!r} is unknown; allowed: {', '.join(PROFILE_NAMES)}") from None
    if name.startswith("live:") and not live_available():
        raise RouterError(f"router {name!r} needs the channels_redis package "
                          "(pip install 'shardlab[live]')")
    return factory(rng=rng, hash_seed=hash_seed)
