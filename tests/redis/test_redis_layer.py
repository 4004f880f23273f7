"""layer.redis on real redis-server processes: ordering, expiry, capacity, groups,
at-most-once, and the settings it refuses."""

from __future__ import annotations

import asyncio

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")

from layer.redis import ChannelFull, RedisChannelLayer, RedisLayerError  # noqa: E402
from redis_checks import received_once_each  # noqa: E402


def run(coro):
    return asyncio.run(coro)


async def zcard(url: str, key: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return await client.zcard(key)
    finally:
        await client.aclose()


def test_fifo_per_channel(redis_urls):
    """Messages on one channel are received in send order: a normal channel on one
    server, and a process-specific channel on three (all on its one shard)."""
    async def main():
        async with RedisChannelLayer(redis_urls[:1], router="fixed") as one, \
                RedisChannelLayer(redis_urls, router="fixed", client_prefix="fifo") as three:
            for i in range(50):
                await one.send("work.q", {"n": i})
            got = [(await one.receive("work.q", timeout=2))["n"] for _ in range(50)]
            assert got == list(range(50))
            channel = await three.new_channel()
            for i in range(50):
                await three.send(channel, {"n": i})
            got = [(await three.receive(channel, timeout=2))["n"] for _ in range(50)]
            assert got == list(range(50))
    run(main())


def test_key_vanishes_expiry_after_last_send(redis_urls):
    """A message older than the expiry is gone: its key expires ``expiry`` after the
    last send, and a receive then times out."""
    async def main():
        async with RedisChannelLayer(redis_urls[:1], router="fixed", expiry=0.5) as layer:
            await layer.send("work.q", {"n": 1})
            assert await zcard(redis_urls[0], layer.key_of("work.q")) == 1
            await asyncio.sleep(0.7)
            assert await zcard(redis_urls[0], layer.key_of("work.q")) == 0
            with pytest.raises(TimeoutError):
                await layer.receive("work.q", timeout=0.3)
    run(main())


def test_send_prunes_stale_messages_receive_does_not(redis_urls):
    """A send removes messages older than the expiry (channels_redis 2+); a stale
    message that no send has pruned yet is still delivered, as in the release."""
    async def main():
        async with RedisChannelLayer(redis_urls[:1], router="fixed", expiry=1) as layer:
            await layer.send("a.q", {"n": "old"})
            await layer.send("b.q", {"n": "old"})
            await asyncio.sleep(0.6)
            await layer.send("a.q", {"n": "mid"})   # keeps the key alive
            await layer.send("b.q", {"n": "mid"})
            await asyncio.sleep(0.6)                # "old" is 1.2 s old now
            await layer.send("a.q", {"n": "new"})   # prunes "old"
            got = [(await layer.receive("a.q", timeout=1))["n"] for _ in range(2)]
            assert got == ["mid", "new"]
            assert (await layer.receive("b.q", timeout=1))["n"] == "old"  # stale, unpruned
    run(main())


def test_capacity_send_raises_group_send_drops(redis_urls):
    """At capacity a send raises ChannelFull and stores nothing; a group send skips
    the full member silently and still reaches the others."""
    async def main():
        async with RedisChannelLayer(redis_urls, router="fixed", capacity=3,
                                     client_prefix="cap") as layer:
            for i in range(3):
                await layer.send("work.q.x", {"n": i})  # round robin: one per shard
            full = await layer.new_channel()
            free = await layer.new_channel("other")
            for i in range(3):
                await layer.send(full, {"n": i})
            with pytest.raises(ChannelFull):
                await layer.send(full, {"n": 3})
            assert layer.stats["full"] == 1
            await layer.group_add("room", full)
            await layer.group_add("room", free)
            await layer.group_send("room", {"n": "g"})  # no exception
            assert layer.stats["group_full"] == 1 and layer.stats["group_copies"] == 1
            assert [(await layer.receive(full, timeout=1))["n"] for _ in range(3)] == [0, 1, 2]
            assert (await layer.receive(free, timeout=1))["n"] == "g"
            with pytest.raises(TimeoutError):
                await layer.receive(full, timeout=0.2)
    run(main())


def test_channels_of_one_process_share_capacity(redis_urls):
    """Process-specific channels of one process share one key, so one full channel
    refuses sends to its siblings (channels_redis #97)."""
    async def main():
        async with RedisChannelLayer(redis_urls, router="fixed", capacity=2,
                                     client_prefix="shared") as layer:
            stalled, idle = await layer.new_channel(), await layer.new_channel()
            await layer.send(stalled, {"n": 0})
            await layer.send(stalled, {"n": 1})
            with pytest.raises(ChannelFull):
                await layer.send(idle, {"n": 0})
    run(main())


def test_channel_capacity_patterns(redis_urls):
    """``channel_capacity`` globs set a channel's capacity; others use ``capacity``."""
    async def main():
        async with RedisChannelLayer(redis_urls[:1], router="fixed", capacity=5,
                                     channel_capacity={"tiny.*": 1}) as layer:
            await layer.send("tiny.q", {})
            with pytest.raises(ChannelFull):
                await layer.send("tiny.q", {})
            for _ in range(5):
                await layer.send("big.q", {})
            assert layer.get_capacity("tiny.q") == 1 and layer.get_capacity("big.q") == 5
    run(main())


def test_group_send_reaches_each_member_once(redis_urls):
    """A group send gives every member channel exactly one copy, across processes and
    shards, including two channels of one process (channels_redis #93); a discarded
    channel gets nothing more."""
    async def main():
        layers = [RedisChannelLayer(redis_urls, router="fixed", client_prefix=f"p{i}")
                  for i in range(3)]
        try:
            members = [await layer.new_channel() for layer in layers]
            members.append(await layers[0].new_channel())  # second channel, same key
            owner = dict(zip(members, layers + [layers[0]]))
            for channel in members:
                await layers[1].group_add("room", channel)
            await layers[2].group_send("room", {"text": "hi"})
            got = await asyncio.gather(*(owner[c].receive(c, timeout=2) for c in members))
            assert got == [{"text": "hi"}] * len(members)
            await layers[1].group_discard("room", members[1])
            await layers[2].group_send("room", {"text": "again"})
            with pytest.raises(TimeoutError):
                await owner[members[1]].receive(members[1], timeout=0.3)
            for c in (members[0], members[2], members[3]):
                assert (await owner[c].receive(c, timeout=2)) == {"text": "again"}
        finally:
            for layer in layers:
                await layer.close()
    run(main())


def test_at_most_once_under_concurrent_receivers(redis_urls):
    """Several processes with several receivers each on one normal channel over three
    shards: every message is received exactly once in total, and none is left."""
    got, key = run(received_once_each(redis_urls, "fixed", 90))
    assert got == list(range(90))
    for url in redis_urls:
        assert run(zcard(url, key)) == 0


def test_flush_deletes_messages_and_groups(redis_urls):
    """flush() leaves no key under the layer's prefix on any shard."""
    async def main():
        async with RedisChannelLayer(redis_urls, router="fixed", prefix="fl") as layer:
            for i in range(6):
                await layer.send("work.q", {"n": i})
            await layer.group_add("room", "work.q")
            await layer.flush()
            for url in redis_urls:
                client = redis.asyncio.Redis.from_url(url)
                assert [k async for k in client.scan_iter(match="fl*")] == []
                await client.aclose()
    run(main())


def test_every_profile_builds_with_its_storage():
    """Every router profile drives the layer, with its release's storage and name
    rules (no server needed)."""
    from layer.routing import PROFILE_NAMES, live_available
    from layer.redis import STORAGES, SUPPORTED_PROFILES
    assert set(SUPPORTED_PROFILES) == set(PROFILE_NAMES)
    for profile in PROFILE_NAMES:
        if profile.startswith("live:") and not live_available():
            continue
        layer = RedisChannelLayer(["redis://127.0.0.1:1"], router=profile)
        assert layer.storage in STORAGES and layer.storage == layer.router.storage
    assert RedisChannelLayer(["redis://127.0.0.1:1"], router="asgi_redis-1").storage == "key_ttl"
    assert RedisChannelLayer(["redis://127.0.0.1:1"],
                             router="channels_redis-pubsub").storage == "pubsub"


def test_refuses_what_it_cannot_do():
    """Routers with an unknown storage, foreign channels, names another generation
    rejects and bad settings are refused with a message that says what is allowed
    (no server needed)."""
    from layer.names import ChannelNameError
    from layer.routing import Router

    class Odd(Router):
        storage = "carrier_pigeon"
    with pytest.raises(RedisLayerError, match="sorted_set, key_ttl, pubsub"):
        RedisChannelLayer(["redis://127.0.0.1:1"], router=Odd())
    with pytest.raises(RedisLayerError, match="allowed: 'asgi'"):
        RedisChannelLayer(["redis://127.0.0.1:1"], router="channels_redis-pubsub-3.3",
                          prefix="x")
    old = RedisChannelLayer(["redis://127.0.0.1:1"], router="channels-2015")
    with pytest.raises(ChannelNameError, match="leading '!'"):
        run(old.send("specific.abc!x", {}))
    with pytest.raises(RedisLayerError, match="must be positive"):
        RedisChannelLayer(["redis://127.0.0.1:1"], expiry=0)
    with pytest.raises(RedisLayerError, match="non-empty list"):
        RedisChannelLayer("redis://127.0.0.1:1")
    layer = RedisChannelLayer(["redis://127.0.0.1:1"], client_prefix="mine")
    with pytest.raises(ValueError, match="wrong client prefix"):
        run(layer.receive("specific.other!x", timeout=0.1))
