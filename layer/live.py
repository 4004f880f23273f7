"""The ``live:channels_redis`` router: the installed channels_redis package's own answers.

Every other profile in `layer.routing` re-derives a release's shard choice; this one
asks the shipped code. Checked against channels_redis 4.3.0 (with channels 4.3.2).

How an index is captured. The router keeps one ``channels_redis.core.RedisChannelLayer``
per host count (the layer object belongs to the process, like its round-robin cycles),
built on dummy ``redis://`` URLs and never connected. On each of those objects the
``connection(index)`` method is replaced by one that raises a private exception
carrying ``index``. A question is then answered by starting the real coroutine with
``coro.send(None)``, no event loop needed: it runs the package's own name checks and
shard choice and stops, with the exception, at the first ``connection(index)`` call,
before any Redis command. So:

- `send_shard`: the index the real ``send()`` picks (its ``consistent_hash`` of the
  whole name for "!" channels, its own ``itertools.cycle`` for normal channels);
- `listen_shards`: for a "!" channel, the index ``receive_single()`` picks for the
  non-local name (what ``receive()`` waits on); for a normal channel, every host;
- `poll_shard`: the index ``receive_single()`` picks for a normal channel (the real
  receive round robin);
- `group_shard`: the index ``group_add()`` picks;
- `group_send_shard`: the index under which ``_map_channel_keys_to_connection()``
  files the member's key (a plain method, called directly);
- `storage_key`: the key ``send()`` hands to its first Redis command, without the
  layer prefix (a 1-host layer whose connection is a probe that raises with the key).

The layers are built with ``random_prefix_length=0`` so that the serializer, which
``_map_channel_keys_to_connection`` runs, does not draw from the global ``random``
stream; nothing that picks a shard depends on it. The package checks names with
``assert``, so under ``python -O`` it (and this router) accepts any name.
"""

from __future__ import annotations

import random
from typing import Sequence

try:
    import channels_redis
    from channels_redis.core import RedisChannelLayer
except ImportError as err:  # one line, saying how to fix it
    raise ImportError(f"layer.live needs the channels_redis package ({err}); "
                      "install it with: pip install 'shardlab[live]'") from None

from layer import names
from layer.routing import Router

__all__ = ["LiveChannelsRedis", "CHECKED_VERSION"]

#: The channels_redis release this adapter's capture points were checked against.
CHECKED_VERSION = "4.3.0"

Hosts = Sequence[str]

_MESSAGE: dict = {}  # send() copies a message before it adds to it
_ANY_CHANNEL = "shardlab.any"  # a valid normal channel name: polled, or added to a group


class _Picked(Exception):
    """Raised by the replaced ``connection(index)``; ``args[0]`` is the index."""


class _Keyed(Exception):
    """Raised by the key probe's first Redis command; ``args[0]`` is the key."""


def _raise_picked(index: int):
    raise _Picked(index)


class _KeyProbe:
    """A stand-in connection: its first command raises with the key it was given."""

    def __getattr__(self, command: str):
        def first_command(key, *args, **kwargs):
            raise _Keyed(key)
        return first_command


def _off_path(what: str, how: str) -> RuntimeError:
    return RuntimeError(
        f"channels_redis {channels_redis.__version__}: {what} {how} before choosing a "
        f"connection; layer.live was checked against {CHECKED_VERSION}")


def _index_of(coro, what: str) -> int:
    """Run ``coro`` up to its first ``connection(index)`` call; return ``index``."""
    try:
        coro.send(None)
    except _Picked as picked:
        return picked.args[0]
    except StopIteration:
        raise _off_path(what, "returned") from None
    coro.close()
    raise _off_path(what, "waited on the event loop")


def _new_layer(ring_size: int) -> RedisChannelLayer:
    layer = RedisChannelLayer(
        hosts=[f"redis://127.0.0.1:1/{i}" for i in range(ring_size)],
        random_prefix_length=0)
    layer.connection = _raise_picked  # on this instance only
    return layer


class LiveChannelsRedis(Router):
    """The installed channels_redis, driven through its own ``RedisChannelLayer`` code.

    One instance is one process: it keeps one layer object per host count, so the
    send and receive round robins are the real ``itertools.cycle`` objects, each
    starting at host 0. ``rng`` and ``hash_seed`` are accepted for the common
    signature and unused (the release draws no random shard).
    """

    name = "live:channels_redis"
    release = channels_redis.__version__

    def __init__(self, rng: random.Random | None = None, hash_seed: int = 0):
        super().__init__(rng, hash_seed)
        self._layers: dict[int, RedisChannelLayer] = {}
        self._key_layer: RedisChannelLayer | None = None

    def _layer(self, hosts: Hosts) -> RedisChannelLayer:
        n = len(hosts)
        layer = self._layers.get(n)
        if layer is None:
            if n < 1:
                raise ValueError(f"host list {list(hosts)!r} is empty; allowed: 1 or more hosts")
            layer = self._layers[n] = _new_layer(n)
        return layer

    def send_shard(self, channel: str, hosts: Hosts) -> int:
        return _index_of(self._layer(hosts).send(channel, _MESSAGE), "send()")

    def listen_shards(self, channel: str, hosts: Hosts) -> tuple[int, ...]:
        if "!" not in channel:
            return tuple(range(len(hosts)))
        coro = self._layer(hosts).receive_single(names.non_local_name(channel))
        return (_index_of(coro, "receive_single()"),)

    def poll_shard(self, hosts: Hosts) -> int:
        coro = self._layer(hosts).receive_single(_ANY_CHANNEL)
        return _index_of(coro, "receive_single()")

    def group_shard(self, group: str, hosts: Hosts) -> int:
        coro = self._layer(hosts).group_add(group, _ANY_CHANNEL)
        return _index_of(coro, "group_add()")

    def group_send_shard(self, channel: str, hosts: Hosts) -> int:
        by_index, _, _ = self._layer(hosts)._map_channel_keys_to_connection(
            [channel], _MESSAGE)
        (index,) = by_index  # one channel, one key, one index
        return index

    def storage_key(self, channel: str) -> str:
        layer = self._key_layer
        if layer is None:
            # One host: its send cycle is always 0, so probing it moves no state.
            layer = self._key_layer = RedisChannelLayer(
                hosts=["redis://127.0.0.1:1/0"], random_prefix_length=0)
            probe = _KeyProbe()
            layer.connection = lambda index: probe
        coro = layer.send(channel, _MESSAGE)
        try:
            coro.send(None)
        except _Keyed as keyed:
            return keyed.args[0][len(layer.prefix):]
        except StopIteration:
            raise _off_path("send()", "returned") from None
        coro.close()
        raise _off_path("send()", "waited on the event loop")
