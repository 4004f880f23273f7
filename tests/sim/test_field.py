"""The field cases (scenarios/field/): public fault reports the simulator reproduces.

Each test runs the case's file as `shardlab run` would, under the release that had
the fault and under the corrected rule, and asserts counts, shards and times from
the message trace, not just "some loss". Where a count follows from the names, the
test also derives it from `layer/` so that the file and the routers cannot drift.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from layer.hashing import consistent_hash
from sim.runner import run_scenario
from sim.scenario import load_scenario, read_scenario_data, scenario_from_dict

FIELD = Path(__file__).resolve().parents[2] / "scenarios" / "field"


def run(name, **overrides):
    return run_scenario(load_scenario(str(FIELD / name), overrides))


def fates(result):
    return {k: v for k, v in result["fates_by_kind"]["scripted"].items() if v}


def by_channel(result, op):
    return {e["channel"]: e for e in result["trace"] if e["op"] == op}


def test_every_field_case_has_a_file_a_comment_and_runs():
    """Invariant: there are six cases, each file opens with a comment naming its
    report and expected outcome, and the CLI runs each as is (exit 0)."""
    files = sorted(FIELD.glob("*.toml"))
    assert [f.name[:2] for f in files] == ["01", "02", "03", "04", "05", "06"]
    for f in files:
        head = f.read_text().splitlines()[:4]
        assert head[0].startswith("# Field case") and any("Report:" in h for h in head)
        out = subprocess.run([sys.executable, "-m", "shardlab", "run", str(f), "--quiet"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_case1_direct_send_misroutes_under_channels_redis_4():
    """Invariant (rendezvous, issue #221): under channels_redis-4 only the names whose
    whole-name shard equals the listener's shard arrive; the others are written to
    their whole-name shard and vanish at t = expiry; the group path delivers all."""
    r = run("01-direct-send-specific.toml")
    sends = by_channel(r, "send")
    listen = consistent_hash("specific.AbCdEf!", 3)
    for ch, e in sends.items():
        assert e["shard"] == f"shard{consistent_hash(ch, 3)}"
        expected = "delivered" if consistent_hash(ch, 3) == listen else "misrouted"
        assert e["fate"] == expected
    assert sends["specific.AbCdEf!d"]["fate"] == "delivered"
    assert (sends["specific.AbCdEf!xyz"]["shard"], sends["specific.AbCdEf!h"]["shard"]) \
        == ("shard2", "shard0")
    assert sends["specific.AbCdEf!xyz"]["fate_at"] == 60.0
    assert sends["specific.AbCdEf!h"]["fate_at"] == 60.0
    group = by_channel(r, "group_send")
    assert len(group) == 3 and all(e["fate"] == "delivered" and e["deliveries"] == 1
                                   for e in group.values())
    assert fates(r) == {"delivered": 4, "misrouted": 2}
    assert not r["invariants"]["rendezvous"]["holds"]
    assert r["invariants"]["rendezvous"]["violations"] == 2


def test_case1_fixed_delivers_all():
    """Invariant (rendezvous under the corrected rule): all three sends and all three
    group copies arrive."""
    r = run("01-direct-send-specific.toml", router="fixed")
    assert fates(r) == {"delivered": 6}
    assert r["invariants"]["rendezvous"]["holds"]


def test_case2_pubsub_hash_seed_loses_the_publish_at_once():
    """Invariant (rendezvous across processes, issue #273): with different hash seeds
    the publish lands on a shard with no subscriber and is lost at the moment it is
    sent; under the 3.3.1+ rule it arrives."""
    r = run("02-pubsub-hash-seed.toml")
    (e,) = r["trace"]
    assert (e["shard"], e["fate"], e["fate_at"], e["deliveries"]) == \
        ("shard1", "misrouted", 1.0, 0)
    fixed = run("02-pubsub-hash-seed.toml", router="channels_redis-pubsub")
    (e,) = fixed["trace"]
    assert (e["shard"], e["fate"], e["deliveries"]) == ("shard2", "delivered", 1)


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("router", ["channels_redis-4", "fixed"])
def test_case3_one_copy_per_channel(shards, router):
    """Invariant (at_most_once, issue #93): one group_send gives each of a process's two
    channels in the group exactly one copy, on 1 and on 3 shards."""
    r = run("03-two-channels-one-group.toml", shards=shards, router=router)
    group = by_channel(r, "group_send")
    assert sorted(group) == ["specific.P!a", "specific.P!b"]
    assert all(e["fate"] == "delivered" and e["deliveries"] == 1 for e in group.values())
    assert fates(r) == {"delivered": 2}
    assert r["invariants"]["at_most_once"]["holds"]


@pytest.mark.parametrize("router", ["channels_redis-4", "fixed"])
def test_case4_capacity_is_shared_by_a_process(router):
    """Invariant (capacity, issue #97): five messages to a stalled channel fill the
    process's key, so a send to its other, empty channel raises ChannelFull and a
    group_send to it is dropped without an error; the report names the blocking."""
    r = run("04-shared-capacity.toml", router=router)
    trace = r["trace"]
    slow = [e for e in trace if e["channel"] == "specific.P!slow"]
    idle = [e for e in trace if e["channel"] == "specific.P!idle"]
    assert len(slow) == 5 and all(e["fate"] == "in_flight" for e in slow)
    assert [(e["op"], e["fate"]) for e in idle] == [("send", "rejected_full"),
                                                    ("group_send", "rejected_full")]
    assert r["channel_full_errors"]["scripted"] == 1  # only send() raises
    assert r["cross_channel_full"]["count"] == 2
    first = r["cross_channel_full"]["first"]
    assert first["channel"] == "specific.P!idle"
    assert first["filled_by"] == ["specific.P!slow"] and first["queued"] == 5
    assert r["queued_at_end"] == {"shard0": {"specific.P!": 5}}


def test_case5_round_robin_starts_at_shard0_and_flags_a_hot_shard():
    """Invariant (load balance): twenty one-shot layer instances all send their one
    message to shard0 (20/0/0 queued), three prefixes on shard0 take all 30 replies,
    and the report flags shard0 with imbalance 3 (max over mean writes)."""
    r = run("05-round-robin-start.toml")
    assert r["queued_at_end"] == {"shard0": {"jobs": 20}}
    assert r["shard_load"]["by_kind"]["scripted"] == {"shard0": 50, "shard1": 0,
                                                      "shard2": 0}
    assert r["shard_load"]["imbalance"] == 3.0
    assert r["shard_load"]["hot_shards"] == ["shard0"]
    replies = [e for e in r["trace"] if e["channel"].startswith("http.response.")]
    assert len(replies) == 30 and all(e["fate"] == "delivered" for e in replies)


def test_case6_different_host_lists_lose_half_the_replies():
    """Invariant (rendezvous across configurations): a worker on 2 hosts replying by
    group_send to 20 receivers on 3 hosts finds the group (its membership hashes to
    shard0 either way) but misroutes exactly the prefixes whose shard differs between
    2 and 3 hosts: 10 of 20 here; with the same list everywhere none is lost."""
    r = run("06-different-host-lists.toml")
    group = by_channel(r, "group_send")
    assert len(group) == 20
    lost = {ch for ch, e in group.items() if e["fate"] != "delivered"}
    predicted = {f"specific.r{i:02d}!reply" for i in range(1, 21)
                 if consistent_hash(f"specific.r{i:02d}!", 3)
                 != consistent_hash(f"specific.r{i:02d}!", 2)}
    assert lost == predicted and len(lost) == 10
    assert all(group[ch]["fate"] == "misrouted" for ch in lost)
    data, name = read_scenario_data(str(FIELD / "06-different-host-lists.toml"))
    for actor in data["actors"]:
        actor.pop("hosts", None)
    same = run_scenario(scenario_from_dict(data, name))
    assert fates(same) == {"delivered": 20}


BASE = {"interface_servers": 0, "workers": 0, "duration": 5.0, "drain": 0.0,
        "actors": [{"name": "p", "prefix": "specific.P!"}, {"name": "w"}]}


@pytest.mark.parametrize("change, key, value", [
    ({"steps": [{"at": 0.0, "actor": "nobody", "op": "send", "channel": "jobs"}]},
     "steps[0].actor", "nobody"),
    ({"steps": [{"at": 0.0, "actor": "w", "op": "teleport"}]}, "steps[0].op", "teleport"),
    ({"steps": [{"at": 0.0, "actor": "w", "op": "send", "channel": "specific.Q!x"}]},
     "steps[0].channel", "specific.Q!x"),
    ({"steps": [{"at": 0.0, "actor": "w", "op": "send"}]}, "steps[0].channel", "missing"),
    ({"steps": [{"at": 0.0, "actor": "w", "op": "group_send", "group": "g",
                 "channel": "jobs"}]}, "steps[0].channel", "not used"),
    ({"steps": [{"at": 99.0, "actor": "w", "op": "send", "channel": "jobs"}]},
     "steps[0].at", "99"),
    ({"steps": [{"at": 0.0, "actor": "w", "op": "send", "channel": "jobs", "count": 0}]},
     "steps[0].count", "0"),
    ({"actors": [{"name": "worker1"}]}, "actors[0].name", "worker1"),
    ({"actors": [{"name": "p", "prefix": "specific.P"}]}, "actors[0].prefix", "specific.P"),
    ({"actors": [{"name": "p"}, {"name": "p"}]}, "actors[1].name", "p"),
    ({"actors": [{"name": "p", "listening": "no"}]}, "actors[0].listening", "no"),
    ({"actors": [{"name": "p", "colour": 1}]}, "actors[0].colour", "unknown"),
    ({"actors": []}, "interface_servers", "nothing to simulate"),
])
def test_scripted_scenarios_are_validated(change, key, value):
    """Invariant (bad input): an actor or step error is one line naming the key, the
    value (or what is wrong) and what is allowed."""
    from sim.scenario import ScenarioError
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict({**BASE, **change})
    msg = str(err.value)
    assert "\n" not in msg and key in msg and value in msg


# -- regressions from a user's session with scripted scenarios -------------------------

def scripted(actors, steps, **top):
    data = {"interface_servers": 0, "workers": 0, "duration": 10.0, "drain": 0.0,
            "actors": actors, "steps": steps, **top}
    return run_scenario(scenario_from_dict(data, "t"))


def test_a_scripted_message_on_the_request_channel_is_served_not_answered():
    """Invariant (conservation, no phantom replies): a scripted send on the request
    channel is taken by a worker and delivered; it makes no response, so responses
    still equal the clients' requests."""
    data = {"duration": 10.0, "load": {"rate": 20.0},
            "actors": [{"name": "sender"}],
            "steps": [{"at": 1.0, "actor": "sender", "op": "send",
                       "channel": "http.request"}]}
    r = run_scenario(scenario_from_dict(data, "t"))
    assert r["sent"]["response"] == r["sent"]["request"]
    (e,) = r["trace"]
    assert (e["fate"], e["deliveries"]) == ("delivered", 1)


PUBSUB_P = [{"name": "p", "channels": ["specific.P!a", "specific.P!b"], "hash_seed": 1},
            {"name": "sender", "hash_seed": 1}]


@pytest.mark.parametrize("router", ["channels_redis-pubsub", "channels_redis-pubsub-3.3"])
def test_pubsub_group_gives_each_member_channel_its_copy(router):
    """Invariant (pub/sub groups as the layer kept them): one group_send gives each of
    a process's channels in the group one copy; discarding one channel keeps the
    process subscribed for the other."""
    add = [{"at": 0.0, "actor": "p", "op": "group_add", "group": "room", "channel": c}
           for c in ("specific.P!a", "specific.P!b")]
    r = scripted(PUBSUB_P, add + [{"at": 1.0, "actor": "sender", "op": "group_send",
                                   "group": "room"}], router=router)
    assert sorted((e["channel"], e["fate"], e["deliveries"]) for e in r["trace"]) == [
        ("specific.P!a", "delivered", 1), ("specific.P!b", "delivered", 1)]
    r = scripted(PUBSUB_P, add + [
        {"at": 1.0, "actor": "p", "op": "group_discard", "group": "room",
         "channel": "specific.P!a"},
        {"at": 2.0, "actor": "sender", "op": "group_send", "group": "room"}], router=router)
    assert [(e["channel"], e["fate"]) for e in r["trace"]] == [("specific.P!b", "delivered")]


def test_pubsub_33_group_members_on_other_shards_are_misrouted_each():
    """Invariant (rendezvous per member): under pub/sub 3.3 every subscriber that
    derived another shard for the group's channel misses the publish, and each such
    member is one misrouted message (not a silent absence)."""
    from layer.routing import make_router
    gch = "asgi__group__room"
    seeds = {"s1": 1, "s2": 2, "s3": 3}
    actors = [{"name": n, "channels": [f"specific.{n}!x"], "hash_seed": h}
              for n, h in seeds.items()] + [{"name": "sender", "hash_seed": 2}]
    steps = [{"at": 0.0, "actor": n, "op": "group_add", "group": "room",
              "channel": f"specific.{n}!x"} for n in seeds]
    steps.append({"at": 1.0, "actor": "sender", "op": "group_send", "group": "room"})
    r = scripted(actors, steps, router="channels_redis-pubsub-3.3")
    hosts = ("shard0", "shard1", "shard2")
    sent_to = make_router("channels_redis-pubsub-3.3", hash_seed=2).send_shard(gch, hosts)
    expect = {f"specific.{n}!x": "delivered" if make_router(
        "channels_redis-pubsub-3.3", hash_seed=h).listen_shards(gch, hosts)[0] == sent_to
        else "misrouted" for n, h in seeds.items()}
    assert {e["channel"]: e["fate"] for e in r["trace"]} == expect
    assert r["sent"]["scripted"] == 3 and "misrouted" in expect.values()


def test_overlapping_faults_nest():
    """Invariant (fault schedules): a shard or a partition comes back only when the
    last fault covering it ends, not when a shorter one inside it ends."""
    actors = [{"name": "a", "prefix": "specific.a!"}, {"name": "b"}]
    send = [{"at": 1.5, "actor": "b", "op": "send", "channel": "specific.a!x"}]
    listen = f"shard{consistent_hash('specific.a!', 3)}"
    crash = [{"kind": "shard_crash", "at": 0.5, "target": listen, "duration": 3.0},
             {"kind": "shard_crash", "at": 0.7, "target": listen, "duration": 0.2}]
    r = scripted(actors, send, router="fixed", faults=crash)
    assert r["trace"][0]["fate"] == "lost_in_crash"
    cut = [{"kind": "partition", "at": 0.5, "target": "b", "shard": listen, "duration": 3.0},
           {"kind": "partition", "at": 0.7, "target": "b", "shard": listen, "duration": 0.5}]
    r = scripted(actors, send, router="fixed", faults=cut)
    assert r["trace"][0]["fate"] == "unreachable"


def test_group_send_to_an_empty_group_is_orphaned_not_lost_in_crash():
    """Invariant (fates name their cause): with no crash, a group_send that finds no
    member reached nobody: orphaned; after a crash took the membership: lost_in_crash."""
    actors = [{"name": "a", "prefix": "specific.a!"}, {"name": "b"}]
    r = scripted(actors, [{"at": 1.0, "actor": "b", "op": "group_send", "group": "g"}])
    assert r["trace"][0]["fate"] == "orphaned"
    gshard = f"shard{consistent_hash('g', 3)}"
    r = scripted(actors, [
        {"at": 0.0, "actor": "a", "op": "group_add", "group": "g", "channel": "specific.a!x"},
        {"at": 2.0, "actor": "b", "op": "group_send", "group": "g"}],
        faults=[{"kind": "shard_crash", "at": 1.0, "target": gshard, "duration": 0.5}])
    assert r["trace"][0]["fate"] == "lost_in_crash"


@pytest.mark.parametrize("data, key", [
    ({"actors": [{"name": "a"}], "steps": [{"at": 10.0, "actor": "a", "op": "send",
                                            "channel": "jobs"}]}, "steps[0].at"),
    ({"actors": [{"name": "a"}], "processes": [{"name": "a", "hosts": ["shard0"]}]},
     "processes[0].name"),
    ({"actors": [{"name": "a", "prefix": "specific.a!"},
                 {"name": "b", "prefix": "specific.a!"}]}, "actors[1].prefix"),
    ({"actors": [{"name": "a", "router": "channels-2015"}]}, "actors[0].router"),
    ({"actors": [{"name": "a", "router": "channels_redis-pubsub"}]}, "actors[0].router"),
    ({"actors": [{"name": "a"}], "steps": [{"at": 1.0, "actor": "a", "op": "send",
                                            "channel": "!http.response.abc"}]},
     "steps[0].channel"),
])
def test_inconsistent_scripts_are_refused(data, key):
    """Invariant (bad input): a step at the very end (it would never run), an override
    of an actor, two actors with one prefix, and processes of different generations
    (names or storage one cannot read from the other) are one-line errors."""
    from sim.scenario import ScenarioError
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict({"interface_servers": 0, "workers": 0, "duration": 5.0,
                            "drain": 5.0, **data}, "t")
    assert key in str(err.value) and "\n" not in str(err.value)
