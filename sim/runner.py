"""Run a scenario and shape its result.

One result shape for every run (`run_scenario`): the scenario itself, the router,
messages sent by kind, the fate of every message (totals and by kind), latency
quantiles, the properties with their violations, and the writes each shard took.
No wall-clock figure enters a result, so the same scenario and seed give the same
bytes in any process.
"""

from __future__ import annotations

from typing import Any, Callable

from sim.ledger import KINDS
from sim.scenario import Scenario
from sim.world import World

__all__ = ["run_scenario", "expected_requests"]


def expected_requests(sc: Scenario) -> int:
    """How many client requests the load will offer (for progress displays)."""
    load = sc.load
    if load.requests:
        return load.requests
    if load.kind == "burst":
        return int(sc.duration / load.burst_interval) * load.burst_size
    return int(sc.duration * load.rate)


def run_scenario(sc: Scenario, progress: Callable[[int], None] | None = None,
                 events: bool = False, placement: bool = False) -> dict[str, Any]:
    """Simulate ``sc`` to the end of its drain time and return its result.

    ``progress``, if given, is called now and then with the requests offered so far.
    ``events=True`` adds the run's event log (`sim.events`) as ``events``.
    ``placement=True`` adds ``placement``: ``{"response": {channel: shard}}``, the
    shard each response's send() wrote to (a refused write counts; one to a shard that
    was down or cut off does not), sorted by channel.
    """
    world = World(sc, events=events, placement=placement)
    env = world.env
    if progress is None:
        env.run(until=world.load_done)
    else:
        step = max(sc.duration / 100.0, 0.05)
        while not world.load_done.triggered:
            env.run(until=env.now + step)
            progress(world.ledger.sent[KINDS.index("request")])
    env.run(until=env.now + sc.drain if sc.drain > 0 else env.now + 1e-9)
    world.finish()
    ledger = world.ledger
    return {
        "router": sc.router,
        "scenario": sc.name,
        "seed": sc.seed,
        "shards": sc.shards,
        "end_time_s": round(env.now, 6),
        "sent": ledger.sent_by_kind(),
        "fates": ledger.fate_totals(),
        "fates_by_kind": ledger.fates_by_kind(),
        "latency_s": {"p50": ledger.latency.quantile(0.5),
                      "p99": ledger.latency.quantile(0.99)},
        "invariants": world.monitors.report(),
        "channel_full_errors": dict(zip(KINDS, world.channel_full_errors)),
        "shard_writes": {name: sum(s.writes) for name, s in world.shards.items()},
        "shard_load": shard_load(world),
        "queued_at_end": world.queued_at_end,
        "cross_channel_full": {"count": world.cross_channel_full,
                               "first": world.cross_channel_first},
        "config": sc.to_dict(),
        **({"trace": world.trace, "trace_omitted": world.trace_omitted}
           if sc.steps else {}),
        **({"events": world.events} if events else {}),
        **({"placement": {"response": dict(sorted(world.placement.items()))}}
           if placement else {}),
    }


#: A shard is hot when it takes more than this many times the mean shard load.
HOT_FACTOR = 1.5
MIN_MEAN = 5.0


def shard_load(world: World) -> dict[str, Any]:
    """Writes per shard (all kinds and by kind), the imbalance (max over mean) and the
    hot shards, the figure the ``hot-shard`` question is about."""
    writes = {name: sum(s.writes) for name, s in world.shards.items()}
    total = sum(writes.values())
    mean = total / len(writes)
    imbalance = round(max(writes.values()) / mean, 4) if total else None
    return {
        "by_kind": {k: {name: s.writes[i] for name, s in world.shards.items()}
                    for i, k in enumerate(KINDS)},
        "imbalance": imbalance,
        # a hot shard needs enough traffic to tell: at least MIN_MEAN writes a shard
        "hot_shards": [n for n, w in writes.items() if len(writes) > 1
                       and mean >= MIN_MEAN and w > HOT_FACTOR * mean],
    }

