"""A real channel layer on Redis (redis-py, asyncio), placed by shardlab's router profiles.

Everything else in `layer/` decides where a message *would* go; this module sends it
there. `RedisChannelLayer` talks to real Redis servers and asks one router
(`layer.routing.make_router`, one instance per layer object, as the releases kept
their round robins per layer) for every shard it touches:

- ``send()`` writes to ``router.send_shard(channel)``;
- ``receive()`` of a process-specific channel waits on the shard of
  ``router.listen_shards(non-local name)``; of a normal channel, on
  ``router.poll_shard()`` (round robin per receive call), and stays there until a
  message arrives when the profile's ``poll_sticks`` says so;
- ``group_add()`` / ``group_discard()`` / ``group_send()`` keep membership on
  ``router.group_shard(group)`` and write each member's copy to
  ``router.group_send_shard(channel)``.

With the ``fixed`` profile (the default) every path agrees, and the layer can serve a
Channels project: ``CHANNEL_LAYERS = {"default": {"BACKEND": "layer.redis.RedisChannelLayer",
"CONFIG": {"hosts": [...], "router": "fixed"}}}``. With ``channels_redis-4`` it reproduces
that release's direct-send bug (issue #221) on real servers.

Behaviour followed: channels_redis 4.3.0 (the sorted-set storage of channels_redis 2+)
----------------------------------------------------------------------------------
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

Where it differs from channels_redis 4.3.0, deliberately:

- The prune, capacity check, add and expire of one send are one Lua script (the
  release issues them as four commands, so concurrent senders can overshoot the
  capacity); a group send prunes each member key on the member's own server before
  its capacity check (in the release that prune goes to the group's server, or to the
  previous batch's, so a group send prunes a member's key only when they coincide).
- Expiry is exact to the sender's clock (the release compares whole seconds, so a
  message can outlive ``expiry`` by up to a second); ``expiry`` may be fractional.
- The 12 identifying bytes are the layer's identity and a counter, not random bytes,
  so two sends of one layer in the same clock tick keep their order.
- ``receive(channel, timeout=...)`` also takes a timeout (raises `TimeoutError`).
- Invalid names raise `layer.names.ChannelNameError` (the release uses ``assert``).

Not supported
-------------
- Profiles whose storage is not ``sorted_set``: ``key_ttl`` (asgi_redis, the 2015
  backend) and ``pubsub`` (the pub/sub layer); constructing the layer with one of them
  raises `RedisLayerError` naming the supported profiles.
- Encryption (``symmetric_encryption_keys``), Sentinel, the in-flight backup queue of
  the release (a receive cancelled while a BZPOPMIN on a *normal* channel is in flight
  can lose that one message; receives on process-specific channels are cancel-safe),
  and receiving one layer object from two event loops at once (refused, as upstream).
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
           "ID_BYTES"]

logger = logging.getLogger(__name__)

#: Bytes before the msgpack body of a stored member (channels_redis's ``random_prefix_length``).
ID_BYTES = 12
_CHANNEL_FIELD = "__asgi_channel__"

#: Profiles whose storage this layer implements (sorted sets, channels_redis 2+).
SUPPORTED_PROFILES = tuple(n for n in PROFILE_NAMES if n.startswith("live:")
                           or ROUTERS[n]().storage == "sorted_set")


class RedisLayerError(ValueError):
    """A setting this layer cannot honour; the message says what is allowed."""


# -- server-side scripts: one round trip, atomic ---------------------------------------
# send: prune members scored at or below the cutoff, refuse at capacity, add, expire.
# KEYS[1] channel key; ARGV: member, score, cutoff, capacity, ttl in ms. Returns 1 or 0.
_SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
# group send, one call per shard: as _SEND for each member key; returns how many were full.
# KEYS: member keys; ARGV: members (n), capacities (n), score, cutoff, ttl in ms.
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
        instance that this layer then owns.
    prefix, expiry, group_expiry, capacity, channel_capacity
        As channels_redis: key prefix, message lifetime in seconds, group membership
        lifetime in seconds, messages per channel key, and per-channel capacities
        (glob pattern or compiled regex -> capacity; first match wins).
    client_prefix : str, optional
        The ``CLIENT`` part of this process's channels (default: a fresh UUID's hex,
        as the release). Letters and digits only.
    shard_names : sequence of str, optional
        The host list the router sees (default ``shard0 ... shardN-1``, the
        simulator's names), which matters for name-based rings (``fixed-rendezvous``,
        ``fixed-ketama``).
    seed, hash_seed : int
        The router's random stream is ``random.Random(f"{seed}/{client_prefix}")``;
        ``hash_seed`` is passed to the router.
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
        if router.storage != "sorted_set":
            raise RedisLayerError(self._unsupported(router.name, router.storage))
        self.router = router
        #: Seconds one BZPOPMIN waits before it is issued again (the release's 5 s).
        self.brpop_timeout = router.receive_timeout
        # Identity of this layer's stored members: 8 bytes of the client prefix + counter.
        self._id = hashlib.blake2b(self.client_prefix.encode(), digest_size=8).digest()
        self._sent = 0
        self._channels = 0
        #: What this layer did: sends, full refusals, group copies written and dropped,
        #: messages received, buffered messages dropped, Redis round trips.
        self.stats = {"sent": 0, "full": 0, "group_copies": 0, "group_full": 0,
                      "received": 0, "buffer_dropped": 0, "round_trips": 0}
        self._clients: dict[asyncio.AbstractEventLoop, list] = {}
        # process-specific receive state, bound to one event loop at a time
        self._recv_loop: asyncio.AbstractEventLoop | None = None
        self._buffers: dict[str, asyncio.Queue] = {}
        self._waiting: dict[str, int] = {}       # local channel -> receivers waiting
        self._wanted: dict[str, int] = {}        # non-local name -> receivers waiting
        self._pullers: dict[str, asyncio.Task] = {}

    @staticmethod
    def _unsupported(name: str, storage: str) -> str:
        return (f"router {name!r} stores messages as {storage!r}; layer.redis implements "
                f"the sorted_set storage only; allowed: {', '.join(SUPPORTED_PROFILES)}")

    def __repr__(self) -> str:
        return (f"<RedisChannelLayer router={self.router.name} hosts={self.ring_size} "
                f"client_prefix={self.client_prefix}>")

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
        names.validate_channel_name(name, receive=receive)
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

    def _member(self, message: dict) -> bytes:
        self._sent += 1
        ident = self._id + (self._sent & 0xFFFFFFFF).to_bytes(4, "big")
        return ident + msgpack.packb(message, use_bin_type=True)

    @staticmethod
    def _decode(member: bytes) -> dict:
        return msgpack.unpackb(member[ID_BYTES:], raw=False)

    def _ttl_ms(self) -> int:
        return max(1, round(self.expiry * 1000))

    # -- send ----------------------------------------------------------------------------
    async def send(self, channel: str, message: dict) -> None:
        """Send ``message`` on ``channel``; raises `ChannelFull` when its key is at capacity."""
        if not isinstance(message, dict):
            raise TypeError(f"message {message!r} is not a dict")
        if _CHANNEL_FIELD in message:
            raise ValueError(f"message has the reserved key {_CHANNEL_FIELD!r}; remove it")
        names.validate_channel_name(channel)
        if "!" in channel:
            message = dict(message)
            message[_CHANNEL_FIELD] = channel
        index = self.router.send_shard(channel, self.shard_names)
        now = time.time()
        self.stats["round_trips"] += 1
        added = await self.connection(index).eval(
            _SEND, 1, self._key(channel), self._member(message), repr(now),
            repr(now - self.expiry), self.get_capacity(channel), self._ttl_ms())
        if not added:
            self.stats["full"] += 1
            raise ChannelFull(channel)
        self.stats["sent"] += 1

    # -- receive -------------------------------------------------------------------------
    async def new_channel(self, prefix: str = "specific") -> str:
        """A fresh process-specific channel of this layer: ``prefix.CLIENT!n`` (n in base 36)."""
        name = f"{prefix}.{self.client_prefix}!{names.local_token(self._channels)}"
        self._channels += 1
        names.validate_channel_name(name)
        return name

    async def receive(self, channel: str, timeout: float | None = None) -> dict:
        """The next message on ``channel``; waits for one, or raises `TimeoutError`
        after ``timeout`` seconds when given."""
        names.validate_channel_name(channel)
        if "!" in channel:
            if timeout is None:
                return await self._receive_specific(channel)
            async with asyncio.timeout(timeout):
                return await self._receive_specific(channel)
        return await self._receive_normal(channel, timeout)

    async def _receive_normal(self, channel: str, timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self._key(channel)
        index = self.router.poll_shard(self.shard_names)
        while True:
            wait = self.brpop_timeout
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait < 0.001:  # BZPOPMIN with 0 would wait forever
                    raise TimeoutError(f"no message on {channel!r} within {timeout} s")
            self.stats["round_trips"] += 1
            popped = await self.connection(index).bzpopmin(key, timeout=wait)
            if popped is not None:
                self.stats["received"] += 1
                return self._decode(popped[1])
            if not self.router.poll_sticks:
                index = self.router.poll_shard(self.shard_names)

    async def _receive_specific(self, channel: str) -> dict:
        nl = names.non_local_name(channel)
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
        """Fetch messages for the non-local name ``nl`` while anyone waits on it."""
        try:
            listen = self.router.listen_shards(nl, self.shard_names)
            if len(listen) != 1:
                raise RedisLayerError(f"router {self.router.name!r} listens for {nl!r} on "
                                      f"{len(listen)} shards; allowed: one")
            key = self._key(nl)
            client = self.connection(listen[0])
            while self._wanted.get(nl, 0) > 0:
                self.stats["round_trips"] += 1
                popped = await client.bzpopmin(key, timeout=self.brpop_timeout)
                if popped is None:
                    continue
                message = self._decode(popped[1])
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
                if names.non_local_name(channel) == nl:
                    for _ in range(count):
                        self._deliver(channel, _Failed(error))

    # -- groups --------------------------------------------------------------------------
    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (membership lasts ``group_expiry`` seconds)."""
        names.validate_group_name(group)
        names.validate_channel_name(channel)
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
        names.validate_channel_name(channel)
        client = self.connection(self.router.group_shard(group, self.shard_names))
        self.stats["round_trips"] += 1
        await client.zrem(self._group_key(group), channel)

    async def group_send(self, group: str, message: dict) -> None:
        """Send one copy of ``message`` to each member key of ``group``; members at
        capacity are skipped silently (counted in ``stats["group_full"]``)."""
        if not isinstance(message, dict):
            raise TypeError(f"message {message!r} is not a dict")
        if _CHANNEL_FIELD in message:
            raise ValueError(f"message has the reserved key {_CHANNEL_FIELD!r}; remove it")
        names.validate_group_name(group)
        client = self.connection(self.router.group_shard(group, self.shard_names))
        now = time.time()
        self.stats["round_trips"] += 1
        members = await client.eval(_GROUP_MEMBERS, 1, self._group_key(group),
                                    repr(now - self.group_expiry))
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

    # -- flush and close -----------------------------------------------------------------
    async def flush(self) -> None:
        """Delete every message and group under ``prefix`` on every shard."""
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

    async def close(self) -> None:
        """Stop pulling and close this event loop's connections (flush() does not)."""
        pending = {t for t in self._pullers.values() if not t.done()}
        while pending:
            # redis-py 8 can absorb the first cancel of a BZPOPMIN that is just being
            # sent (it then waits the command out, up to brpop_timeout): cancel again.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.05)
        self._pullers.clear()
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
        """The Redis key a message for ``channel`` is stored under (prefix included)."""
        return self._key(channel)

