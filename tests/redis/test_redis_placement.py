"""Placement on real servers equals `layer.routing`'s for every profile (each of the
three storages), the direct-send bug of channels_redis 2.2 to 4.3 (#221) happens on
real Redis exactly where it predicts, and the simulator's fates of direct sends under
the 2015, asgi_redis 1.4 and pub/sub 3.3 profiles are the real servers'."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")

from layer import names  # noqa: E402
from layer.redis import SUPPORTED_PROFILES, RedisChannelLayer  # noqa: E402
from layer.routing import live_available, make_router  # noqa: E402
from sim.runner import run_scenario  # noqa: E402
from sim.scenario import scenario_from_dict  # noqa: E402

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


# -- every profile, every storage ----------------------------------------------------------
ALL_PROFILES = [p for p in SUPPORTED_PROFILES if not p.startswith("live:") or live_available()]
HOSTS = tuple(f"shard{i}" for i in range(3))


def dialect_names(profile: str, seed: int, count: int) -> list[str]:
    """Channels of every kind the profile's names know: process-specific (or 2015
    response) names of several clients, single-reader names (ASGI 1), normal names."""
    dialect = make_router(profile).dialect
    rng = random.Random(f"{seed}/{dialect}/names")
    clients = ["".join(rng.choice("ABCDEFGHabcdefgh0123456789") for _ in range(8))
               for _ in range(4)]
    out = []
    for i in range(count):
        token = names.local_token(rng.randrange(10**6))
        if i % 4 == 3:
            out.append(f"work.q{rng.randrange(3)}")
        elif dialect == "channels-2015":
            out.append(f"!http.response.{rng.choice(clients)}{token}")
        elif dialect == "asgi1" and i % 4 == 2:
            out.append(f"http.response?{rng.choice(clients)}{token}")
        else:
            out.append(f"specific.{rng.choice(clients)}!{token}")
    return out


async def stored(clients, key: str, storage: str) -> list[int]:
    """Messages held under ``key`` on each server (sorted set or list of message keys)."""
    if storage == "sorted_set":
        return [await c.zcard(key) for c in clients]
    return [await c.llen(key) for c in clients]


class Monitor:
    """Pattern subscriptions to every channel on every server: which server each
    publish went through."""

    def __init__(self, clients):
        self.subs = [c.pubsub() for c in clients]

    async def start(self):
        for sub in self.subs:
            await sub.psubscribe("*")
            assert (await sub.get_message(timeout=1))["type"] == "psubscribe"

    async def heard(self, settle: float = 0.2) -> Counter:
        """(channel, server index) of every publish since the last call."""
        out: Counter = Counter()
        for index, sub in enumerate(self.subs):
            while (msg := await sub.get_message(timeout=settle)) is not None:
                if msg["type"] == "pmessage":
                    out[(msg["channel"].decode(), index)] += 1
        return out

    async def close(self):
        for sub in self.subs:
            await sub.aclose()


async def numsub(clients, name: str) -> list[int]:
    return [dict(await c.pubsub_numsub(name))[name.encode()] for c in clients]


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_every_profile_places_where_its_router_says(redis_urls, profile):
    """For generated names of the profile's kinds on 3 servers, every send, group
    membership and group-send copy lands on the server that a fresh router of the same
    profile, random stream, hash seed and host list gives (sorted sets and key_ttl
    lists counted per server; pub/sub publishes and subscriptions observed per server)."""
    channels = dialect_names(profile, 7, 40)

    async def main():
        clients = [redis.asyncio.Redis.from_url(u) for u in redis_urls]
        layer = RedisChannelLayer(redis_urls, router=profile, client_prefix="sender",
                                  hash_seed=3, capacity=1000)
        reference = make_router(profile, rng=random.Random("0/sender"), hash_seed=3)
        storage = layer.storage
        monitor = Monitor(clients) if storage == "pubsub" else None
        try:
            if monitor is not None:
                await monitor.start()
                expected: Counter = Counter()
                for channel in channels:
                    expected[(channel, reference.send_shard(channel, HOSTS))] += 1
                    await layer.send(channel, {"c": channel})
                assert await monitor.heard() == expected
                members = [await layer.new_channel() for _ in range(6)]
                for channel in members:  # new_channel() subscribes where receivers listen
                    counts = await numsub(clients, channel)
                    assert counts.index(1) == reference.listen_shards(channel, HOSTS)[0]
                    await layer.group_add("room", channel)
                gch = reference.group_channel("room")
                counts = await numsub(clients, gch)
                assert counts.index(1) == reference.group_shard("room", HOSTS) and sum(counts) == 1
                await layer.group_send("room", {"g": 1})
                assert await monitor.heard() == Counter(
                    {(gch, reference.group_send_shard(gch, HOSTS)): 1})
                return
            for channel in channels:
                expected = reference.send_shard(channel, HOSTS)
                key = layer.key_of(channel)
                before = await stored(clients, key, storage)
                await layer.send(channel, {"c": channel})
                after = await stored(clients, key, storage)
                landed = [i for i in range(3) if after[i] == before[i] + 1]
                assert landed == [expected], (channel, landed, expected)
            await layer.flush()
            members = sorted({c for c in channels if reference.is_specific(c)})
            for channel in members:
                await layer.group_add("room", channel)
            group_shard = reference.group_shard("room", HOSTS)
            group_key = layer._group_key("room")
            assert await clients[group_shard].zcard(group_key) == len(members)
            order = [m.decode() for m in await clients[group_shard].zrange(group_key, 0, -1)]
            want: Counter = Counter()
            seen_keys: set[str] = set()
            for channel in order:  # the layer asks the router in membership order
                key = layer.key_of(channel)
                if storage == "sorted_set":  # one copy per key (channels_redis 4)
                    if key not in seen_keys:
                        seen_keys.add(key)
                        want[(key, reference.group_send_shard(channel, HOSTS))] += 1
                else:  # one send per member (asgi_redis 1.x)
                    want[(key, reference.group_send_shard(channel, HOSTS))] += 1
            await layer.group_send("room", {"g": 1})
            got: Counter = Counter()
            for key in {layer.key_of(c) for c in members}:
                for index, n in enumerate(await stored(clients, key, storage)):
                    if n:
                        got[(key, index)] += n
            assert got == want
        finally:
            if monitor is not None:
                await monitor.close()
            await layer.close()
            for c in clients:
                await c.aclose()
    run(main())


# -- the simulator's fates of direct sends, on real servers ---------------------------------
CROSS = {  # profile -> (consumer's channels, hash seeds of consumer and sender)
    "channels-2015": ([f"!http.response.AbCdEfGh{names.local_token(i)}" for i in range(12)],
                      (0, 0)),
    "asgi_redis-1": ([f"specific.AbCdEfGh!{names.local_token(i)}" for i in range(6)]
                     + [f"http.response?AbCdEfGh{names.local_token(i)}" for i in range(6)],
                     (0, 0)),
    "channels_redis-pubsub-3.3": ([f"specific.AbCdEfGh!{names.local_token(i)}"
                                   for i in range(12)], (1, 2)),
}


@pytest.mark.parametrize("profile", sorted(CROSS))
def test_simulated_direct_sends_match_real_servers(redis_urls, profile):
    """A scripted scenario (a consumer owning 12 channels, a worker sending one message
    to each at t = 0, 3 shards) is simulated, then replayed on 3 real servers with the
    same routers (the simulator's random streams and hash seeds): exactly the messages
    the simulator delivers arrive, the rest (misrouted) do not. Not vacuous: under the
    2015 backend and the pub/sub layer of 3.3.0 some arrive and some are lost."""
    channels, (consumer_seed, worker_seed) = CROSS[profile]
    seed = 5
    sc = scenario_from_dict({
        "name": "direct-sends", "router": profile, "seed": seed, "shards": 3,
        "interface_servers": 0, "workers": 0, "duration": 2.0, "drain": 0.0,
        "actors": [{"name": "consumer", "channels": channels, "hash_seed": consumer_seed},
                   {"name": "worker", "hash_seed": worker_seed}],
        "steps": [{"at": 0.0, "actor": "worker", "op": "send", "channel": c}
                  for c in channels]})
    trace = run_scenario(sc)["trace"]
    simulated = {t["channel"] for t in trace if t["fate"] == "delivered"}
    assert {t["channel"] for t in trace} == set(channels)

    async def main():
        def layer(name, hash_seed):
            router = make_router(profile, rng=random.Random(f"{seed}/{name}/layer0"),
                                 hash_seed=hash_seed)
            return RedisChannelLayer(redis_urls, router=router, client_prefix="AbCdEfGh")
        consumer, worker = layer("consumer", consumer_seed), layer("worker", worker_seed)
        try:
            if consumer.storage == "pubsub":  # subscribed before the sends, as in the run
                for channel in channels:
                    with pytest.raises(TimeoutError):
                        await consumer.receive(channel, timeout=0.01)
            for channel in channels:
                await worker.send(channel, {"c": channel})

            async def one(channel):
                try:
                    return (await consumer.receive(channel, timeout=1.0))["c"]
                except TimeoutError:
                    return None
            return {c for c in await asyncio.gather(*map(one, channels)) if c}
        finally:
            await consumer.close()
            await worker.close()
    real = run(main())
    assert real == simulated
    if profile != "asgi_redis-1":
        assert 0 < len(real) < len(channels)
    else:
        assert real == set(channels)
