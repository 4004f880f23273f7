"""Request-path measurements from one run's event log, shared by the polling experiments.

``workers-per-shard`` and ``receive-latency`` ask how long a request waits for a
worker, which the run's summary (`sim.runner.run_scenario`: p50, p99 over the whole
run) cannot answer after a warm-up cut. This module runs a scenario with the event
log on (`sim.events`) and reads, for the requests that entered after the warm-up:

- whether each was ``handed`` to a worker already waiting on its shard or ``queued``;
- its end-to-end latency (request to delivered response), exact, not bucketed;
- whether it expired.

Nothing here changes the simulator; it only reads what a run logged (and can switch
the workers to the receive that waits on every shard).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.scenario import Scenario
from sim.world import World

__all__ = ["RequestStats", "run_requests", "quantile"]


@dataclass(frozen=True)
class RequestStats:
    """What happened to the requests that entered after the warm-up."""

    requests: int              # requests entered after the warm-up
    queued: int                # of those sent to a shard: found no waiting worker
    handed: int                # of those sent to a shard: handed to a waiting worker
    expired: int               # requests whose fate was expiry
    latencies: tuple[float, ...]  # end-to-end, delivered responses only, sorted

    @property
    def waited_share(self) -> float:
        sent = self.queued + self.handed
        return self.queued / sent if sent else 0.0

    @property
    def expired_share(self) -> float:
        return self.expired / self.requests if self.requests else 0.0

    @property
    def mean_latency(self) -> float:
        return math.fsum(self.latencies) / len(self.latencies) if self.latencies else 0.0

    def latency_quantile(self, q: float) -> float:
        return quantile(self.latencies, q)


def quantile(sorted_values: tuple[float, ...] | list[float], q: float) -> float:
    """The empirical q-quantile: the ceil(q n)-th smallest value (0 when empty)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    return sorted_values[max(1, math.ceil(q * n)) - 1]


def run_requests(sc: Scenario, warmup: float, wait_all_shards: bool = False) -> RequestStats:
    """Run ``sc`` (load, then drain) with the event log and summarise its requests.

    Only requests that entered at or after ``warmup`` seconds count, so the start
    (every asgi_redis-1 worker's round robin begins at shard 0) does not bias the
    figures. ``wait_all_shards``: every worker's receive waits on all its shards at
    once (`sim.world.Worker.wait_all_shards`) instead of its router's one shard.
    Deterministic: the same scenario gives the same numbers in any process.
    """
    world = World(sc, events=True)
    for worker in world.workers:  # read when the worker's process starts (env.run)
        worker.wait_all_shards = wait_all_shards
    env = world.env
    env.run(until=world.load_done)
    env.run(until=env.now + sc.drain if sc.drain > 0 else env.now + 1e-9)
    world.finish()
    started: dict[str, float] = {}
    queued = handed = expired = 0
    lat: list[float] = []
    for ev in world.events:
        verb = ev[0]
        if verb == "request":
            if ev[1] >= warmup:
                started[ev[5]] = ev[1]
        elif verb == "send_request":
            if ev[3] in started:
                if ev[5] == "queued":
                    queued += 1
                elif ev[5] == "handed":
                    handed += 1
        elif verb == "fate":
            _, t, kind, channel, fate = ev
            t0 = started.get(channel)
            if t0 is None:
                continue
            if kind == "request" and fate == "expired":
                expired += 1
            elif kind == "response" and fate == "delivered":
                lat.append(t - t0)
    lat.sort()
    return RequestStats(len(started), queued, handed, expired, tuple(lat))
