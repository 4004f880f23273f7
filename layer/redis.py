"""A real channel layer on Redis (redis-py, asyncio), placed by shardlab's router profiles.

Everything else in `layer/` decides where a message *would* go; this module sends it
there. `RedisChannelLayer` talks to real Redis servers and asks one router
(`layer.routing.make_router`, one instance per layer object, as the releases kept
their round robins per layer) for every shard it touches:

- ``send()`` writes (or publishes) to ``router.send_shard(channel)``;
- ``receive()`` of a channel with one listener waits (or subscribes) on
  ``router.listen_shards(channel)``; of a normal channel, on ``router.poll_shard()``
  (round robin or random per receive call), and stays there until a message arrives
  when the profile's ``poll_sticks`` says so, else chooses again after each
  ``receive_timeout``;
- ``group_add()`` / ``group_discard()`` / ``group_send()`` keep membership on (or
  subscribe at) ``router.group_shard(group)`` and write each member's copy to
  ``router.group_send_shard(channel)`` (pub/sub: publish the group's channel at
  ``router.group_send_shard(router.group_channel(group))``).

How a shard stores messages is the router's ``storage``: every profile of
`layer.routing.ROUTERS` drives this layer. With the ``fixed`` profile (the default)
every path agrees, and the layer can serve a Channels project:
``CHANNEL_LAYERS = {"default": {"BACKEND": "layer.redis.RedisChannelLayer",
"CONFIG": {"hosts": [...], "router": "fixed"}}}``. With ``channels_redis-4`` it
reproduces that release's direct-send bug (issue #221) on real servers, with
``channels-2015`` the 2015 backend's random response shard, with
``channels_redis-pubsub-3.3`` and processes of different ``hash_seed`` the salted-hash
bug (issue #273).

Behaviour followed, storage ``sorted_set``: channels_redis 4.3.0 (and 2.0 to 4.3)
---------------------------------------------------------------------------------
- A channel's messages live in one sorted set, ``prefix + non-local name``, scored by
  the sender's clock. A send first removes members older than ``expiry``, refuses the
  message with `ChannelFull` when the set holds the channel's capacity or more, adds it,
  and sets the key to expire ``expiry`` after this send.
- A receive pops the lowest score with BZPOPMIN, waiting up to the profile's
  ``receive_timeout`` (5 s) per command. A member older than ``expiry`` that no send
  has pruned yet is still delivered, as in the release.
- A process-specific channel ``prefix.CLIENT!local`` is read through its non-local name
  ``prefix.CLIENT!``: one pull per non-local name fetches from Redis and hands each
  message to the local channel named in its ``__asgi_channel__`` field (a list when a
  group send reached several channels of one process through one key). Receiving on
  another process's channel is refused ("Wrong client prefix"). Buffers are bounded by
  ``capacity`` per channel; when one is full the oldest buffered message is dropped.
- Groups: a sorted set ``prefix:group:NAME`` of channel names scored by join time, its
  key expiring ``group_expiry`` after the last join; members older than
  ``group_expiry`` are removed on the next group send. A group send writes one copy per
  member key, skips (silently, counted in ``stats``) members at capacity.
- ``flush()`` deletes every key under ``prefix`` on every shard; ``new_channel()``
  returns ``prefix.CLIENT!local`` with ``CLIENT`` this layer's ``client_prefix``.
- Stored members are 12 identifying bytes and a msgpack map, the format channels_redis
  4.3.0 stores, so this layer and that package can read each other's messages on the
  same servers.

Behaviour followed, storage ``key_ttl``: asgi_redis 1.x and the 2015 backend
----------------------------------------------------------------------------
Profiles ``asgi_redis-1`` (asgi_redis 1.4.x), ``asgi_redis-1.0`` (asgi_redis 1.0.x) and
``channels-2015`` (Channels' first sharded backend), stored as asgi_redis 1.4.x did
it and as `sim.shard` models all three:

- Each message body is its own key, ``prefix`` + a random UUID's hex, expiring
  ``expiry`` after the send; the channel is a list, ``prefix + router.storage_key``,
  of those key names, expiring ``expiry + 1`` after its last send. One Lua script
  per send refuses the message with `ChannelFull` when the list holds the capacity
  or more (expired entries count until popped), sets the body, pushes its key name
  and renews the list's expiry (asgi_redis 1.x's ``chansend``).
- A receive pops a key name with BLPOP (waiting up to the profile's
  ``receive_timeout``: 5 s, 1 s for ``channels-2015``), then one Lua script fetches
  and deletes the body. An entry whose body key has expired is skipped and the
  receive pops again on the same shard. A receive on a normal channel chooses a shard
  with ``poll_shard`` for each BLPOP that times out (the release returned empty and
  the next call chose again).
- Channels whose ``router.storage_key`` is not their own name (asgi_redis 1.4's
  ``!`` channels, stored under the non-local name) carry ``__asgi_channel__`` and are
  demultiplexed per process as above; other channels with one listener (``?``
  channels, asgi_redis 1.0's and the 2015 backend's ``!`` channels, whole-name keys)
  are popped directly on their one listen shard.
- Groups as for sorted sets (asgi_redis 1.x's ``prefix:group:NAME``); a group send is
  one send per member channel, each to ``router.group_send_shard(channel)``, a full
  member skipped silently.
- ``new_channel()`` returns ``prefix.CLIENT!local``; under the 2015 names
  (``channels-2015``) ``!prefix.CLIENT.local``.

Behaviour followed, storage ``pubsub``: channels_redis 3.3.0 to 4.3.0, ``RedisPubSubChannelLayer``
-------------------------------------------------------------------------------------------------
- A send is PUBLISH of the msgpack body (no identifying bytes, as that layer) on the
  Redis channel named exactly the channel name, at ``router.send_shard``. Nothing is
  stored: a message reaches the subscribers of that moment, every one of them (a
  normal channel subscribed by two processes is broadcast), and is lost when there
  are none (counted in ``stats["unheard"]``). No expiry, no capacity: a subscribed
  channel's local queue is unbounded, as the release's.
- ``new_channel()`` subscribes the new channel at once; ``receive()`` of a channel not
  yet subscribed subscribes it (at ``router.listen_shards(channel)``) and then waits;
  several receivers of one channel in one process share its queue, each message to
  one of them. A receive that is cancelled unsubscribes the channel and drops its
  queue when nobody else waits on it, as the release.
- Groups are subscriptions: ``group_add`` (only for channels subscribed in this
  process, as the release) records the member in the process and subscribes
  ``router.group_channel(group)`` (``asgi__group__NAME``) at ``router.group_shard``;
  ``group_discard`` of the process's last member unsubscribes it; ``group_send``
  publishes once on it, and each process hands a copy to each of its members.
- ``flush()`` unsubscribes everything and forgets this process's queues and groups
  (the release closes its connections); it deletes nothing on the servers.

Where it differs from the releases, deliberately
------------------------------------------------
- sorted_set: the prune, capacity check, add and expire of one send are one Lua
  script (the release issues them as four commands, so concurrent senders can
  overshoot the capacity); a group send prunes each member key on the member's own
  server before its capacity check (in the release that prune goes to the group's
  server, or to the previous batch's, so a group send prunes a member's key only
  when they coincide). The 12 identifying bytes are the layer's identity and a
  counter, not random bytes, so two sends of one layer in the same clock tick keep
  their order.
- key_ttl: the release's GET and DEL of a popped body are one Lua script here (one
  round trip; the outcome is the same, the BLPOP already made the pop exclusive).
  For ``channels-2015`` this layer follows asgi_redis 1.x's storage, as the simulator
  does, not the 2015 code, which had no capacity (no ChannelFull), kept bodies and
  lists ``expiry + 10`` s, wrote JSON with four separate commands, never deleted a
  read body, and scored group members by their expiry time; and the message key the
  router hashes for a 2015 response send is drawn from the router's own stream, not
  the stored key's name (only the shard it gives matters).
- pubsub: the router names a group's channel ``asgi__group__NAME`` (the release:
  ``prefix + "__group__" + NAME``), so ``prefix`` must be ``"asgi"`` (the default).
  A subscribe returns once the server has confirmed it (the release returns after
  writing the command, so a publish racing it can be missed). A receive that times
  out (``timeout=``, this layer's extension) keeps the subscription; only
  cancellation unsubscribes. Unsubscribing waits until no other receive waits on the
  channel (the release drops the queue under any other waiting receivers).
  ``new_channel()`` names are ``prefix.CLIENT!local`` (the release:
  ``"asgispecific."`` and a UUID's hex); the router hashes the whole name either way.
- All storages: expiry is exact to the millisecond (the releases use whole seconds,
  so a message can outlive ``expiry`` by up to a second); ``expiry`` may be
  fractional. ``receive(channel, timeout=...)`` also takes a timeout (raises
  `TimeoutError`). Invalid names raise `layer.names.ChannelNameError`, by the
  router's name rules (``router.dialect``; the releases use ``assert``).

Not supported
-------------
- Encryption (``symmetric_encryption_keys``), Sentinel, the in-flight backup queue of
  channels_redis (a receive cancelled while a BZPOPMIN or BLPOP on a channel with a
  key of its own is in flight can lose that one message, as asgi_redis could;
  receives on demultiplexed process-specific channels are cancel-safe), asgi_redis
  1.x's ``receive()`` over many channels at once and its statistics extension, and
  receiving one layer object from two event loops at once (refused, as upstream).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import random
import re
import time
import uuid
from typing import Any, Sequence

try:
    import msgpack
    from redis import asyncio as aioredis
except ImportError as err:  # one line, saying how to fix it
    raise ImportError(f"layer.redis needs redis-py and msgpack ({err}); "
                      "install them with: pip install 'shardlab[real]' msgpack") from None

try:  # Channels' own exception, so consumers' ``except ChannelFull`` works
    from channels.exceptions import ChannelFull
except ImportError:  # pragma: no cover - channels is installed with channels_redis
    class ChannelFull(Exception):
        """The channel is at capacity (Channels' ``channels.exceptions.ChannelFull``)."""

from layer import names
from layer.routing import PROFILE_NAMES, ROUTERS, Router, make_router

__all__ = ["RedisChannelLayer", "ChannelFull", "RedisLayerError", "SUPPORTED_PROFILES",
           "STORAGES", "ID_BYTES"]

logger = logging.getLogger(__name__)

#: Bytes before the msgpack body of a stored member (channels_redis's ``random_prefix_length``).
ID_BYTES = 12
_CHANNEL_FIELD = "__asgi_channel__"

#: Router storages this layer implements (`layer.routing.Router.storage`).
STORAGES = ("sorted_set", "key_ttl", "pubsub")

#: Profiles this layer can be placed by: every profile of `layer.routing.ROUTERS`.
SUPPORTED_PROFILES = tuple(n for n in PROFILE_NAMES if n.startswith("live:")
                           or ROUTERS[n]().storage in STORAGES)

#: Seconds a subscribe waits for the server's confirmation before it fails.
SUBSCRIBE_TIMEOUT = 5.0

#: The group channel prefix of the pub/sub routers is the release's default prefix.
_PUBSUB_PREFIX = "asgi"


class RedisLayerError(ValueError):
    """A setting this layer cannot honour; the message says what is allowed."""


# -- server-side scripts: one round trip, atomic ---------------------------------------
# sorted_set send: prune members scored at or below the cutoff, refuse at capacity,
# add, expire. KEYS[1] channel key; ARGV: member, score, cutoff, capacity, ttl in ms.
_SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
# sorted_set group send, one call per shard: as _SEND for each member key; returns how
# many were full. KEYS: member keys; ARGV: members (n), capacities (n), score, cutoff, ttl.
_GROUP_SEND = """
local n = #KEYS
local score, cutoff, ttl = ARGV[2 * n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]
local full = 0
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff)
  if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[n + i]) then
    redis.call('ZADD', KEYS[i], score, ARGV[i])
    redis.call('PEXPIRE', KEYS[i], ttl)
  else
    full = full + 1
  end
end
return full
"""
# key_ttl send (asgi_redis 1.x's chansend): refuse when the list holds the capacity,
# else set the body with its time-to-live, push its key name, renew the list's expiry.
# KEYS[1] message key, KEYS[2] channel list; ARGV: body, capacity, body ttl ms, list ttl ms.
_SEND_TTL = """
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('RPUSH', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# key_ttl receive, after BLPOP handed over a message key: its body (nil when it
# expired), deleted. KEYS[1] message key.
_FETCH = """
local body = redis.call('GET', KEYS[1])
if body then redis.call('DEL', KEYS[1]) end
return body
"""
# group members: drop those that joined at or before the cutoff, return the rest.
_GROUP_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class _Failed:
    """Put in a waiting receiver's buffer when the pull for its channel failed."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


#: `RedisChannelLayer._pop`'s answer for a key_ttl entry whose body had expired.
_EXPIRED = object()


class _Subscriber:
    """One shard's pub/sub connection of one event loop, and the task that reads it."""

    def __init__(self, client: "aioredis.Redis"):
        self.pubsub = client.pubsub()
        self.subs: dict[str, asyncio.Future] = {}  # name -> confirmed (future done)
        self.reader: asyncio.Task | None = None

    async def close(self) -> None:
        task = self.reader
        self.reader = None
        while task is not None and not task.done():
            task.cancel()  # redis-py can absorb one cancel of a read in progress
            await asyncio.wait({task}, timeout=0.05)
        for fut in self.subs.values():
            fut.cancel()
        self.subs.clear()
        await self.pubsub.aclose()


class _PubSubState:
    """A process's pub/sub side in one event loop: subscriptions, queues, groups."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.shards: dict[int, _Subscriber] = {}
        self.queues: dict[str, asyncio.Queue] = {}   # subscribed channel -> bodies
        self.waiting: dict[str, int] = {}            # channel -> receivers waiting
        self.groups: dict[str, list[str]] = {}       # group channel -> member channels


def _client_for(host: Any) -> "aioredis.Redis":
    if isinstance(host, str):
        return aioredis.Redis.from_url(host)
    if isinstance(host, (tuple, list)):
        return aioredis.Redis(host=host[0], port=host[1])
    if isinstance(host, dict):
        host = dict(host)
        address = host.pop("address", None)
        if address is not None:
            return aioredis.Redis.from_url(address, **host)
        return aioredis.Redis(**host)
    raise RedisLayerError(f"host {host!r} is not allowed; allowed: a redis:// URL, a "
                          "(host, port) pair or a dict of redis-py connection options")


class RedisChannelLayer:
    """A channel layer on real Redis servers, one shard per host, placed by a router.

    Parameters
    ----------
    hosts : list
        One entry per shard: ``"redis://127.0.0.1:6379/0"``, ``("127.0.0.1", 6379)``
        or a dict of redis-py options (``{"address": url, ...}`` as channels_redis).
    router : str or Router
        A profile name from `SUPPORTED_PROFILES` (default ``"fixed"``), or a router
        instance that this layer then owns. Its ``storage`` decides how messages are
        kept (`STORAGES`).
    prefix, expiry, group_expiry, capacity, channel_capacity
        As channels_redis: key prefix, message lifetime in seconds, group membership
        lifetime in seconds, messages per channel key, and per-channel capacities
        (glob pattern or compiled regex -> capacity; first match wins). The pub/sub
        storage keeps nothing, so it uses none of them, and its ``prefix`` must be
        ``"asgi"``.
    client_prefix : str, optional
        The ``CLIENT`` part of this process's channels (default: a fresh UUID's hex,
        as the release). Letters and digits only.
    shard_names : sequence of str, optional
        The host list the router sees (default ``shard0 ... shardN-1``, the
        simulator's names), which matters for name-based rings (``fixed-rendezvous``,
        ``fixed-ketama``).
    seed, hash_seed : int
        The router's random stream is ``random.Random(f"{seed}/{client_prefix}")``;
        ``hash_seed`` is passed to the router (the process's ``PYTHONHASHSEED`` for
        ``channels_redis-pubsub-3.3``).
    """

    extensions = ["groups", "flush"]

    def __init__(self, hosts: Sequence[Any] | None = None, router: str | Router = "fixed",
                 prefix: str = "asgi", expiry: float = 60, group_expiry: float = 86400,
                 capacity: int = 100, channel_capacity: dict | None = None,
                 client_prefix: str | None = None, shard_names: Sequence[str] | None = None,
                 seed: int = 0, hash_seed: int = 0):
        if hosts is None:
            hosts = [("localhost", 6379)]
        if isinstance(hosts, (str, bytes)) or not hosts:
            raise RedisLayerError(f"hosts {hosts!r} is not allowed; allowed: a non-empty "
                                  "list of hosts, even for one server")
        self.hosts = list(hosts)
        self.ring_size = len(self.hosts)
        if shard_names is None:
            shard_names = [f"shard{i}" for i in range(self.ring_size)]
        self.shard_names = tuple(shard_names)
        if len(self.shard_names) != self.ring_size:
            raise RedisLayerError(f"shard_names has {len(self.shard_names)} names for "
                                  f"{self.ring_size} hosts; allowed: one name per host")
        for what, value in (("expiry", expiry), ("group_expiry", group_expiry),
                            ("capacity", capacity)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise RedisLayerError(f"{what} {value!r} is not allowed; must be positive")
        if not isinstance(prefix, str) or not prefix:
            raise RedisLayerError(f"prefix {prefix!r} is not allowed; allowed: a non-empty string")
        self.prefix = prefix
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.capacity = capacity
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.client_prefix = client_prefix if client_prefix is not None else uuid.uuid4().hex
        if not re.fullmatch(r"[A-Za-z0-9]+", self.client_prefix):
            raise RedisLayerError(f"client_prefix {self.client_prefix!r} is not allowed; "
                                  "allowed: ASCII letters and digits")
        if isinstance(router, str):
            if router not in SUPPORTED_PROFILES and router in PROFILE_NAMES:
                raise RedisLayerError(self._unsupported(router, ROUTERS[router]().storage))
            router = make_router(router, rng=random.Random(f"{seed}/{self.client_prefix}"),
                                 hash_seed=hash_seed)
        elif not isinstance(router, Router):
            raise RedisLayerError(f"router {router!r} is not allowed; allowed: one of "
                                  f"{', '.join(SUPPORTED_PROFILES)} or a Router instance")
        if router.storage not in STORAGES:
            raise RedisLayerError(self._unsupported(router.name, router.storage))
        if router.storage == "pubsub" and prefix != _PUBSUB_PREFIX:
            raise RedisLayerError(
                f"prefix {prefix!r} is not allowed with router {router.name!r}, whose group "
                f"channels are named {_PUBSUB_PREFIX + '__group__'!r} + group; allowed: "
                f"{_PUBSUB_PREFIX!r}")
        self.router = router
        self.storage = router.storage
        self.dialect = router.dialect
        #: Seconds one BZPOPMIN / BLPOP waits before it is issued again (the release's).
        self.brpop_timeout = router.receive_timeout
        # Identity of this layer's stored members: 8 bytes of the client prefix + counter.
        self._id = hashlib.blake2b(self.client_prefix.encode(), digest_size=8).digest()
        self._sent = 0
        self._channels = 0
        #: What this layer did: sends, full refusals, group copies written and dropped,
        #: messages received, buffered messages dropped, Redis round trips, key_ttl
        #: entries skipped because their body had expired, publishes nobody heard.
        self.stats = {"sent": 0, "full": 0, "group_copies": 0, "group_full": 0,
                      "received": 0, "buffer_dropped": 0, "round_trips": 0,
                      "expired_skipped": 0, "unheard": 0}
        self._clients: dict[asyncio.AbstractEventLoop, list] = {}
        # demultiplexed receive state, bound to one event loop at a time
        self._recv_loop: asyncio.AbstractEventLoop | None = None
        self._buffers: dict[str, asyncio.Queue] = {}
        self._waiting: dict[str, int] = {}       # local channel -> receivers waiting
        self._wanted: dict[str, int] = {}        # shared key name -> receivers waiting
        self._pullers: dict[str, asyncio.Task] = {}
        self._ps: _PubSubState | None = None     # pub/sub state of the current loop

    @staticmethod
    def _unsupported(name: str, storage: str) -> str:
        return (f"router {name!r} stores messages as {storage!r}; layer.redis implements "
                f"{', '.join(STORAGES)}; allowed: {', '.join(SUPPORTED_PROFILES)}")

    def __repr__(self) -> str:
        return (f"<RedisChannelLayer router={self.router.name} storage={self.storage} "
                f"hosts={self.ring_size} client_prefix={self.client_prefix}>")

    # -- Channels' BaseChannelLayer helpers ----------------------------------------------
    @staticmethod
    def compile_capacities(channel_capacity: dict) -> list:
        """Glob patterns (or compiled regexes) -> capacity, as Channels compiles them."""
        return [(p if hasattr(p, "match") else re.compile(fnmatch.translate(p)), v)
                for p, v in channel_capacity.items()]

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first matching pattern's, else ``capacity``."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity

    @staticmethod
    def non_local_name(name: str) -> str:
        return names.non_local_name(name)

    def valid_channel_name(self, name: str, receive: bool = False) -> bool:
        names.validate_channel_name(name, self.dialect, receive=receive)
        return True

    def valid_group_name(self, name: str) -> bool:
        names.validate_group_name(name)
        return True

    # -- connections -------------------------------------------------------------------
    def connection(self, index: int) -> "aioredis.Redis":
        """The client of shard ``index`` for the running event loop (created on first use)."""
        if not 0 <= index < self.ring_size:
            raise RedisLayerError(f"shard index {index} is not allowed; allowed: 0 to "
                                  f"{self.ring_size - 1}")
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            clients = self._clients[loop] = [None] * self.ring_size
        client = clients[index]
        if client is None:
            client = clients[index] = _client_for(self.hosts[index])
        return client

    def _key(self, channel: str) -> str:
        return self.prefix + self.router.storage_key(channel)

    def _group_key(self, group: str) -> str:
        return f"{self.prefix}:group:{group}"

    def _tagged(self, channel: str) -> bool:
        """True when ``channel`` shares its key with others, so its messages carry
        ``__asgi_channel__`` and are demultiplexed by the receiving process."""
        if self.storage == "sorted_set":
            return "!" in channel  # as channels_redis
        return self.router.storage_key(channel) != channel

    def _listen_shard(self, channel: str) -> int:
        listen = self.router.listen_shards(channel, self.shard_names)
        if len(listen) != 1:
            raise RedisLayerError(f"router {self.router.name!r} listens for {channel!r} on "
                                  f"{len(listen)} shards; allowed: one")
        return listen[0]

    def _member(self, message: dict) -> bytes:
        self._sent += 1
        ident = self._id + (self._sent & 0xFFFFFFFF).to_bytes(4, "big")
        return ident + msgpack.packb(message, use_bin_type=True)

    @staticmethod
    def _decode(member: bytes) -> dict:
        return msgpack.unpackb(member[ID_BYTES:], raw=False)

    def _ttl_ms(self) -> int:
        return max(1, round(self.expiry * 1000))

    @staticmethod
    def _check_message(message: Any) -> None:
        if not isinstance(message, dict):
            raise TypeError(f"message {message!r} is not a dict")
        if _CHANNEL_FIELD in message:
            raise ValueError(f"message has the reserved key {_CHANNEL_FIELD!r}; remove it")

    # -- send ----------------------------------------------------------------------------
    async def send(self, channel: str, message: dict) -> None:
        """Send ``message`` on ``channel``; raises `ChannelFull` when its key is at
        capacity (pub/sub: publishes it to whoever is subscribed now)."""
        self._check_message(message)
        names.validate_channel_name(channel, self.dialect)
        if self.storage == "pubsub":
            index = self.router.send_shard(channel, self.shard_names)
            await self._publish(index, self.router.storage_key(channel), message)
            return
        if self._tagged(channel):
            message = dict(message)
            message[_CHANNEL_FIELD] = channel
        index = self.router.send_shard(channel, self.shard_names)
        if self.storage == "key_ttl":
            added = await self._put_ttl(index, channel, message)
        else:
            now = time.time()
            self.stats["round_trips"] += 1
            added = await self.connection(index).eval(
                _SEND, 1, self._key(channel), self._member(message), repr(now),
                repr(now - self.expiry), self.get_capacity(channel), self._ttl_ms())
        if not added:
            self.stats["full"] += 1
            raise ChannelFull(channel)
        self.stats["sent"] += 1

    async def _put_ttl(self, index: int, channel: str, message: dict) -> bool:
        """key_ttl: store ``message`` in a key of its own at shard ``index``; False when full."""
        ttl = self._ttl_ms()
        self.stats["round_trips"] += 1
        return bool(await self.connection(index).eval(
            _SEND_TTL, 2, self.prefix + uuid.uuid4().hex, self._key(channel),
            msgpack.packb(message, use_bin_type=True),
            self.get_capacity(self.router.storage_key(channel)), ttl, ttl + 1000))

    async def _publish(self, index: int, name: str, message: dict) -> None:
        self.stats["round_trips"] += 1
        heard = await self.connection(index).publish(
            name, msgpack.packb(message, use_bin_type=True))
        self.stats["sent"] += 1
        if not heard:
            self.stats["unheard"] += 1

    # -- receive -------------------------------------------------------------------------
    async def new_channel(self, prefix: str = "specific") -> str:
        """A fresh process-specific channel of this layer: ``prefix.CLIENT!n`` (n in
        base 36; ``!prefix.CLIENT.n`` under the 2015 names). Pub/sub: subscribed."""
        token = names.local_token(self._channels)
        self._channels += 1
        if self.dialect == "channels-2015":
            name = f"!{prefix}.{self.client_prefix}.{token}"
        else:
            name = f"{prefix}.{self.client_prefix}!{token}"
        names.validate_channel_name(name, self.dialect)
        if self.storage == "pubsub":
            await self._ps_open(self._ps_state(), name)
        return name

    async def receive(self, channel: str, timeout: float | None = None) -> dict:
        """The next message on ``channel``; waits for one, or raises `TimeoutError`
        after ``timeout`` seconds when given."""
        names.validate_channel_name(channel, self.dialect)
        if self.storage == "pubsub":
            return await self._receive_pubsub(channel, timeout)
        if self._tagged(channel):
            if timeout is None:
                return await self._receive_specific(channel)
            async with asyncio.timeout(timeout):
                return await self._receive_specific(channel)
        return await self._receive_keyed(channel, timeout)

    async def _pop(self, index: int, key: str, wait: float) -> Any:
        """One blocking pop of ``key`` at shard ``index``: the message, None when ``wait``
        passed, or `_EXPIRED` (key_ttl) when the popped entry's body had expired."""
        client = self.connection(index)
        self.stats["round_trips"] += 1
        if self.storage == "sorted_set":
            popped = await client.bzpopmin(key, timeout=wait)
            return None if popped is None else self._decode(popped[1])
        popped = await client.blpop([key], timeout=wait)
        if popped is None:
            return None
        self.stats["round_trips"] += 1
        body = await client.eval(_FETCH, 1, popped[1])
        if body is None:
            self.stats["expired_skipped"] += 1
            return _EXPIRED
        return msgpack.unpackb(body, raw=False)

    async def _receive_keyed(self, channel: str, timeout: float | None) -> dict:
        """A channel with a key of its own: a normal channel at ``poll_shard``, or one
        with one listener at its listen shard."""
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self._key(channel)
        specific = self.router.is_specific(channel)
        index = (self._listen_shard(channel) if specific
                 else self.router.poll_shard(self.shard_names))
        while True:
            wait = self.brpop_timeout
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait < 0.001:  # a blocking pop with 0 would wait forever
                    raise TimeoutError(f"no message on {channel!r} within {timeout} s")
            message = await self._pop(index, key, wait)
            if message is _EXPIRED:
                continue  # as asgi_redis: pop again, on the same shard
            if message is not None:
                self.stats["received"] += 1
                return message
            if not specific and not self.router.poll_sticks:
                index = self.router.poll_shard(self.shard_names)

    async def _receive_specific(self, channel: str) -> dict:
        nl = self.router.storage_key(channel)
        if not nl.endswith("." + self.client_prefix + "!"):
            raise ValueError(f"channel {channel!r} is not this layer's (wrong client prefix); "
                             f"allowed: names from new_channel(), ending "
                             f"'.{self.client_prefix}!...'")
        loop = asyncio.get_running_loop()
        if self._recv_loop is not loop:
            if any(self._waiting.values()):
                raise RuntimeError("Two event loops are trying to receive() on one channel "
                                   "layer at once!")
            self._recv_loop = loop
            self._buffers.clear()
            self._pullers.clear()
        buf = self._buffer(channel)
        self._waiting[channel] = self._waiting.get(channel, 0) + 1
        self._wanted[nl] = self._wanted.get(nl, 0) + 1
        try:
            puller = self._pullers.get(nl)
            if puller is None or puller.done():
                self._pullers[nl] = loop.create_task(self._pull(nl))
            item = await buf.get()  # cancel-safe: an item stays queued until taken
        finally:
            self._wanted[nl] -= 1
            self._waiting[channel] -= 1
            if not self._waiting[channel]:
                del self._waiting[channel]
                if buf.empty():
                    self._buffers.pop(channel, None)
        if isinstance(item, _Failed):
            raise item.error
        self.stats["received"] += 1
        return item

    def _buffer(self, channel: str) -> asyncio.Queue:
        buf = self._buffers.get(channel)
        if buf is None:
            buf = self._buffers[channel] = asyncio.Queue(self.capacity)
        return buf

    def _deliver(self, channel: str, item: Any) -> None:
        buf = self._buffer(channel)
        if buf.full():  # a stalled reader: drop its oldest rather than grow (as upstream)
            buf.get_nowait()
            self.stats["buffer_dropped"] += 1
        buf.put_nowait(item)

    async def _pull(self, nl: str) -> None:
        """Fetch messages for the shared key name ``nl`` while anyone waits on it."""
        try:
            index = self._listen_shard(nl)
            key = self.prefix + nl
            while self._wanted.get(nl, 0) > 0:
                message = await self._pop(index, key, self.brpop_timeout)
                if message is None or message is _EXPIRED:
                    continue
                targets = message.pop(_CHANNEL_FIELD, nl)
                if isinstance(targets, str):
                    self._deliver(targets, message)
                else:  # a group send reached several channels of this process
                    for target in targets:
                        self._deliver(target, dict(message))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # wake everyone waiting under nl with the error
            for channel, count in list(self._waiting.items()):
                if self.router.storage_key(channel) == nl:
                    for _ in range(count):
                        self._deliver(channel, _Failed(error))

    # -- pub/sub -------------------------------------------------------------------------
    def _ps_state(self) -> _PubSubState:
        loop = asyncio.get_running_loop()
        state = self._ps
        if state is None or state.loop is not loop:
            if state is not None and any(state.waiting.values()) and not state.loop.is_closed():
                raise RuntimeError("Two event loops are trying to receive() on one channel "
                                   "layer at once!")
            state = self._ps = _PubSubState(loop)
        return state

    async def _ps_open(self, state: _PubSubState, channel: str) -> asyncio.Queue:
        """Give ``channel`` a queue in this process and subscribe it at its listen shard."""
        queue = state.queues[channel] = asyncio.Queue()
        try:
            await self._ps_subscribe(state, self._listen_shard(channel), channel)
        except BaseException:
            if state.queues.get(channel) is queue:
                del state.queues[channel]
            raise
        return queue

    async def _ps_subscribe(self, state: _PubSubState, index: int, name: str) -> None:
        """Subscribe ``name`` at shard ``index``; returns once the server confirmed it."""
        sub = state.shards.get(index)
        if sub is None:
            sub = state.shards[index] = _Subscriber(self.connection(index))
        fut = sub.subs.get(name)
        if fut is None:
            fut = sub.subs[name] = state.loop.create_future()
            self.stats["round_trips"] += 1
            try:
                await sub.pubsub.subscribe(name)
            except BaseException:
                if sub.subs.get(name) is fut:
                    del sub.subs[name]
                raise
            if sub.reader is None or sub.reader.done():
                sub.reader = state.loop.create_task(self._ps_read(state, sub))
        try:
            await asyncio.wait_for(asyncio.shield(fut), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            if sub.subs.get(name) is fut:
                del sub.subs[name]
            raise TimeoutError(f"shard {index} did not confirm the subscription to "
                               f"{name!r} within {SUBSCRIBE_TIMEOUT} s") from None

    async def _ps_unsubscribe(self, state: _PubSubState, index: int, name: str) -> None:
        sub = state.shards.get(index)
        if sub is None or sub.subs.pop(name, None) is None:
            return
        self.stats["round_trips"] += 1
        await sub.pubsub.unsubscribe(name)

    async def _ps_read(self, state: _PubSubState, sub: _Subscriber) -> None:
        """Hand what shard's subscriptions hear to this process's queues."""
        while True:
            try:
                message = await sub.pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - keep reading, as the release
                logger.warning("pub/sub read failed (%s); retrying in 1 s", error)
                for name, fut in list(sub.subs.items()):
                    if not fut.done():  # fail the subscribes in flight; a retry re-sends
                        del sub.subs[name]
                        fut.set_exception(error)
                        fut.exception()  # retrieved: no "never retrieved" warning
                await asyncio.sleep(1.0)
                continue
            if message is None:
                continue
            name = message["channel"]
            if isinstance(name, bytes):
                name = name.decode("utf8")
            kind = message["type"]
            if kind == "subscribe":
                fut = sub.subs.get(name)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind == "message":
                queue = state.queues.get(name)
                if queue is not None:
                    queue.put_nowait(message["data"])
                elif name in state.groups:
                    for channel in state.groups[name]:
                        queue = state.queues.get(channel)
                        if queue is not None:
                            queue.put_nowait(message["data"])

    async def _receive_pubsub(self, channel: str, timeout: float | None) -> dict:
        state = self._ps_state()
        queue = state.queues.get(channel)
        if queue is None:
            queue = await self._ps_open(state, channel)
        state.waiting[channel] = state.waiting.get(channel, 0) + 1
        cancelled = False
        try:
            if timeout is None:
                body = await queue.get()
            else:
                async with asyncio.timeout(timeout):
                    body = await queue.get()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            state.waiting[channel] -= 1
            if not state.waiting[channel]:
                del state.waiting[channel]
                # as the release: a cancelled receive means its consumer is leaving
                if cancelled and state.queues.get(channel) is queue:
                    del state.queues[channel]
                    try:
                        await self._ps_unsubscribe(state, self._listen_shard(channel), channel)
                    except Exception:  # noqa: BLE001 - the cancellation is what to raise
                        logger.exception("unsubscribing %r after a cancelled receive", channel)
        self.stats["received"] += 1
        return msgpack.unpackb(body, raw=False)

    # -- groups --------------------------------------------------------------------------
    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (membership lasts ``group_expiry`` seconds;
        pub/sub: while this process lives, and only for its subscribed channels)."""
        names.validate_group_name(group)
        names.validate_channel_name(channel, self.dialect)
        if self.storage == "pubsub":
            state = self._ps_state()
            if channel not in state.queues:
                raise RuntimeError(f"channel {channel!r} is not subscribed in this process; "
                                   "allowed: channels from new_channel() or being received "
                                   "on (the pub/sub layer keeps groups in the process)")
            gch = self.router.group_channel(group)
            members = state.groups.setdefault(gch, [])
            if channel not in members:
                members.append(channel)
            await self._ps_subscribe(state, self.router.group_shard(group, self.shard_names),
                                     gch)
            return
        client = self.connection(self.router.group_shard(group, self.shard_names))
        key = self._group_key(group)
        self.stats["round_trips"] += 1
        async with client.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {channel: time.time()})
            pipe.expire(key, max(1, int(self.group_expiry)))
            await pipe.execute()

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; no error when it is not a member."""
        names.validate_group_name(group)
        names.validate_channel_name(channel, self.dialect)
        if self.storage == "pubsub":
            state = self._ps_state()
            gch = self.router.group_channel(group)
            members = state.groups.get(gch)
            if not members or channel not in members:
                return
            members.remove(channel)
            if not members:
                del state.groups[gch]
                await self._ps_unsubscribe(
                    state, self.router.group_shard(group, self.shard_names), gch)
            return
        client = self.connection(self.router.group_shard(group, self.shard_names))
        self.stats["round_trips"] += 1
        await client.zrem(self._group_key(group), channel)

    async def group_send(self, group: str, message: dict) -> None:
        """Send one copy of ``message`` to each member of ``group``; members at
        capacity are skipped silently (counted in ``stats["group_full"]``). Pub/sub:
        one publish on the group's channel."""
        self._check_message(message)
        names.validate_group_name(group)
        if self.storage == "pubsub":
            gch = self.router.group_channel(group)
            await self._publish(self.router.group_send_shard(gch, self.shard_names), gch,
                                message)
            return
        client = self.connection(self.router.group_shard(group, self.shard_names))
        now = time.time()
        self.stats["round_trips"] += 1
        members = await client.eval(_GROUP_MEMBERS, 1, self._group_key(group),
                                    repr(now - self.group_expiry))
        if self.storage == "key_ttl":
            await self._group_send_ttl(group, [m.decode("utf8") for m in members], message)
            return
        # member key -> (shard, channels); insertion order follows the membership order
        by_key: dict[str, tuple[int, list[str]]] = {}
        for raw in members:
            channel = raw.decode("utf8")
            key = self._key(channel)
            entry = by_key.get(key)
            if entry is None:
                by_key[key] = (self.router.group_send_shard(channel, self.shard_names),
                               [channel])
            else:
                entry[1].append(channel)
        by_shard: dict[int, list[str]] = {}
        for key, (index, _) in by_key.items():
            by_shard.setdefault(index, []).append(key)
        for index, keys in by_shard.items():
            bodies = [self._member(dict(message, **{_CHANNEL_FIELD: by_key[k][1]}))
                      for k in keys]
            capacities = [self.get_capacity(by_key[k][1][0]) for k in keys]
            self.stats["round_trips"] += 1
            full = await self.connection(index).eval(
                _GROUP_SEND, len(keys), *keys, *bodies, *capacities, repr(now),
                repr(now - self.expiry), self._ttl_ms())
            self.stats["group_copies"] += len(keys) - full
            self.stats["group_full"] += full
            if full:
                logger.info("%s of %s channel keys over capacity in group %s",
                            full, len(by_key), group)

    async def _group_send_ttl(self, group: str, members: list[str], message: dict) -> None:
        """key_ttl: one send per member channel (asgi_redis 1.x), a full one skipped."""
        full = 0
        for channel in members:
            index = self.router.group_send_shard(channel, self.shard_names)
            copy = dict(message, **{_CHANNEL_FIELD: channel}) if self._tagged(channel) \
                else message
            if await self._put_ttl(index, channel, copy):
                self.stats["group_copies"] += 1
            else:
                full += 1
        self.stats["group_full"] += full
        if full:
            logger.info("%s of %s channels over capacity in group %s",
                        full, len(members), group)

    # -- flush and close -----------------------------------------------------------------
    async def flush(self) -> None:
        """Delete every message and group under ``prefix`` on every shard (pub/sub:
        unsubscribe everything and forget this process's queues and groups)."""
        if self.storage == "pubsub":
            await self._ps_close()
            return
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "*"
        for index in range(self.ring_size):
            client = self.connection(index)
            batch: list = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.delete(*batch)
                    batch = []
            if batch:
                await client.delete(*batch)
        for buf in self._buffers.values():
            while not buf.empty():
                buf.get_nowait()

    async def _ps_close(self) -> None:
        state = self._ps
        if state is None or state.loop is not asyncio.get_running_loop():
            return
        for sub in state.shards.values():
            await sub.close()
        state.shards.clear()
        state.queues.clear()
        state.groups.clear()

    async def close(self) -> None:
        """Stop pulling, unsubscribe, and close this event loop's connections (flush()
        does not close them)."""
        pending = {t for t in self._pullers.values() if not t.done()}
        while pending:
            # redis-py 8 can absorb the first cancel of a BZPOPMIN that is just being
            # sent (it then waits the command out, up to brpop_timeout): cancel again.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.05)
        self._pullers.clear()
        await self._ps_close()
        clients = self._clients.pop(asyncio.get_running_loop(), None) or []
        for client in clients:
            if client is not None:
                await client.aclose()

    close_pools = close  # channels_redis's name

    async def __aenter__(self) -> "RedisChannelLayer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- inspection, for tests and replays ------------------------------------------------
    def key_of(self, channel: str) -> str:
        """The Redis key a message for ``channel`` is stored under (prefix included):
        a sorted set or a list of message keys; pub/sub: the channel it is published on."""
        if self.storage == "pubsub":
            return self.router.storage_key(channel)
        return self._key(channel)
