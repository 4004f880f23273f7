"""sim.load: the one arrival schedule the simulator and the replay share."""

import pytest

from sim.load import arrivals, load_end, schedule
from sim.runner import run_scenario
from sim.scenario import scenario_from_dict

BASE = {"shards": 2, "interface_servers": 3, "workers": 6, "duration": 4.0, "drain": 2.0}


def sc_of(load, **top):
    return scenario_from_dict({**BASE, **top, "load": load}, "load")


@pytest.mark.parametrize("load, expected", [
    ({"kind": "fixed", "rate": 10.0}, 40),
    ({"kind": "fixed", "rate": 10.0, "requests": 7}, 7),
    ({"kind": "burst", "rate": 10.0, "burst_size": 5, "burst_interval": 1.5}, 10),
    ({"kind": "burst", "rate": 10.0, "burst_size": 5, "burst_interval": 1.0,
      "requests": 12}, 12),
    ({"kind": "poisson", "rate": 20.0, "requests": 33}, 33),
])
def test_counts_follow_the_load_kind(load, expected):
    assert len(schedule(sc_of(load))) == expected


def test_burst_times_are_multiples_of_the_interval_from_zero():
    times = [t for t, _ in schedule(sc_of({"kind": "burst", "rate": 10.0, "burst_size": 3,
                                           "burst_interval": 0.5, "requests": 8}))]
    assert times == [0.0] * 3 + [0.5] * 3 + [1.0] * 2
    # the wait after the last burst is the one pair without a request
    assert list(arrivals(sc_of({"kind": "fixed", "rate": 2.0, "requests": 2})))[-1] == (0.5, None)


def test_poisson_without_a_limit_stops_inside_the_duration():
    sc = sc_of({"kind": "poisson", "rate": 50.0})
    times = [t for t, _ in schedule(sc)]
    assert times and times == sorted(times) and times[-1] <= sc.duration
    assert all(0 <= i < sc.interface_servers for _, i in schedule(sc))


def test_no_interface_servers_means_no_arrivals():
    assert schedule(sc_of({"rate": 10.0}, interface_servers=0, actors=[
        {"name": "a"}], steps=[{"at": 0.0, "actor": "a", "op": "send",
                                "channel": "x"}])) == []


@pytest.mark.parametrize("load", [{"kind": "poisson", "rate": 30.0},
                                  {"kind": "fixed", "rate": 25.0},
                                  {"kind": "burst", "rate": 1.0, "burst_size": 20,
                                   "burst_interval": 1.0}])
def test_the_simulator_sends_exactly_the_scheduled_requests(load):
    sc = sc_of(load)
    assert run_scenario(sc)["sent"]["request"] == len(schedule(sc))


def test_placement_agrees_with_the_shard_writes():
    """Invariant: with placement on, every response sent has one entry, and the entries
    per shard are the response writes each shard took (no faults: nothing refused)."""
    from collections import Counter
    sc = sc_of({"kind": "poisson", "rate": 30.0}, router="channels_redis-4")
    result = run_scenario(sc, placement=True)
    placed = result["placement"]["response"]
    assert len(placed) == result["sent"]["response"] > 0
    writes = result["shard_load"]["by_kind"]["response"]
    assert Counter(placed.values()) == Counter({s: n for s, n in writes.items() if n})
    assert "placement" not in run_scenario(sc)


@pytest.mark.parametrize("load", [{"kind": "poisson", "rate": 30.0},
                                  {"kind": "poisson", "rate": 30.0, "requests": 20},
                                  {"kind": "fixed", "rate": 2.0, "requests": 5},
                                  {"kind": "burst", "rate": 1.0, "burst_size": 3,
                                   "burst_interval": 2.0, "requests": 5}])
def test_load_end_is_when_the_simulator_starts_draining(load):
    """Invariant: load_end is the simulator's end of load: the run ends drain later."""
    sc = sc_of(load)
    assert run_scenario(sc)["end_time_s"] == round(load_end(sc) + sc.drain, 6)
