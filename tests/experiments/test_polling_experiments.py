"""workers-per-shard and receive-latency: closed forms, the event-log reader, seeds."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from experiments.base import Point, point_seed, run_experiment
from experiments.polling import quantile, run_requests
from experiments.receive_latency import (ALL, SPLIT, ReceiveLatency, erlang_c,
                                         mmc_mean, mmc_quantile, mmc_tail)
from experiments.receive_latency import _run as _rl_run
from experiments.workers_per_shard import (P99_SERVICE, WorkersPerShard,
                                           independent_empty)
from experiments.workers_per_shard import _run as _wps_run
from sim.scenario import Fault, Load, default_scenario


class SmallWorkersPerShard(WorkersPerShard):
    """Two counts, two seeds: the serial/parallel check without the full quick sweep."""

    replications_quick = 2

    def points(self):
        return [p for p in super().points() if p.params["workers_per_shard"] in (1, 10)]


class SmallReceiveLatency(ReceiveLatency):
    replications_quick = 2

    def points(self):
        return [p for p in super().points() if p.params["workers"] in (3, 6)]


@pytest.mark.parametrize("cls", [SmallWorkersPerShard, SmallReceiveLatency])
def test_serial_and_parallel_runs_are_identical(cls):
    """Seeds come from the point, not the order: 1 and 2 workers give the same JSON.

    The parallel run goes first, in fresh processes, so the serial run cannot read
    its runs from the per-process cache."""
    _wps_run.cache_clear()
    _rl_run.cache_clear()
    parallel = run_experiment(cls(quick=True), workers=2)
    serial = run_experiment(cls(quick=True), workers=1)
    assert json.dumps(serial) == json.dumps(parallel)


def test_erlang_c_known_values():
    """C(1, a) = a (M/M/1 waits with probability rho); C(2, 1) = 1/3 by hand."""
    assert erlang_c(1, 0.4) == pytest.approx(0.4)
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    with pytest.raises(ValueError, match="must be below"):
        erlang_c(2, 2.0)


def test_mmc_sojourn_closed_forms():
    """M/M/1: T ~ Exp(mu - lambda), so mean 1/(mu - lambda), p99 ln 100/(mu - lambda);
    the tail starts at 1; many servers: the service time alone (s ln 100)."""
    s, rate = 0.05, 10.0   # mu = 20
    assert mmc_mean(1, rate, s) == pytest.approx(1.0 / (20.0 - rate))
    assert mmc_tail(0.0, 1, rate, s) == pytest.approx(1.0)
    assert mmc_tail(0.3, 1, rate, s) == pytest.approx(math.exp(-3.0))
    assert mmc_quantile(0.99, 1, rate, s) == pytest.approx(math.log(100) / 10.0, rel=1e-9)
    assert mmc_quantile(0.99, 40, 40.0, s) == pytest.approx(P99_SERVICE, rel=1e-6)
    # theta = mu exactly (c = 2, lambda = mu): the degenerate branch is continuous
    assert mmc_tail(0.1, 2, 20.0, s) == pytest.approx(
        mmc_tail(0.1, 2, 20.0 * (1 + 1e-7), s), rel=1e-5)


def test_independent_empty():
    """(1 - 1/N)^W: one worker on two shards leaves a given shard empty half the time."""
    assert independent_empty(1, 2) == 0.5
    assert independent_empty(30, 3) == pytest.approx((2 / 3) ** 30)


def test_quantile_is_the_ceil_rank():
    """The q-quantile is the ceil(q n)-th smallest; empty gives 0."""
    assert quantile(tuple(range(1, 101)), 0.99) == 99
    assert quantile((5.0,), 0.99) == 5.0
    assert quantile((), 0.5) == 0.0


def test_run_requests_accounts_for_every_request():
    """One shard, no expiry: every post-warm-up request is handed or queued, none
    expires, and every one is answered with a latency of at least zero."""
    sc = dataclasses.replace(default_scenario(), seed=3, router="asgi_redis-1", shards=1,
                             interface_servers=2, workers=2, duration=20.0, drain=5.0,
                             load=Load(kind="poisson", rate=20.0))
    st = run_requests(sc, warmup=5.0)
    assert st.requests > 200
    assert st.queued + st.handed == st.requests
    assert st.expired == 0 and len(st.latencies) == st.requests
    assert 0 < st.queued < st.requests and st.latencies[0] >= 0
    assert list(st.latencies) == sorted(st.latencies)


def test_points_and_predictions():
    """workers-per-shard predicts only where the advice applies (w >= 10); receive-latency
    only the wait-on-all series; every metric of a run shares its seed."""
    wps = WorkersPerShard(quick=True)
    pred = {(p.series, p.params["workers_per_shard"]): p.prediction for p in wps.points()}
    assert pred[("p99 latency (s), channels-2015", 10)] == pytest.approx(P99_SERVICE)
    assert pred[("expired at E = 2 s (%), asgi_redis-1", 20)] == 0.0
    assert pred[("p99 latency (s), asgi_redis-1", 5)] is None
    assert all(v is None for (s, _), v in pred.items() if s.startswith("waited"))
    a, b = (p for p in wps.points() if p.params == {"workers_per_shard": 5}
            and p.series.endswith("channels-2015") and not p.series.startswith("waited"))
    assert point_seed(wps.name, wps.seed_point(a), 0) == point_seed(wps.name, wps.seed_point(b), 0)

    rl = ReceiveLatency(quick=True)
    for p in rl.points():
        assert (p.prediction is None) == p.series.endswith(SPLIT)
    assert any(p.series.endswith(ALL) for p in rl.points())
    assert rl.seed_point(Point(f"mean latency, {ALL}", {"workers": 3})) == \
        rl.seed_point(Point(f"p99 latency, {ALL}", {"workers": 3}))


@pytest.mark.parametrize("router", ["asgi_redis-1", "fixed"])
def test_wait_on_all_shards_receiver(router):
    """A worker waiting on every shard at once: with as many workers as requests ever
    in service, no request waits on any shard; under a shard crash and a partition
    the fates still add up (the run raises otherwise); the run is deterministic."""
    base = dataclasses.replace(default_scenario(), seed=5, router=router, shards=3,
                               interface_servers=2, workers=12, duration=20.0, drain=3.0,
                               service_time=0.01, load=Load(kind="poisson", rate=20.0))
    calm = run_requests(base, warmup=2.0, wait_all_shards=True)
    assert calm.requests > 300 and calm.queued == 0 and calm.handed == calm.requests
    faulty = dataclasses.replace(base, faults=(
        Fault(kind="shard_crash", at=5.0, target="shard1", duration=3.0),
        Fault(kind="partition", at=10.0, target="worker0", shard="shard2", duration=4.0)))
    a = run_requests(faulty, warmup=2.0, wait_all_shards=True)
    assert a == run_requests(faulty, warmup=2.0, wait_all_shards=True)
    assert a.requests > 300 and len(a.latencies) > 0.5 * a.requests
