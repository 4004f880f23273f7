"""Tests for the model checker's property declarations in model.properties."""

from hypothesis import given, strategies as st

from model import properties
from model.properties import MODEL_PROPERTIES, PROPERTIES, SIM_PROPERTIES

outcome = st.sampled_from(["answered", "refused", "lost", "pending"])


def test_model_properties_are_the_issues_five_in_order():
    """Invariant: the checker evaluates rendezvous, cluster_containment, at_most_once,
    owner_only, no_silent_loss, in that order, each declared once in PROPERTIES; the
    simulator's list is untouched."""
    assert MODEL_PROPERTIES == ("rendezvous", "cluster_containment", "at_most_once",
                                "owner_only", "no_silent_loss")
    assert all(n in PROPERTIES for n in MODEL_PROPERTIES)
    assert SIM_PROPERTIES == ("rendezvous", "cluster_containment", "at_most_once",
                              "conservation")


def test_new_declarations_are_well_formed():
    """Invariant: owner_only is an `always` property and no_silent_loss an `eventually`
    one, each with a sentence, its facts and its module-level predicate."""
    assert PROPERTIES["owner_only"].kind == "always"
    assert PROPERTIES["no_silent_loss"].kind == "eventually"
    for name in ("owner_only", "no_silent_loss"):
        p = PROPERTIES[name]
        assert p.description and p.over and p.check is getattr(properties, name)


@given(st.sampled_from(["iface0", "iface1", "iface2"]),
       st.sampled_from(["iface0", "iface1", "iface2"]))
def test_owner_only_is_equality(receiver, owner):
    """Invariant (owner_only): holds iff the receiver is the request's server."""
    assert PROPERTIES["owner_only"].check(receiver, owner) == (receiver == owner)


@given(st.lists(outcome, max_size=6), st.booleans())
def test_no_silent_loss_is_settled_or_excused(outcomes, excused):
    """Invariant (no_silent_loss): holds iff every outcome is answered or refused, or
    the run is excused by a crash, an expiry or a worker crash."""
    expected = excused or all(o in ("answered", "refused") for o in outcomes)
    assert PROPERTIES["no_silent_loss"].check(outcomes, excused) == expected


def test_new_predicates_can_be_true_and_false():
    """Invariant: neither new property is vacuous."""
    assert properties.owner_only("iface0", "iface0") and not properties.owner_only("iface1", "iface0")
    assert properties.no_silent_loss(["answered", "refused"], False)
    assert not properties.no_silent_loss(["answered", "lost"], False)
    assert properties.no_silent_loss(["lost"], True)
