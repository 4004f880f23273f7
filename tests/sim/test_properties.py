"""Tests for model.properties (the declarations) and sim.monitors (their use in a run)."""

import pytest
from hypothesis import given, strategies as st

from model import properties
from model.properties import PROPERTIES, SIM_PROPERTIES, Property
from sim import monitors as monitors_module
from sim.monitors import Monitors

NAMES = ("rendezvous", "cluster_containment", "at_most_once", "conservation")
shard_names = st.sampled_from([f"shard{i}" for i in range(5)])
shard_sets = st.frozensets(shard_names)


def test_simulator_monitors_exactly_the_four():
    """Invariant: the simulator monitors exactly rendezvous, cluster_containment,
    at_most_once and conservation, in that order, each a declared property (the model
    checker may declare more, such as owner_only, in the same module)."""
    assert SIM_PROPERTIES == NAMES
    assert set(NAMES) <= set(PROPERTIES)


def test_declarations_are_well_formed():
    """Invariant: each declaration is a named property of a known kind, with a
    sentence, the facts it reads, and its module-level predicate; the four the
    simulator monitors are `always` properties; every property a consumer lists is
    declared."""
    for name, prop in PROPERTIES.items():
        assert isinstance(prop, Property) and prop.name == name
        assert prop.kind in ("always", "sometimes", "eventually")
        assert prop.description and prop.over
        assert prop.check is getattr(properties, name)
    for name in SIM_PROPERTIES:
        assert PROPERTIES[name].kind == "always"
    assert set(getattr(properties, "MODEL_PROPERTIES", ())) <= set(PROPERTIES)


#: name -> (facts on which it holds, facts on which it fails), for every declaration.
CASES = [
    ("rendezvous", ("shard1", {"shard1"}), ("shard1", {"shard0", "shard2"})),
    ("rendezvous", ("shard0", ("shard0", "shard1")), ("shard0", ())),
    ("cluster_containment", ("shard2", {"shard2", "shard3"}), ("shard0", {"shard2"})),
    ("at_most_once", (0,), (2,)),
    ("at_most_once", (1,), (7,)),
    ("conservation", (3, {"delivered": 2, "misrouted": 1}), (3, {"delivered": 2})),
    ("conservation", (0, {}), (0, {"expired": 1})),
    ("owner_only", ("iface0", "iface0"), ("iface1", "iface0")),
    ("no_silent_loss", (("answered", "refused"), False), (("answered", "lost"), False)),
    ("no_silent_loss", (("lost",), True), (("lost",), False)),
]


def test_every_declared_property_has_cases():
    """Invariant: no declared property goes untested for vacuity below."""
    assert {name for name, _, _ in CASES} == set(PROPERTIES)


@pytest.mark.parametrize("name, true_args, false_args", CASES)
def test_each_predicate_can_be_true_and_false(name, true_args, false_args):
    """Invariant: no property is vacuous; each predicate holds on some facts and fails
    on others."""
    if name not in PROPERTIES:
        pytest.skip(f"{name} is not declared")
    check = PROPERTIES[name].check
    assert check(*true_args) is True
    assert check(*false_args) is False


@given(shard_names, shard_sets)
def test_rendezvous_is_membership(written, listened):
    """Invariant (rendezvous): the message meets its owner iff the shard written is one
    the owner listens on."""
    assert PROPERTIES["rendezvous"].check(written, listened) == (written in listened)


@given(shard_names, shard_sets)
def test_containment_is_membership(written, readable):
    """Invariant (cluster_containment): contained iff the shard written is readable."""
    assert PROPERTIES["cluster_containment"].check(written, readable) == (written in readable)


@given(st.integers(0, 10))
def test_at_most_once_is_at_most_one(deliveries):
    """Invariant (at_most_once): holds for 0 or 1 deliveries, fails for more."""
    assert PROPERTIES["at_most_once"].check(deliveries) == (deliveries <= 1)


@given(st.integers(0, 100), st.dictionaries(st.sampled_from(["delivered", "expired",
                                                             "misrouted", "in_flight"]),
                                            st.integers(0, 50)))
def test_conservation_is_sum(sent, fates):
    """Invariant (conservation): holds iff the fates add up to the messages sent."""
    assert PROPERTIES["conservation"].check(sent, fates) == (sum(fates.values()) == sent)


# -- the monitors evaluate these same declarations ------------------------------------------

def test_monitors_use_the_declared_predicates():
    """Invariant: properties are declared once; the monitors call `model.properties`'
    predicates, not copies of them."""
    module_values = list(vars(monitors_module).values())
    for name in NAMES:
        assert any(v is PROPERTIES[name].check for v in module_values), name


def test_fresh_monitors_report_every_property_holding():
    """Invariant: before any event, every monitored property holds, unviolated."""
    report = Monitors().report()
    assert list(report) == list(SIM_PROPERTIES)
    for r in report.values():
        assert r == {"holds": True, "violations": 0, "checked": 0, "first_violation": None}


def test_rendezvous_violation_counts_and_keeps_the_first_offender():
    """Invariant (rendezvous monitor): a write to a shard the owner does not listen on
    is a violation; violations are counted and the first offender is kept."""
    m = Monitors()
    ok = m.on_specific_write(1.0, "r.a!1", "worker0", "shard0",
                             frozenset({"shard0"}), frozenset({"shard0", "shard1"}))
    assert ok is True
    bad1 = m.on_specific_write(2.0, "r.a!2", "worker1", "shard1",
                               frozenset({"shard0"}), frozenset({"shard0", "shard1"}))
    bad2 = m.on_specific_write(3.0, "r.a!3", "worker2", "shard1",
                               frozenset({"shard0"}), frozenset({"shard0", "shard1"}))
    assert bad1 is False and bad2 is False
    r = m.report()["rendezvous"]
    assert r["holds"] is False and r["violations"] == 2 and r["checked"] == 3
    assert r["first_violation"] == {"time": 2.0, "channel": "r.a!2", "sender": "worker1",
                                    "shard_written": "shard1", "shards_listened": ["shard0"]}
    assert m.report()["cluster_containment"]["holds"] is True


def test_containment_violation_is_recorded():
    """Invariant (cluster_containment monitor): a write outside the owner's readable
    shards is a violation with its first offender."""
    m = Monitors()
    m.on_specific_write(1.5, "r.b!1", "worker3", "shard2",
                        frozenset({"shard0"}), frozenset({"shard0", "shard1"}))
    r = m.report()["cluster_containment"]
    assert r["violations"] == 1 and not r["holds"]
    assert r["first_violation"]["shard_written"] == "shard2"
    assert r["first_violation"]["shards_readable"] == ["shard0", "shard1"]


def test_at_most_once_violation_is_recorded():
    """Invariant (at_most_once monitor): a publish reaching several subscribers is a
    violation; one or none is not."""
    m = Monitors()
    m.on_deliveries(1.0, "http.request", "iface0", "shard0", 1)
    m.on_deliveries(1.1, "http.request", "iface0", "shard0", 0)
    m.on_deliveries(1.2, "http.request", "iface1", "shard1", 3)
    r = m.report()["at_most_once"]
    assert r["checked"] == 3 and r["violations"] == 1
    assert r["first_violation"]["deliveries"] == 3
    assert r["first_violation"]["sender"] == "iface1"


def test_conservation_violation_is_recorded():
    """Invariant (conservation monitor): fates that do not add up to the messages sent
    are a violation naming the kind."""
    m = Monitors()
    m.on_end({"request": 3, "response": 2},
             {"request": {"delivered": 3}, "response": {"delivered": 1}})
    r = m.report()["conservation"]
    assert r["checked"] == 2 and r["violations"] == 1
    assert r["first_violation"] == {"kind": "response", "sent": 2, "fates": 1}


def test_a_second_delivery_of_one_message_breaks_at_most_once():
    """Invariant (at_most_once, queue storages): the world shows every delivery to the
    monitor; a message handed over a second time is a violation, the first is not, and
    the ledger still counts it once."""
    from sim.ledger import DELIVERED
    from sim.scenario import scenario_from_dict
    from sim.shard import Msg
    from sim.world import World
    world = World(scenario_from_dict({"interface_servers": 1, "workers": 1}, "t"))
    msg = Msg(0, None, 0, "http.request", 0.0)
    world.settle(msg, DELIVERED)
    assert world.monitors.report()["at_most_once"]["violations"] == 0
    world.settle(msg, DELIVERED)
    r = world.monitors.report()["at_most_once"]
    assert r["checked"] == 2 and r["violations"] == 1
    assert r["first_violation"]["deliveries"] == 2
    assert sum(world.ledger.fates[0]) == 1
