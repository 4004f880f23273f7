"""Tests for sim.scenario: the built-in default, and one-line errors for bad input."""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sim.scenario import (FAULT_KINDS, Scenario, ScenarioError, default_scenario,
                          load_scenario, scenario_from_dict)


def test_default_scenario_is_the_documented_deployment():
    """Invariant: the built-in scenario is the deployment the Channels docs describe
    (3 shards, 4 interface servers, 20 workers, 200 requests/s for 60 s, 50 ms
    service, 60 s expiry, capacity 100), with no faults and no overrides."""
    sc = default_scenario()
    assert (sc.shards, sc.interface_servers, sc.workers) == (3, 4, 20)
    assert sc.load.kind == "poisson" and sc.load.rate == 200.0 and sc.load.requests == 0
    assert sc.duration == 60.0
    assert sc.service_time == 0.05
    assert sc.expiry == 60.0
    assert sc.capacity == 100
    assert sc.reply == "send"
    assert sc.router == "channels_redis-4"
    assert sc.faults == () and sc.processes == ()
    assert sc.name == "default"


def test_default_file_agrees_with_dataclass_defaults():
    """Invariant: defaults live in one place; `sim/default.toml` restates the
    `Scenario` dataclass defaults and changes none of them."""
    assert default_scenario() == Scenario()


def test_scenario_is_embedded_as_plain_data():
    """Invariant: `to_dict` holds every setting, so a result carries its whole scenario."""
    sc = default_scenario()
    d = sc.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(Scenario)}
    assert d["load"]["rate"] == 200.0 and d["topology"]["clusters"] == 1


def test_floats_given_as_integers_become_floats():
    """Invariant: a float setting written as a TOML integer is stored as a float (so
    results serialise the same whichever way the file spelled it)."""
    sc = scenario_from_dict({"duration": 5, "load": {"rate": 7}})
    assert isinstance(sc.duration, float) and isinstance(sc.load.rate, float)


def test_faults_are_sorted_by_time():
    """Invariant: faults are applied in time order, whatever order the file lists them."""
    sc = scenario_from_dict({"faults": [
        {"kind": "shard_crash", "at": 9.0, "target": "shard1", "duration": 1.0},
        {"kind": "worker_crash", "at": 2, "target": "worker3", "duration": 1.0},
    ]})
    assert [f.at for f in sc.faults] == [2.0, 9.0]


def test_host_change_defaults_to_every_process():
    """Invariant: a host_change without ``processes`` reloads every process."""
    sc = scenario_from_dict({"faults": [{"kind": "host_change", "at": 1, "hosts": ["shard0"]}]})
    assert sc.faults[0].processes == sc.process_names


# (data, key named in the message, the bad value as written, or None for a table).
# Values are matched without quotes and case-insensitively: the message may show them
# as TOML does (true, "nope") or as Python does (True, 'nope').
CRASH = {"kind": "shard_crash", "at": 1.0, "target": "shard0", "duration": 1.0}
BAD = [
    ({"load": {"rate": -1.0}}, "rate", "-1.0"),
    ({"load": {"rate": 0}}, "rate", "0"),
    ({"router": "nope"}, "router", "nope"),
    ({"shards": 0}, "shards", "0"),
    ({"shards": 65}, "shards", "65"),
    ({"bogus": 1}, "bogus", "bogus"),
    ({"load": {"bogus": 1}}, "bogus", "bogus"),
    ({"topology": {"bogus": 1}}, "bogus", "bogus"),
    ({"processes": [{"name": "worker1", "bogus": 1}]}, "bogus", "bogus"),
    ({"faults": [{**CRASH, "bogus": 1}]}, "bogus", "bogus"),
    ({"faults": [{**CRASH, "shard": "shard1"}]}, "shard", "shard"),  # not a crash's key
    ({"faults": [{**CRASH, "target": "worker1"}]}, "target", "worker1"),
    ({"faults": [{**CRASH, "kind": "worker_crash", "target": "iface0"}]}, "target", "iface0"),
    ({"faults": [{**CRASH, "kind": "meteor"}]}, "kind", "meteor"),
    ({"faults": [{**CRASH, "at": -1.0}]}, "at", "-1.0"),
    ({"faults": [{**CRASH, "at": 10 ** 400}]}, "at", str(10 ** 400)),  # TOML ints: unbounded
    ({"faults": [{**CRASH, "at": 99.0}], "duration": 5.0, "drain": 1.0}, "at", "99.0"),
    ({"faults": [{"kind": "partition", "at": 1.0, "target": "worker1", "shard": "shard0",
                  "duration": 0.0}]}, "duration", "0.0"),
    ({"faults": [{"kind": "partition", "at": 1.0, "target": "worker1",
                  "shard": "shard7", "duration": 1.0}]}, "shard", "shard7"),
    ({"faults": [{"kind": "host_change", "at": 1.0, "hosts": ["shard0", "shard9"]}]},
     "hosts", "shard9"),
    ({"processes": [{"name": "worker1", "hosts": ["shard3"]}]}, "hosts", "shard3"),
    ({"processes": [{"name": "worker99"}]}, "name", "worker99"),
    ({"processes": [{"name": "worker1", "router": "nope"}]}, "router", "nope"),
    ({"topology": {"clusters": 2}}, "clusters", "2"),  # 2 does not divide 3 shards
    ({"topology": {"clusters": 3}, "workers": 7}, "clusters", "3"),
    ({"topology": {"responses": "mixed"}}, "responses", "mixed"),
    ({"shards": True}, "shards", "true"),
    ({"load": {"requests": False}}, "requests", "false"),
    ({"load": {"requests": 1.5}}, "requests", "1.5"),
    ({"duration": math.nan}, "duration", "nan"),
    ({"expiry": math.inf}, "expiry", "inf"),
    ({"load": {"rate": -math.inf}}, "rate", "-inf"),
    ({"duration": 10 ** 400}, "duration", str(10 ** 400)),
    ({"reply": "post"}, "reply", "post"),
    ({"seed": -1}, "seed", "-1"),
    ({"load": "fast"}, "load", "fast"),
    ({"faults": {"kind": "shard_crash"}}, "faults", None),
]


@pytest.mark.parametrize("data, key, value", BAD,
                         ids=[f"{i}-{k}" for i, (_, k, _v) in enumerate(BAD)])
def test_bad_values_raise_one_line_errors(data, key, value):
    """Invariant: every unknown key or bad value is a ScenarioError whose message is
    one line naming the key and the bad value."""
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(data)
    msg = str(err.value)
    assert "\n" not in msg
    assert key in msg
    assert value is None or value.lower() in msg.lower()


def _write(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def test_file_values_are_validated_and_name_the_file(tmp_path):
    """Invariant: a bad value read from a file is a one-line ScenarioError naming the
    file, the key and the value (NaN and inf are valid TOML, not valid settings)."""
    for text, key, value in [("[load]\nrate = -5\n", "rate", "-5"),
                             ("duration = nan\n", "duration", "nan"),
                             ("expiry = inf\n", "expiry", "inf"),
                             ("shards = true\n", "shards", "true"),
                             ("duration = 1" + "0" * 400 + "\n", "duration", "1" + "0" * 400),
                             ("[[faults]]\nkind = \"shard_crash\"\nat = 1.0\n"
                              "target = \"worker2\"\nduration = 1.0\n", "target", "worker2")]:
        path = _write(tmp_path, text)
        with pytest.raises(ScenarioError) as err:
            load_scenario(path)
        msg = str(err.value)
        assert "\n" not in msg and path in msg and key in msg, msg
        assert value.lower() in msg.lower(), msg


def test_toml_syntax_error_is_one_line(tmp_path):
    """Invariant: a file that is not TOML is a one-line ScenarioError naming the file."""
    path = _write(tmp_path, "shards = [\nrouter = \n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert "\n" not in msg and path in msg and "TOML" in msg


def test_missing_file_is_one_line(tmp_path):
    """Invariant: a scenario path that does not exist is a one-line ScenarioError."""
    path = str(tmp_path / "nowhere.toml")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert "\n" not in msg and path in msg and "does not exist" in msg


def test_directory_is_one_line(tmp_path):
    """Invariant: a directory given as a scenario is a one-line ScenarioError."""
    with pytest.raises(ScenarioError) as err:
        load_scenario(str(tmp_path))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_overrides_are_validated():
    """Invariant: command-line overrides pass the same checks as the file."""
    assert load_scenario(None, {"shards": 5}).shards == 5
    with pytest.raises(ScenarioError) as err:
        load_scenario(None, {"workers": -1})
    assert "workers" in str(err.value) and "\n" not in str(err.value)


# -- validation is total: any input is a Scenario or a ScenarioError --------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                     st.integers(-10 ** 400, 10 ** 400), st.floats(), st.text(max_size=8),
                     st.sampled_from(["shard0", "worker1", "iface0", "all", "fixed",
                                      "send", "group", "poisson", "cluster"]))
_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=3)
                       | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)
_TOP_KEYS = [f.name for f in dataclasses.fields(Scenario)
             if f.name not in ("load", "topology", "processes", "faults")]
_fault = st.fixed_dictionaries(
    {"kind": st.sampled_from(FAULT_KINDS)},
    optional={k: _values for k in ("at", "target", "duration", "shard", "hosts",
                                   "processes")})
_process = st.fixed_dictionaries(
    {}, optional={"name": st.sampled_from(["worker1", "iface0"]) | _values,
                  "router": _values, "hosts": _values, "hash_seed": _values})
_documents = st.fixed_dictionaries({}, optional={
    **{k: _values for k in _TOP_KEYS},
    "load": st.fixed_dictionaries({}, optional={k: _values for k in (
        "kind", "rate", "requests", "burst_size", "burst_interval")}) | _values,
    "topology": st.fixed_dictionaries({}, optional={"clusters": _values,
                                                    "responses": _values}) | _values,
    "processes": st.lists(_process, max_size=2) | _values,
    "faults": st.lists(_fault, max_size=3) | _values,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_validation_is_total(data):
    """Invariant: `scenario_from_dict` either builds a Scenario or raises a one-line
    ScenarioError; no other exception escapes, whatever the (TOML-shaped) input."""
    try:
        sc = scenario_from_dict(data)
    except ScenarioError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(sc, Scenario)
