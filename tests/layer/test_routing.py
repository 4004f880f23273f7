"""Tests for layer.routing (and layer.live): profiles against the real package, the
rendezvous property where it holds, and the counterexamples where it does not."""

import importlib
import random
import string
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, find, given, settings, strategies as st

from layer import names, routing
from layer.routing import PROFILE_NAMES, RouterError, live_available, make_router

# -- names and hosts --------------------------------------------------------------------

ASCII = string.ascii_letters + string.digits + "-_."
# After the "!" Channels allows \w: Unicode letters and digits too, which change the
# UTF-8 bytes that are hashed.
LOCAL = ASCII + "éßж漢٣"

heads = st.text(ASCII, min_size=1, max_size=40)
locals_ = st.text(LOCAL, max_size=40)
normal_names = heads
specific_names = st.builds(lambda head, local: f"{head}!{local}", heads, locals_)
channel_names = normal_names | specific_names
group_names = heads
asgi1_specific_names = st.builds(lambda head, mark, local: head + mark + local,
                                 heads, st.sampled_from("!?"), locals_)
response_2015_names = heads.map(lambda head: "!" + head)

#: Names with one listener, per dialect; the pub/sub layer routes every name by hash.
SPECIFIC_NAMES = {
    "channels": specific_names,
    "asgi1": asgi1_specific_names,
    "channels-2015": response_2015_names,
}
ANY_NAMES = {
    "channels": channel_names,
    "asgi1": normal_names | asgi1_specific_names,
    "channels-2015": normal_names | response_2015_names,
}


def _hosts(n):
    return [f"redis://10.0.0.{i}:6379/0" for i in range(n)]


host_lists = st.integers(1, 16).map(_hosts)
# Rings that hash host names (rendezvous, ketama) see arbitrary distinct names here.
named_host_lists = st.lists(st.text(string.ascii_lowercase + string.digits + ".:-/",
                                    min_size=1, max_size=20),
                            min_size=1, max_size=16, unique=True)

LIVE = "live:channels_redis"
ALL_PROFILES = [p for p in PROFILE_NAMES if p != LIVE] + [
    pytest.param(LIVE, marks=pytest.mark.skipif(not live_available(),
                                                reason="channels_redis not installed"))]


@pytest.fixture(scope="module")
def live():
    """A factory of live routers; skips the tests that use it without channels_redis."""
    pytest.importorskip("channels_redis")
    return lambda: make_router(LIVE)


# -- the differential test: channels_redis-4 against the installed package ---------------

def _compare_named_paths(profile, real, specific, normal, groups, hosts):
    for channel in specific:
        assert profile.send_shard(channel, hosts) == real.send_shard(channel, hosts), channel
        assert profile.listen_shards(channel, hosts) == real.listen_shards(channel, hosts)
        assert profile.group_send_shard(channel, hosts) == real.group_send_shard(channel, hosts)
        assert profile.storage_key(channel) == real.storage_key(channel)
    for channel in normal:
        assert profile.listen_shards(channel, hosts) == real.listen_shards(channel, hosts)
        assert profile.group_send_shard(channel, hosts) == real.group_send_shard(channel, hosts)
        assert profile.storage_key(channel) == real.storage_key(channel)
    for group in groups:
        assert profile.group_shard(group, hosts) == real.group_shard(group, hosts), group


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(hosts=host_lists,
       specific=st.lists(specific_names, min_size=1, max_size=12),
       normal=st.lists(normal_names, max_size=6),
       groups=st.lists(group_names, max_size=6))
def test_profile_equals_live_on_named_paths(live, hosts, specific, normal, groups):
    """Invariant: channels_redis-4 gives the installed package's send_shard,
    listen_shards, group_shard, group_send_shard and storage_key for any names, 1 to 16
    hosts."""
    _compare_named_paths(make_router("channels_redis-4"), live(), specific, normal,
                         groups, hosts)


operations = st.lists(st.one_of(
    st.tuples(st.just("send"), channel_names),
    st.tuples(st.just("poll"), st.none()),
    st.tuples(st.just("listen"), channel_names),
    st.tuples(st.just("group"), group_names),
    st.tuples(st.just("group_send"), channel_names),
), max_size=40)


def _apply(router, op, arg, hosts):
    if op == "send":
        return router.send_shard(arg, hosts)
    if op == "poll":
        return router.poll_shard(hosts)
    if op == "listen":
        return router.listen_shards(arg, hosts)
    if op == "group":
        return router.group_shard(arg, hosts)
    return router.group_send_shard(arg, hosts)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(hosts=host_lists, ops=operations)
def test_profile_equals_live_step_by_step(live, hosts, ops):
    """Invariant: on fresh instances (one process each) and one host list, every step
    of any sequence of sends, polls, listens and group calls gives the same shard as
    the installed package: the round robins advance on the same calls only."""
    profile, real = make_router("channels_redis-4"), live()
    for step, (op, arg) in enumerate(ops):
        assert _apply(profile, op, arg, hosts) == _apply(real, op, arg, hosts), (step, op, arg)


def _sweep_names(count, seed=2024):
    rnd = random.Random(seed)

    def word(lo, hi, alphabet=ASCII):
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(lo, hi)))

    specific = [f"{word(1, 30)}!{word(0, 30, LOCAL)}" for _ in range(count // 2)]
    normal = [word(1, 40) for _ in range(count - count // 2)]
    return specific, normal


SWEEP_SPECIFIC, SWEEP_NORMAL = _sweep_names(2000)


def test_profile_equals_live_sweep(live):
    """Invariant: channels_redis-4 equals the installed package on 2000 fixed names
    (1000 "!" names, 1000 normal names also used as groups) for every host count 1 to
    16, the send and receive round robins interleaved with the named calls."""
    for n in range(1, 17):
        hosts = _hosts(n)
        profile, real = make_router("channels_redis-4"), live()
        _compare_named_paths(profile, real, SWEEP_SPECIFIC, (), SWEEP_NORMAL, hosts)
        for channel in SWEEP_NORMAL[:100]:
            assert profile.send_shard(channel, hosts) == real.send_shard(channel, hosts)
            assert profile.poll_shard(hosts) == real.poll_shard(hosts)


@pytest.mark.parametrize("n", range(1, 17))
def test_round_robin_sequences_equal_live(live, n):
    """Invariant: on fresh instances, the send and poll sequences for normal channels
    are the installed package's: 0, 1, ..., N-1, 0, ... (independent cycles)."""
    hosts = _hosts(n)
    expected = [i % n for i in range(3 * n + 1)]
    for make in (lambda: make_router("channels_redis-4"), live):
        router = make()
        assert [router.send_shard("http.request", hosts) for _ in expected] == expected
        assert [router.poll_shard(hosts) for _ in expected] == expected
        router = make()  # the cycles are independent: polls first, then sends
        assert [router.poll_shard(hosts) for _ in expected] == expected
        assert [router.send_shard("http.request", hosts) for _ in expected] == expected


# -- the rendezvous property where it holds ------------------------------------------------

RENDEZVOUS_PROFILES = ["fixed", "fixed-jump", "fixed-rendezvous", "fixed-ketama",
                       "asgi_redis-1", "asgi_redis-1.0", "channels_redis-2.0",
                       "channels_redis-pubsub"]


@pytest.mark.parametrize("profile", RENDEZVOUS_PROFILES)
@settings(max_examples=150)
@given(data=st.data())
def test_specific_send_meets_its_receiver(profile, data):
    """Invariant (rendezvous): a specific channel's send shard, and its group_send shard,
    are among its receiver's listen shards when both processes have the same host list,
    whatever their random streams and hash seeds."""
    sender = make_router(profile, rng=random.Random(1), hash_seed=1)
    receiver = make_router(profile, rng=random.Random(2), hash_seed=2)
    names_for = ANY_NAMES if profile == "channels_redis-pubsub" else SPECIFIC_NAMES
    channel = data.draw(names_for[sender.dialect], label="channel")
    hosts = data.draw(named_host_lists, label="hosts")
    assert names.validate_channel_name(channel, sender.dialect) == channel
    listen = receiver.listen_shards(channel, hosts)
    assert sender.send_shard(channel, hosts) in listen
    assert sender.group_send_shard(channel, hosts) in listen


@given(channel=specific_names, hosts=host_lists)
def test_channels_redis_4_group_send_meets_receiver(channel, hosts):
    """Invariant: in channels_redis-4, group_send's copy lands on a shard its receiver
    listens on (the group path hashes the non-local name; issue #221's workaround)."""
    sender, receiver = make_router("channels_redis-4"), make_router("channels_redis-4")
    assert sender.group_send_shard(channel, hosts) in receiver.listen_shards(channel, hosts)


# -- where it fails: hypothesis finds it, and the shrunk example is pinned -------------------

def _direct_send_misses(profile, channel, n, send_seed=0, listen_seed=0):
    hosts = _hosts(n)
    sender = make_router(profile, hash_seed=send_seed)
    receiver = make_router(profile, hash_seed=listen_seed)
    return sender.send_shard(channel, hosts) not in receiver.listen_shards(channel, hosts)


def test_hypothesis_finds_channels_redis_4_direct_send_miss():
    """Invariant checked to FAIL: in channels_redis-4 a direct send to a "!" channel
    meets its receiver; with 2+ hosts hypothesis must find a name that misses (#221)."""
    channel, n = find(st.tuples(specific_names, st.integers(2, 16)),
                      lambda ex: _direct_send_misses("channels_redis-4", *ex),
                      settings=settings(max_examples=2000, database=None))
    print(f"channels_redis-4 direct send misses: channel={channel!r} hosts={n}")
    assert _direct_send_misses("channels_redis-4", channel, n)


def test_channels_redis_4_direct_send_miss_regression():
    """Invariant broken (pinned shrunk counterexample): "0!00000000" is sent to host 1
    (crc32 & 0xFFF = 3780 of the whole name) but its receiver waits on host 0 (1106 for
    "0!"), with 2 hosts; the installed package agrees when present."""
    hosts = _hosts(2)
    routers = [make_router("channels_redis-4")]
    if live_available():
        routers.append(make_router(LIVE))
    for router in routers:
        assert router.send_shard("0!00000000", hosts) == 1
        assert router.listen_shards("0!00000000", hosts) == (0,)
        assert router.group_send_shard("0!00000000", hosts) == 0


pubsub_33_cases = st.tuples(channel_names, st.integers(2, 16),
                            st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))


def test_hypothesis_finds_pubsub_33_seed_disagreement():
    """Invariant checked to FAIL: in channels_redis-pubsub-3.3 two processes with
    different hash seeds agree on a channel's shard; hypothesis must find one that
    they do not (#273)."""
    channel, n, s1, s2 = find(
        pubsub_33_cases,
        lambda ex: _direct_send_misses("channels_redis-pubsub-3.3", ex[0], ex[1], ex[2], ex[3]),
        settings=settings(max_examples=2000, database=None))
    print(f"channels_redis-pubsub-3.3 disagreement: channel={channel!r} hosts={n} "
          f"seeds={s1},{s2}")
    assert _direct_send_misses("channels_redis-pubsub-3.3", channel, n, s1, s2)


def _cpython_shard(value, n, seed):
    code = f"print(abs(hash({value!r})) % {n})"
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": str(seed)},
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_pubsub_33_seed_disagreement_regression():
    """Invariant broken (pinned shrunk counterexample): with 2 hosts, a process with
    PYTHONHASHSEED=0 publishes "0" on host 0 while one with seed 1 subscribes on host 1;
    real CPython 3.11 processes with those seeds agree with the model."""
    hosts = _hosts(2)
    publisher = make_router("channels_redis-pubsub-3.3", hash_seed=0)
    subscriber = make_router("channels_redis-pubsub-3.3", hash_seed=1)
    assert publisher.send_shard("0", hosts) == 0
    assert subscriber.listen_shards("0", hosts) == (1,)
    assert [_cpython_shard("0", 2, 0), _cpython_shard("0", 2, 1)] == [0, 1]


# -- profile-wide facts --------------------------------------------------------------------

@pytest.mark.parametrize("profile", ALL_PROFILES)
@settings(max_examples=50)
@given(data=st.data())
def test_one_host_is_always_shard_0(profile, data):
    """Invariant: with one host every profile answers shard 0 for every question."""
    router = make_router(profile, rng=random.Random(3), hash_seed=3)
    hosts = _hosts(1)
    channel = data.draw(ANY_NAMES[router.dialect], label="channel")
    group = data.draw(group_names, label="group")
    for _ in range(3):
        assert router.send_shard(channel, hosts) == 0
        assert router.group_send_shard(channel, hosts) == 0
        if router.storage != "pubsub":
            assert router.poll_shard(hosts) == 0
    assert router.listen_shards(channel, hosts) == (0,)
    assert router.group_shard(group, hosts) == 0


def test_channels_2015_response_send_is_not_a_function_of_the_name():
    """Invariant (the 2015 bug): a response send's shard does not depend on the channel
    name: 50 sends of one name from one process, 3 hosts, use more than one shard,
    while its receiver listens on one."""
    hosts = _hosts(3)
    router = make_router("channels-2015", rng=random.Random(0))
    shards = [router.send_shard("!http.response.abc", hosts) for _ in range(50)]
    assert len(set(shards)) > 1
    assert len(router.listen_shards("!http.response.abc", hosts)) == 1


def test_channels_2015_normal_channels_are_random_from_the_process_stream():
    """Invariant: channels-2015 spreads normal sends and polls at random (not round
    robin), drawing only from the process's own stream (same seed, same choices)."""
    hosts = _hosts(3)
    robin = [i % 3 for i in range(50)]

    def choices(seed):
        router = make_router("channels-2015", rng=random.Random(seed))
        sends = [router.send_shard("http.request", hosts) for _ in range(50)]
        polls = [router.poll_shard(hosts) for _ in range(50)]
        return sends, polls

    sends, polls = choices(5)
    for seq in (sends, polls):
        assert set(seq) == {0, 1, 2}
        assert seq != robin
    assert choices(5) == (sends, polls)


def test_make_router_unknown_name_lists_the_allowed_ones():
    """Invariant: an unknown profile raises a one-line RouterError naming it and every
    registered profile."""
    with pytest.raises(RouterError) as caught:
        make_router("channels_redis-5")
    message = str(caught.value)
    assert "\n" not in message
    assert "'channels_redis-5'" in message
    for name in PROFILE_NAMES:
        assert name in message


def test_make_router_live_without_package_says_how_to_install(monkeypatch):
    """Invariant: asking for the live router without channels_redis raises a one-line
    RouterError that says to install shardlab[live]."""
    monkeypatch.setattr(routing, "live_available", lambda: False)
    with pytest.raises(RouterError, match=r"shardlab\[live\]") as caught:
        make_router(LIVE)
    assert "\n" not in str(caught.value)


def test_layer_live_import_error_says_how_to_install(monkeypatch):
    """Invariant: importing layer.live without channels_redis raises a one-line
    ImportError that says to install shardlab[live]."""
    monkeypatch.setitem(sys.modules, "channels_redis", None)
    monkeypatch.setitem(sys.modules, "channels_redis.core", None)
    monkeypatch.delitem(sys.modules, "layer.live", raising=False)
    with pytest.raises(ImportError, match=r"shardlab\[live\]") as caught:
        importlib.import_module("layer.live")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("profile", [
    "channels_redis-4", "asgi_redis-1", "channels_redis-2.0", "fixed",
    pytest.param(LIVE, marks=pytest.mark.skipif(not live_available(),
                                                reason="channels_redis not installed")),
])
def test_round_robin_starts_at_0_for_every_fresh_instance(profile):
    """Invariant: the send and receive round robins belong to the instance (the
    process): each fresh instance starts at host 0, whatever others have done."""
    for n in range(1, 17):
        hosts = _hosts(n)
        busy = make_router(profile)
        for _ in range(n + 2):
            busy.send_shard("http.request", hosts)
            busy.poll_shard(hosts)
        fresh = make_router(profile)
        assert [fresh.send_shard("http.request", hosts) for _ in range(n)] == list(range(n))
        assert [fresh.poll_shard(hosts) for _ in range(n)] == list(range(n))
