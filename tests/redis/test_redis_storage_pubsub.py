"""layer.redis's pubsub storage (channels_redis 3.3+ RedisPubSubChannelLayer) on real
redis-server processes: ordering, no persistence, no capacity, groups as
subscriptions, at-most-once within a process, blocking receive with a timeout,
cancellation, flush, and the installed pub/sub layer reading what it publishes."""

from __future__ import annotations

import asyncio

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")

from layer.redis import ChannelFull, RedisChannelLayer, RedisLayerError  # noqa: E402
from redis_checks import check_blocking_receive  # noqa: E402

PROFILE = "channels_redis-pubsub"


def run(coro):
    return asyncio.run(coro)


async def subscribers(urls: list[str], name: str) -> list[int]:
    """How many connections subscribe ``name`` on each server (PUBSUB NUMSUB)."""
    out = []
    for url in urls:
        client = redis.asyncio.Redis.from_url(url)
        try:
            out.append(dict(await client.pubsub_numsub(name))[name.encode()])
        finally:
            await client.aclose()
    return out


async def subscribe(layer: RedisChannelLayer, channel: str) -> None:
    """Subscribe ``channel`` in ``layer`` (a receive that times out stays subscribed)."""
    with pytest.raises(TimeoutError):
        await layer.receive(channel, timeout=0.01)


def test_fifo_per_channel(redis_urls):
    """Messages on one subscribed channel arrive in publish order, on a channel from
    new_channel() (subscribed at once) and on a normal channel."""
    async def main():
        async with RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="fifo") as layer:
            channel = await layer.new_channel()
            await subscribe(layer, "work.q")
            for name in (channel, "work.q"):
                for i in range(30):
                    await layer.send(name, {"n": i})
                assert [(await layer.receive(name, timeout=2))["n"] for _ in range(30)] \
                    == list(range(30))
            assert layer.stats["unheard"] == 0
    run(main())


def test_published_with_no_subscriber_is_lost(redis_urls):
    """Pub/sub stores nothing: a message published while nobody subscribes is gone,
    and a subscriber that comes later never gets it; no key is written."""
    async def main():
        async with RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="tx") as tx, \
                RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="rx") as rx:
            await tx.send("work.q", {"n": "early"})
            assert tx.stats["unheard"] == 1
            await subscribe(rx, "work.q")
            await tx.send("work.q", {"n": "late"})
            assert await rx.receive("work.q", timeout=1) == {"n": "late"}
            with pytest.raises(TimeoutError):
                await rx.receive("work.q", timeout=0.2)
            for url in redis_urls:
                client = redis.asyncio.Redis.from_url(url)
                assert await client.dbsize() == 0
                await client.aclose()
    run(main())


def test_no_capacity_and_no_expiry(redis_urls):
    """The pub/sub layer has no capacity (sends beyond it never raise ChannelFull) and
    no expiry (a message queued in the subscribing process outlives ``expiry``)."""
    async def main():
        async with RedisChannelLayer(redis_urls, router=PROFILE, capacity=2, expiry=0.1,
                                     client_prefix="nocap") as layer:
            channel = await layer.new_channel()
            try:
                for i in range(10):
                    await layer.send(channel, {"n": i})
            except ChannelFull:  # pragma: no cover - the failure being tested for
                pytest.fail("the pub/sub layer raised ChannelFull")
            await asyncio.sleep(0.3)
            assert [(await layer.receive(channel, timeout=1))["n"] for _ in range(10)] \
                == list(range(10))
    run(main())


def test_group_send_reaches_each_member_once(redis_urls):
    """Groups are subscriptions to ``asgi__group__NAME`` at the group's shard: one
    publish reaches every member channel once, across processes and two channels of
    one process; discarding one member stops its copies, the last one unsubscribes;
    only channels subscribed in the process may join (as the release)."""
    async def main():
        layers = [RedisChannelLayer(redis_urls, router=PROFILE, client_prefix=f"p{i}")
                  for i in range(3)]
        try:
            members = [await layer.new_channel() for layer in layers[:2]]
            members.append(await layers[0].new_channel())
            owner = dict(zip(members, [layers[0], layers[1], layers[0]]))
            for channel in members:
                await owner[channel].group_add("room", channel)
            with pytest.raises(RuntimeError, match="not subscribed in this process"):
                await layers[2].group_add("room", members[0])
            assert sum(await subscribers(redis_urls, "asgi__group__room")) == 2
            await layers[2].group_send("room", {"text": "hi"})
            got = await asyncio.gather(*(owner[c].receive(c, timeout=2) for c in members))
            assert got == [{"text": "hi"}] * len(members)
            await layers[0].group_discard("room", members[0])
            await layers[2].group_send("room", {"text": "again"})
            with pytest.raises(TimeoutError):
                await layers[0].receive(members[0], timeout=0.2)
            for c in members[1:]:
                assert await owner[c].receive(c, timeout=2) == {"text": "again"}
            await layers[1].group_discard("room", members[1])
            await layers[0].group_discard("room", members[2])
            assert sum(await subscribers(redis_urls, "asgi__group__room")) == 0
        finally:
            for layer in layers:
                await layer.close()
    run(main())


def test_at_most_once_within_a_process_broadcast_across(redis_urls):
    """Concurrent receivers of one channel in one process share its queue: each message
    goes to exactly one of them. Two processes subscribed to one normal channel both
    get every message (the release broadcasts; the simulator counts duplicates)."""
    n = 30

    async def main():
        async with RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="a") as a, \
                RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="b") as b, \
                RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="s") as sender:
            await subscribe(a, "work.q")
            await subscribe(b, "work.q")
            got_a: list[int] = []
            got_b: list[int] = []

            async def worker(layer, got):
                while len(got) < n:
                    try:
                        got.append((await layer.receive("work.q", timeout=0.5))["n"])
                    except TimeoutError:
                        return
            tasks = [asyncio.create_task(worker(a, got_a)) for _ in range(3)]
            tasks.append(asyncio.create_task(worker(b, got_b)))
            for i in range(n):
                await sender.send("work.q", {"n": i})
            await asyncio.gather(*tasks)
            assert sorted(got_a) == list(range(n))
            assert got_b == list(range(n))
    run(main())


def test_blocking_receive_timeout_and_cancel(redis_urls):
    """A receive blocks until a message arrives and raises TimeoutError after about
    ``timeout`` on silence, keeping the subscription; a cancelled receive unsubscribes
    the channel (as the release), so what is published afterwards is lost."""
    async def main():
        async with RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="rx") as rx, \
                RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="tx") as tx:
            channel = await rx.new_channel()
            await check_blocking_receive(rx, tx, channel)
            assert sum(await subscribers(redis_urls, channel)) == 1  # still subscribed
            waiting = asyncio.create_task(rx.receive(channel))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert sum(await subscribers(redis_urls, channel)) == 0
            await tx.send(channel, {"n": 2})
            assert tx.stats["unheard"] == 1
    run(main())


def test_flush_unsubscribes_everything(redis_urls):
    """flush() leaves the process subscribed to nothing on any server and drops what
    was queued; the layer keeps working afterwards."""
    async def main():
        async with RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="fl") as layer:
            channel = await layer.new_channel()
            await layer.group_add("room", channel)
            await layer.send(channel, {"n": 0})
            await asyncio.sleep(0.05)
            await layer.flush()
            assert await subscribers(redis_urls, channel) == [0, 0, 0]
            assert await subscribers(redis_urls, "asgi__group__room") == [0, 0, 0]
            with pytest.raises(TimeoutError):
                await layer.receive(channel, timeout=0.2)  # subscribes again, empty
            await layer.send(channel, {"n": 1})
            assert await layer.receive(channel, timeout=1) == {"n": 1}
    run(main())


def test_interoperates_with_channels_redis_pubsub(redis_urls):
    """Published bodies are plain msgpack, as the installed pub/sub layer's: each layer
    receives what the other published, with the same placement (channels_redis-pubsub)."""
    pubsub = pytest.importorskip("channels_redis.pubsub", reason="channels_redis is not installed")

    async def main():
        theirs = pubsub.RedisPubSubChannelLayer(hosts=redis_urls)
        async with RedisChannelLayer(redis_urls, router=PROFILE, client_prefix="ours") as ours:
            try:
                their_channel = await theirs.new_channel()
                mine = await ours.new_channel()
                await asyncio.sleep(0.1)  # theirs returns before the server confirms
                await ours.send(their_channel, {"b": b"\x00\xff", "n": 1})
                assert await asyncio.wait_for(theirs.receive(their_channel), 2) \
                    == {"b": b"\x00\xff", "n": 1}
                await theirs.send(mine, {"n": 2})
                assert await ours.receive(mine, timeout=2) == {"n": 2}
            finally:
                await theirs.flush()
    run(main())


def test_refuses_a_prefix_its_group_channels_cannot_follow():
    """The pub/sub routers name group channels ``asgi__group__NAME``, so any other
    prefix is refused with the allowed one (no server needed)."""
    with pytest.raises(RedisLayerError, match="allowed: 'asgi'"):
        RedisChannelLayer(["redis://127.0.0.1:1"], router=PROFILE, prefix="other")
