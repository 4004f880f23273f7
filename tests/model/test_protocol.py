"""Tests for model.protocol: names, routing through layer/, actions, transitions,
canonical states."""

import random
import string

import pytest

from layer.hashing import consistent_hash
from layer.routing import RouterError
from model import CheckError
from model.checker import explore, replay
from model.protocol import (FAULTS, HELD, QUEUED, STORED, Action, Config, Model, Req,
                            State, copy_code)


def model(**kw) -> Model:
    return Model(Config(**kw))


def test_names_come_from_the_seed_and_the_draw():
    """Invariant: each server's prefix is 8 letters from Random(f"{seed}/names/{draw}"),
    reply channels are the prefix plus a base-36 token, and another draw gives other
    names."""
    m = model(seed=7, draw=3)
    rng = random.Random("7/names/3")
    first = "".join(rng.choice(string.ascii_letters) for _ in range(8))
    assert m.prefixes[0] == f"http.response.{first}!"
    assert m.channel[:2] == (m.prefixes[0] + "0", m.prefixes[0] + "1")
    assert model(seed=7, draw=4).prefixes != m.prefixes
    assert model(router="channels-2015").prefixes[0].startswith("!http.response.")


def test_routing_tables_are_the_routers_answers():
    """Invariant: the model's response shards are layer/'s answers on the concrete
    names: channels_redis-4 hashes the whole name on send and the prefix on listen."""
    m = model(router="channels_redis-4", shards=3)
    for p, ch in enumerate(m.channel):
        assert m.resp_send[p][0][0] == (consistent_hash(ch, 3),)
        prefix = ch[:ch.index("!") + 1]
        assert m.listen[p][0] == 1 << consistent_hash(prefix, 3)


def test_choices_are_every_host_the_profile_may_choose():
    """Invariant: a normal channel's send and a worker's poll may go to any host
    (round robin, random); 2015's response send is random too; a hash is one shard."""
    m = model(router="fixed", shards=3)
    assert m.req_send[0][0] == (0, 1, 2) and m.poll[0][0] == 0b111
    assert all(len(x[0]) == 1 for row in m.resp_send for x in row)
    m15 = model(router="channels-2015", shards=3)
    assert all(x[0] == (0, 1, 2) for row in m15.resp_send for x in row)
    ps = model(router="channels_redis-pubsub", shards=3)
    assert len(ps.req_send[0][0]) == 1      # CRC of the request channel


def test_pubsub_33_processes_hash_with_their_own_seeds():
    """Invariant: every process of the 3.3 pub/sub profile has its own hash seed, so
    workers may subscribe on different shards (the #273 misroute is reachable)."""
    m = model(router="channels_redis-pubsub-3.3", workers=4, shards=3)
    assert len(set(m.hash_seeds)) == len(m.hash_seeds)
    assert len({row[0] for row in m.subscribed}) > 1


def test_actions_are_deterministic_and_protocol_first():
    """Invariant: actions() returns the same list each time, protocol steps before
    faults, and a fresh state offers exactly one request per server."""
    m = model(faults=FAULTS)
    s0 = m.init_states()[0]
    assert m.actions(s0) == m.actions(s0)
    acts = [a for a in m.actions(s0) if a.verb == "request"]
    assert [a.actor for a in acts] == ["iface0", "iface1"]
    s = m.next_state(s0, acts[0])
    verbs = [a.verb for a in m.actions(s)]
    first_fault = next(i for i, v in enumerate(verbs) if v in ("unreachable", "host_change"))
    assert all(v in ("request", "send", "take", "reply", "receive") for v in verbs[:first_fault])


def test_a_request_travels_the_whole_protocol():
    """Invariant: request, send, take, reply, receive move one token through queued,
    held, stored to answered, and the run then can end (no protocol step left)."""
    m = model(router="fixed", servers=1, workers=1, shards=2, requests_per_server=1)
    s = m.init_states()[0]
    steps = [Action("request", "iface0", 0, -1), Action("send", "iface0", 0, 1)]
    for a in steps:
        s = m.next_state(s, a)
    assert s.reqs[0] == Req(2, (copy_code(QUEUED, 1),), 0)
    s = m.next_state(s, Action("take", "worker0", 0, 1))
    assert s.reqs[0].copies == (copy_code(HELD, 0),)
    (reply,) = [a for a in m.actions(s) if a.verb == "reply"]
    s = m.next_state(s, reply)
    assert s.reqs[0].copies == (copy_code(STORED, reply.shard),) and s.broken == 0
    s = m.next_state(s, Action("receive", "iface0", 0, reply.shard))
    assert m.outcomes(s) == ("answered",)
    assert m.successor_actions(s) == ([], 0)


def test_capacity_refuses_with_an_error_not_a_silent_loss():
    """Invariant: with the capacity fault on, a send to a full key is refused (outcome
    refused), never dropped silently."""
    m = model(router="fixed", servers=1, workers=1, shards=1, faults=("capacity",))
    s = m.init_states()[0]
    for a in (Action("request", "iface0", 0, -1), Action("request", "iface0", 1, -1),
              Action("send", "iface0", 0, 0), Action("send", "iface0", 1, 0)):
        s = m.next_state(s, a)
    assert m.outcomes(s) == ("pending", "refused")


def test_owner_only_breaks_when_two_servers_share_a_key():
    """Invariant (owner_only is not vacuous): two servers configured with the same
    prefix read each other's responses, and the checker says so."""
    same = ("http.response.AAAAAAAA!",) * 2
    ex = explore(model(router="fixed", prefixes=same, requests_per_server=1))
    path = ex.paths["owner_only"]
    assert path[-1].verb == "receive"
    assert "owner_only" in ex.model.violated(replay(ex.model, path)[-1])


def test_canonical_folds_renamed_workers_and_requests():
    """Invariant: states that differ only by swapping identical workers, or a server's
    interchangeable requests, have one canonical form, and canonical is idempotent."""
    m = model(router="fixed", workers=2, requests_per_server=2)
    assert m.worker_groups == ((0, 1),)
    held0 = Req(2, (copy_code(HELD, 0),), 0)
    held1 = Req(2, (copy_code(HELD, 1),), 0)
    new = Req(0, (), 0)
    a = State((0, 0, 0, 0), (held0, new, new, new), False, 0)
    b = State((0, 0, 0, 0), (new, held1, new, new), False, 0)
    assert m.canonical(a) == m.canonical(b)
    assert m.canonical(m.canonical(a)) == m.canonical(a)


def test_symmetry_changes_counts_not_verdicts():
    """Invariant: exploring with and without canonical states finds the same broken
    properties with counterexamples of the same length."""
    for router in ("fixed", "channels_redis-4"):
        cfg = Config(router=router, faults=("shard_crash", "host_change"), draw=1,
                     requests_per_server=1)
        a, b = explore(Model(cfg)), explore(Model(cfg), symmetry=False)
        assert {k: len(v) for k, v in a.paths.items()} == {k: len(v) for k, v in b.paths.items()}
        assert a.states < b.states


@pytest.mark.parametrize("kw, message", [
    ({"servers": 0}, "--servers 0: must be an integer from 1 to 16"),
    ({"shards": 99}, "--shards 99: must be an integer from 1 to 31"),
    ({"faults": ("meteor",)}, "--faults 'meteor' is unknown"),
    ({"capacity": "2"}, "--capacity '2': must be an integer"),
])
def test_bad_config_is_a_one_line_check_error(kw, message):
    """Invariant: a bad size or fault is a CheckError naming the flag and the value."""
    with pytest.raises(CheckError) as e:
        Config(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_router_is_a_router_error():
    """Invariant: an unknown profile is layer's RouterError, listing the profiles."""
    with pytest.raises(RouterError, match="fixed"):
        Config(router="nope")
