"""Placement on real servers equals `layer.routing`'s, and the direct-send bug of
channels_redis 2.2 to 4.3 (#221) happens on real Redis exactly where it predicts."""

from __future__ import annotations

import asyncio
import random

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")

from layer import names  # noqa: E402
from layer.redis import RedisChannelLayer  # noqa: E402
from layer.routing import live_available, make_router  # noqa: E402

PROFILES = ["channels_redis-4", "fixed", "fixed-ketama"] + (
    ["live:channels_redis"] if live_available() else [])


def run(coro):
    return asyncio.run(coro)


def generated_names(seed: int, count: int) -> list[str]:
    """Process-specific names of several clients, and normal names, from one stream."""
    rng = random.Random(f"{seed}/names")
    clients = ["".join(rng.choice("ABCDEFGHabcdefgh0123456789") for _ in range(8))
               for _ in range(4)]
    out = []
    for i in range(count):
        if i % 4 == 3:
            out.append(f"work.q{rng.randrange(3)}")
        else:
            out.append(f"specific.{rng.choice(clients)}!{names.local_token(rng.randrange(10**6))}")
    return out


async def shard_counts(clients, key: str) -> list[int]:
    return [await c.zcard(key) for c in clients]


@pytest.mark.parametrize("profile", PROFILES)
def test_send_and_group_send_land_where_the_router_says(redis_urls, profile):
    """For generated names on 3 servers, the server each send and each group-send copy
    is actually written to is ``layer.routing``'s shard for the same profile, names
    and host list (a fresh router replays the sender's round robin)."""
    hosts = tuple(f"shard{i}" for i in range(3))
    channels = generated_names(7, 48)

    async def main():
        clients = [redis.asyncio.Redis.from_url(u) for u in redis_urls]
        layer = RedisChannelLayer(redis_urls, router=profile, client_prefix="sender")
        reference = make_router(profile)
        try:
            for channel in channels:
                expected = reference.send_shard(channel, hosts)
                key = layer.key_of(channel)
                before = await shard_counts(clients, key)
                await layer.send(channel, {"c": channel})
                after = await shard_counts(clients, key)
                landed = [i for i in range(3) if after[i] == before[i] + 1]
                assert landed == [expected], (channel, landed, expected)
            await layer.flush()
            members = sorted({c for c in channels if "!" in c})
            for channel in members:
                await layer.group_add("room", channel)
            group_shard = reference.group_shard("room", hosts)
            assert await clients[group_shard].zcard("asgi:group:room") == len(members)
            await layer.group_send("room", {"g": 1})
            for channel in members:
                counts = await shard_counts(clients, layer.key_of(channel))
                assert counts.index(1) == reference.group_send_shard(channel, hosts)
        finally:
            await layer.close()
            for c in clients:
                await c.aclose()
    run(main())


def _predicted(profile: str, channels: list[str]) -> set[str]:
    """The channels whose direct send meets the listener, by ``layer.routing``."""
    hosts = tuple(f"shard{i}" for i in range(3))
    router = make_router(profile)
    return {c for c in channels
            if router.send_shard(c, hosts) in router.listen_shards(c, hosts)}


@pytest.mark.parametrize("profile", ["channels_redis-4", "fixed"])
def test_direct_sends_to_specific_channels(redis_urls, profile):
    """On 3 real servers, a consumer receives a direct send to one of its channels
    exactly when ``layer.routing`` says the send's shard is the one it listens on:
    under channels_redis-4 the others time out (and sit on the shard the whole name
    hashes to, which the consumer never reads); under fixed all arrive."""
    async def main():
        consumer = RedisChannelLayer(redis_urls, router=profile, client_prefix="LgoHSRUb")
        sender = RedisChannelLayer(redis_urls, router=profile, client_prefix="worker0")
        clients = [redis.asyncio.Redis.from_url(u) for u in redis_urls]
        try:
            channels = [await consumer.new_channel("http.response") for _ in range(30)]
            for channel in channels:
                await sender.send(channel, {"c": channel})

            async def one(channel):
                try:
                    return (await consumer.receive(channel, timeout=1.0))["c"]
                except TimeoutError:
                    return None
            got = {c for c in await asyncio.gather(*map(one, channels)) if c}
            predicted = _predicted(profile, channels)
            assert got == predicted
            if profile == "fixed":
                assert got == set(channels)
            else:
                assert 0 < len(got) < len(channels)  # not vacuous: some lost, some not
                key = consumer.key_of(channels[0])
                left = [await c.zcard(key) for c in clients]
                hosts = tuple(f"shard{i}" for i in range(3))
                router = make_router(profile)
                expect = [0, 0, 0]
                for c in set(channels) - got:
                    expect[router.send_shard(c, hosts)] += 1
                assert left == expect
                assert left[router.listen_shards(channels[0], hosts)[0]] == 0
        finally:
            for layer in (consumer, sender):
                await layer.close()
            for c in clients:
                await c.aclose()
    run(main())


def test_real_channels_redis_loses_what_routing_predicts(redis_urls):
    """The installed channels_redis package itself, on 3 real servers: a consumer
    receives exactly the direct sends that ``layer.routing``'s channels_redis-4
    profile predicts (#221); the rest time out."""
    core = pytest.importorskip("channels_redis.core", reason="channels_redis is not installed")

    async def main():
        consumer = core.RedisChannelLayer(hosts=redis_urls)
        sender = core.RedisChannelLayer(hosts=redis_urls)
        try:
            channels = [await consumer.new_channel("http.response") for _ in range(30)]
            for channel in channels:
                await sender.send(channel, {"c": channel})

            async def one(channel):
                try:
                    return (await asyncio.wait_for(consumer.receive(channel), 1.0))["c"]
                except asyncio.TimeoutError:
                    return None
            got = {c for c in await asyncio.gather(*map(one, channels)) if c}
            assert got == _predicted("channels_redis-4", channels)
            assert len(got) < len(channels)
        finally:
            await consumer.flush()
            await sender.close_pools()
    run(main())


def test_interoperates_with_channels_redis(redis_urls):
    """Stored messages have channels_redis 4.3.0's format: each layer receives what
    the other sent, on a normal channel and on a process-specific one."""
    core = pytest.importorskip("channels_redis.core", reason="channels_redis is not installed")

    async def main():
        theirs = core.RedisChannelLayer(hosts=redis_urls[:1])
        ours = RedisChannelLayer(redis_urls[:1], router="channels_redis-4",
                                 client_prefix="ours")
        try:
            await theirs.send("work.q", {"b": b"\x00\xff", "n": 1})
            assert await ours.receive("work.q", timeout=1) == {"b": b"\x00\xff", "n": 1}
            await ours.send("work.q", {"n": 2})
            assert await asyncio.wait_for(theirs.receive("work.q"), 1) == {"n": 2}
            mine = await ours.new_channel()
            await theirs.send(mine, {"n": 3})
            assert await ours.receive(mine, timeout=1) == {"n": 3}
            their_channel = await theirs.new_channel()
            await ours.send(their_channel, {"n": 4})
            assert await asyncio.wait_for(theirs.receive(their_channel), 1) == {"n": 4}
        finally:
            await ours.close()
            await theirs.flush()
    run(main())
