"""layer.redis's key_ttl storage (asgi_redis 1.x, the 2015 backend) on real redis-server
processes: ordering, expiry of each message's own key, capacity by list length,
groups, at-most-once, blocking receive with a timeout, flush."""

from __future__ import annotations

import asyncio

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")

from layer.redis import ChannelFull, RedisChannelLayer  # noqa: E402
from redis_checks import check_blocking_receive, received_once_each  # noqa: E402


def run(coro):
    return asyncio.run(coro)


async def keys_and_lengths(url: str, pattern: str = "*") -> dict[str, int | None]:
    """Every key on a server: a list's length, None for a plain (message) key."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        out = {}
        async for key in client.scan_iter(match=pattern):
            kind = (await client.type(key)).decode()
            out[key.decode()] = await client.llen(key) if kind == "list" else None
        return out
    finally:
        await client.aclose()


def test_fifo_per_channel(redis_urls):
    """Messages on one channel are received in send order: a normal channel on one
    server, a process-specific channel (shared per-process list, asgi_redis 1.4) and a
    single-reader channel on three, and a 2015 response channel on one."""
    async def main():
        async with RedisChannelLayer(redis_urls[:1], router="asgi_redis-1") as one, \
                RedisChannelLayer(redis_urls, router="asgi_redis-1", client_prefix="fifo") as three, \
                RedisChannelLayer(redis_urls[:1], router="channels-2015", client_prefix="old") as old:
            for i in range(30):
                await one.send("work.q", {"n": i})
            assert [(await one.receive("work.q", timeout=2))["n"] for _ in range(30)] \
                == list(range(30))
            for channel in (await three.new_channel(), "http.response?AbCd"):
                for i in range(30):
                    await three.send(channel, {"n": i})
                assert [(await three.receive(channel, timeout=2))["n"] for _ in range(30)] \
                    == list(range(30))
            response = await old.new_channel("http.response")
            assert response.startswith("!http.response.old.")
            for i in range(30):
                await old.send(response, {"n": i})
            assert [(await old.receive(response, timeout=2))["n"] for _ in range(30)] \
                == list(range(30))
    run(main())


def test_each_message_expires_in_its_own_key(redis_urls):
    """Each body is a key of its own expiring ``expiry`` after its send, while the
    list lives ``expiry + 1`` after the last send: a receive pops the stale entry,
    finds no body, skips it and delivers the next live message; with nothing live it
    times out. The message is lost after its TTL even though its list entry remains."""
    async def main():
        async with RedisChannelLayer(redis_urls[:1], router="asgi_redis-1", expiry=0.4) as layer:
            key = layer.key_of("work.q")
            await layer.send("work.q", {"n": "old"})
            found = await keys_and_lengths(redis_urls[0])
            assert found[key] == 1 and sum(v is None for v in found.values()) == 1
            body = next(k for k, v in found.items() if v is None)
            client = redis.asyncio.Redis.from_url(redis_urls[0])
            try:  # the body lives expiry (400 ms), the list expiry + 1 s (1400 ms)
                assert 250 < await client.pttl(body) <= 400
                assert 1250 < await client.pttl(key) <= 1400
            finally:
                await client.aclose()
            await asyncio.sleep(0.6)                      # "old"'s body has expired
            found = await keys_and_lengths(redis_urls[0])
            assert found == {key: 1}                      # its list entry has not
            await layer.send("work.q", {"n": "new"})
            assert (await layer.receive("work.q", timeout=1))["n"] == "new"
            assert layer.stats["expired_skipped"] == 1
            await layer.send("work.q", {"n": "late"})
            await asyncio.sleep(0.6)
            with pytest.raises(TimeoutError):
                await layer.receive("work.q", timeout=0.3)
            assert layer.stats["expired_skipped"] == 2
            assert await keys_and_lengths(redis_urls[0]) == {}  # the pops emptied it
    run(main())


def test_capacity_counts_list_entries_expired_ones_too(redis_urls):
    """At capacity a send raises ChannelFull and stores nothing; entries whose body
    has expired still count until popped (asgi_redis 1.x's LLEN check); a group send
    skips a full member silently and reaches the others."""
    async def main():
        async with RedisChannelLayer(redis_urls, router="asgi_redis-1", capacity=2,
                                     expiry=0.3, client_prefix="cap") as layer:
            full = await layer.new_channel()
            for i in range(2):
                await layer.send(full, {"n": i})
            with pytest.raises(ChannelFull):
                await layer.send(full, {"n": 2})
            await asyncio.sleep(0.4)                      # both bodies expired
            with pytest.raises(ChannelFull):              # the entries still count
                await layer.send(full, {"n": 3})
            assert layer.stats["full"] == 2
            await layer.send("work.q", {"n": 0})          # other channels are not full
        async with RedisChannelLayer(redis_urls, router="asgi_redis-1", capacity=2,
                                     client_prefix="grp") as layer:
            stalled = await layer.new_channel()
            free = "http.response?free"
            await layer.send(stalled, {"n": 0})
            await layer.send(stalled, {"n": 1})
            await layer.group_add("room", stalled)
            await layer.group_add("room", free)
            await layer.group_send("room", {"n": "g"})   # no exception
            assert layer.stats["group_full"] == 1 and layer.stats["group_copies"] == 1
            assert (await layer.receive(free, timeout=1))["n"] == "g"
            assert [(await layer.receive(stalled, timeout=1))["n"] for _ in range(2)] == [0, 1]
    run(main())


def test_group_send_reaches_each_member_once(redis_urls):
    """A group send gives every member channel exactly one copy, across processes and
    shards, including two channels of one process (one list) and a single-reader
    channel; a discarded channel gets nothing more."""
    async def main():
        layers = [RedisChannelLayer(redis_urls, router="asgi_redis-1", client_prefix=f"p{i}")
                  for i in range(3)]
        try:
            members = [await layer.new_channel() for layer in layers]
            members.append(await layers[0].new_channel())  # second channel, same list
            members.append("http.response?solo")
            owner = dict(zip(members, layers + [layers[0], layers[2]]))
            for channel in members:
                await layers[1].group_add("room", channel)
            await layers[2].group_send("room", {"text": "hi"})
            assert layers[2].stats["group_copies"] == len(members)
            got = await asyncio.gather(*(owner[c].receive(c, timeout=2) for c in members))
            assert got == [{"text": "hi"}] * len(members)
            await layers[1].group_discard("room", members[1])
            await layers[2].group_send("room", {"text": "again"})
            with pytest.raises(TimeoutError):
                await owner[members[1]].receive(members[1], timeout=0.3)
            for c in members[:1] + members[2:]:
                assert (await owner[c].receive(c, timeout=2)) == {"text": "again"}
        finally:
            for layer in layers:
                await layer.close()
    run(main())


def test_at_most_once_under_concurrent_receivers(redis_urls):
    """Several processes with several receivers each on one normal channel over three
    shards (round robin on send, a shard per BLPOP on receive): every message is
    received exactly once in total, and no list is left holding one."""
    got, _ = run(received_once_each(redis_urls, "asgi_redis-1", 60))
    assert got == list(range(60))
    for url in redis_urls:
        assert run(keys_and_lengths(url)) == {}


def test_blocking_receive_waits_then_times_out(redis_urls):
    """A receive blocks until a message arrives (here 0.3 s later, from another
    process), and on an empty channel raises TimeoutError after about ``timeout``."""
    async def main():
        async with RedisChannelLayer(redis_urls, router="asgi_redis-1", client_prefix="rx") as rx, \
                RedisChannelLayer(redis_urls, router="asgi_redis-1", client_prefix="tx") as tx:
            await check_blocking_receive(rx, tx, await rx.new_channel())
            with pytest.raises(TimeoutError):
                await rx.receive("http.response?none", timeout=0.2)
    run(main())


def test_flush_deletes_bodies_lists_and_groups(redis_urls):
    """flush() leaves no key under the layer's prefix on any shard: not the message
    bodies, the channel lists or the groups."""
    async def main():
        async with RedisChannelLayer(redis_urls, router="asgi_redis-1", prefix="fl",
                                     client_prefix="f") as layer:
            for i in range(6):
                await layer.send("work.q", {"n": i})
            await layer.send(await layer.new_channel(), {"n": 0})
            await layer.group_add("room", "work.q")
            assert sum([len(await keys_and_lengths(u, "fl*")) for u in redis_urls]) >= 10
            await layer.flush()
            for url in redis_urls:
                assert await keys_and_lengths(url, "fl*") == {}
    run(main())
