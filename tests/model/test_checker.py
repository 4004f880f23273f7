"""Tests for model.checker: verdicts, shortest replayable counterexamples, pinned
state counts, limits and the state graph."""

import networkx as nx
import pytest

from layer.routing import PROFILE_NAMES, live_available
from model.checker import LOSS_WITH_FAULTS, check, explore, replay
from model.cli import DEFAULT_FAULTS
from model.properties import MODEL_PROPERTIES
from model.protocol import FAULTS, Action, Config, Model

ROUTERS = [r for r in PROFILE_NAMES if not r.startswith("live:") or live_available()]

# Verdicts on the default small configuration (2 servers, 2 workers, 2 shards), seed 1,
# four name draws, in MODEL_PROPERTIES order (T holds, F broken), then whether a loss
# is possible once faults are counted.
NO_FAULTS = {  # 2 requests per server
    "channels-2015": "FTTTF L", "asgi_redis-1.0": "TTTTT -", "asgi_redis-1": "TTTTT -",
    "channels_redis-2.0": "TTTTT -", "channels_redis-4": "FTTTF L",
    "channels_redis-pubsub-3.3": "FTFTF L", "channels_redis-pubsub": "TTFTT -",
    "fixed": "TTTTT -", "fixed-jump": "TTTTT -", "fixed-rendezvous": "TTTTT -",
    "fixed-ketama": "TTTTT -", "live:channels_redis": "FTTTF L",
}
SURVIVABLE = {  # DEFAULT_FAULTS (all but host_change), 2 requests per server
    "channels-2015": "FTTTF L", "asgi_redis-1.0": "TTTTT L", "asgi_redis-1": "TTTTT L",
    "channels_redis-2.0": "TTTTT L", "channels_redis-4": "FTTTF L",
    "channels_redis-pubsub-3.3": "FTFTF L", "channels_redis-pubsub": "TTFTT L",
    "fixed": "TTTTT L", "fixed-jump": "TTTTT L", "fixed-rendezvous": "TTTTT L",
    "fixed-ketama": "TTTTT L", "live:channels_redis": "FTTTF L",
}
ALL_FAULTS = {  # every fault, 1 request per server: a host change breaks every profile
    r: ("FFFTF L" if r.startswith("channels_redis-pubsub") else "FFTTF L")
    for r in NO_FAULTS
}


def verdicts(result: dict) -> str:
    v = "".join({True: "T", False: "F"}.get(e["holds"], "?")
                for e in result["properties"].values())
    return v + (" L" if result[LOSS_WITH_FAULTS]["possible"] else " -")


@pytest.mark.parametrize("table, faults, per_server", [
    (NO_FAULTS, (), 2), (SURVIVABLE, DEFAULT_FAULTS, 2), (ALL_FAULTS, FAULTS, 1)])
def test_verdict_matrix(table, faults, per_server):
    """Invariant: over routers x fault sets, exactly the expected properties break:
    #221 (channels_redis-4) and the 2015 random shard break rendezvous and lose
    replies; pub/sub broadcasts a normal channel (at_most_once) and 3.3's salted hash
    also misroutes; the corrected rule and the non-local-name releases hold everything;
    a host-list change breaks rendezvous and containment everywhere."""
    got = {r: verdicts(check(Config(router=r, faults=faults, requests_per_server=per_server),
                             draws=4))
           for r in ROUTERS}
    assert got == {r: table[r] for r in ROUTERS}


def _all_counterexamples(router, faults, per_server=2, draws=range(4)):
    for d in draws:
        m = Model(Config(router=router, faults=faults, requests_per_server=per_server, draw=d))
        ex = explore(m)
        assert ex.complete
        for name, path in ex.paths.items():
            yield m, name, path


def _violates(m: Model, name: str, s) -> bool:
    if name in ("no_silent_loss", LOSS_WITH_FAULTS):
        acts, n_protocol = m.successor_actions(s)
        lost = m.silent_losses(s)
        return n_protocol == 0 and bool(lost) and (name == LOSS_WITH_FAULTS or not s.faulted)
    return name in m.violated(s)


CASES = [("channels_redis-4", (), 2), ("channels-2015", DEFAULT_FAULTS, 2),
         ("channels_redis-pubsub-3.3", (), 2), ("fixed", ("host_change", "expiry"), 1)]


@pytest.mark.parametrize("router, faults, per_server", CASES)
def test_counterexamples_replay_and_end_in_a_violating_state(router, faults, per_server):
    """Invariant: every counterexample is a run of the model (each action enabled where
    taken, replayed through next_state) that ends in a state breaking its property,
    and no earlier state of it does."""
    n = 0
    for m, name, path in _all_counterexamples(router, faults, per_server):
        states = replay(m, path)
        assert _violates(m, name, states[-1]), (router, name)
        assert not any(_violates(m, name, s) for s in states[:-1]), (router, name)
        n += 1
    assert n > 0


@pytest.mark.parametrize("router, faults, per_server", CASES)
def test_counterexamples_are_shortest(router, faults, per_server):
    """Invariant: breadth first, a counterexample of k steps means none of k-1 exists:
    the same search limited to depth k-1 finds no violation of that property (and
    says its verdict is unknown, not true)."""
    for m, name, path in _all_counterexamples(router, faults, per_server):
        k = len(path)
        again = explore(m, max_depth=k)
        assert len(again.paths[name]) == k
        shorter = explore(m, max_depth=k - 1)
        assert name not in shorter.paths and not shorter.complete


def test_counterexamples_in_the_json_replay():
    """Invariant: the JSON's steps carry their actions; replayed on the named draw's
    model they end in a state that breaks the property."""
    r = check(Config(router="channels_redis-pubsub-3.3", faults=DEFAULT_FAULTS), draws=2)
    seen = 0
    for name, e in r["properties"].items():
        if e["counterexample"]:
            m = Model(Config(router=r["router"], faults=DEFAULT_FAULTS, draw=e["draw"]))
            states = replay(m, [Action(*s["action"]) for s in e["counterexample"]])
            assert _violates(m, name, states[-1])
            assert [s["step"] for s in e["counterexample"]] == list(range(1, e["length"] + 1))
            seen += 1
    assert seen == 3


def test_fixed_without_faults_proves_everything():
    """Invariant (done when): the corrected rule with no fault proves all five
    properties, complete, and no loss is possible at all."""
    r = check(Config(router="fixed"), draws=4)
    assert r["complete"] is True
    assert {n: e["holds"] for n, e in r["properties"].items()} == dict.fromkeys(MODEL_PROPERTIES, True)
    assert r[LOSS_WITH_FAULTS]["possible"] is False


def test_channels_redis_4_on_two_shards_misroutes_a_direct_reply():
    """Invariant (done when, #221): on 2 shards, channels_redis-4 breaks rendezvous in
    4 steps: request, send, take, and a reply to the whole name's shard while the
    server listens on its prefix's shard."""
    r = check(Config(router="channels_redis-4", shards=2, faults=DEFAULT_FAULTS), draws=4)
    e = r["properties"]["rendezvous"]
    assert e["holds"] is False and e["length"] == 4
    assert [s["verb"] for s in e["counterexample"]] == ["request", "send", "take", "reply"]
    last = e["counterexample"][-1]
    assert last["broke"] == ["rendezvous"] and "misrouted" in last["text"]


# Pinned sizes: an accidental change to the state space fails here, loudly.
PINNED = [
    # router, faults, symmetry, states, transitions, depth
    ("fixed", (), True, 771, 3564, 20),
    ("fixed", (), False, 2691, 11754, 20),
    ("channels_redis-4", DEFAULT_FAULTS, True, 1620, 11766, 20),
    ("channels_redis-pubsub-3.3", (), True, 961, 3782, 16),
    ("fixed", ("host_change",), True, 12465, 68873, 24),
]


@pytest.mark.parametrize("router, faults, symmetry, states, transitions, depth", PINNED)
def test_state_counts_are_pinned(router, faults, symmetry, states, transitions, depth):
    """Invariant: the default small configuration (seed 1, draw 0) has exactly the
    pinned number of states, transitions and depth."""
    ex = explore(Model(Config(router=router, faults=faults)), symmetry=symmetry)
    assert (ex.states, ex.transitions, ex.depth, ex.complete) == (states, transitions, depth, True)


@pytest.mark.slow
def test_benchmark_configuration_is_pinned():
    """Invariant: 2 servers x 2 workers x 3 shards x 2 requests with every fault has the
    pinned size for fixed, and is exhausted."""
    ex = explore(Model(Config(router="fixed", shards=3, faults=FAULTS)))
    assert (ex.states, ex.transitions, ex.depth, ex.complete) == (31176, 316432, 24, True)


def test_limits_stop_cleanly_and_say_so():
    """Invariant: at the state limit the search stops, is not complete, and a property
    without a counterexample is "unknown", never true."""
    r = check(Config(router="fixed", faults=DEFAULT_FAULTS), draws=1, max_states=500)
    assert r["complete"] is False and r["states"] == 500
    assert r["draws"][0]["stopped_by"] == "max_states"
    assert all(e["holds"] == "unknown" for e in r["properties"].values())
    assert "not complete (stopped at max states)" in r["coverage"]


def test_state_graph_has_no_cycles_and_ends_where_runs_end():
    """Invariant: the state graph (networkx) is acyclic, so its attracting components
    are single states with no action left, and each is a state where a run can end."""
    m = Model(Config(router="fixed", faults=("expiry", "worker_crash"), requests_per_server=1))
    ex = explore(m, graph=True)
    g = ex.graph
    assert g.number_of_nodes() == ex.states
    assert nx.is_directed_acyclic_graph(g)
    ends = [next(iter(c)) for c in nx.attracting_components(g)]
    assert ends and all(m.successor_actions(g.nodes[k]["state"]) == ([], 0) for k in ends)


def test_results_do_not_depend_on_the_order_of_calls():
    """Invariant: the same configuration gives the same result, whatever ran before."""
    cfg = Config(router="channels_redis-4", faults=("capacity",))
    first = check(cfg, draws=2)
    check(Config(router="fixed"), draws=1)
    assert check(cfg, draws=2) == first
