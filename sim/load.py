"""The client load of a scenario: when requests arrive and which interface server each
one is offered to.

One generator, `arrivals`, is the only place the ``SEED/load`` stream is drawn from.
The simulator (`sim.world.World`) waits out each gap on its SimPy clock; ``shardlab
replay`` adds the gaps up into a wall-clock schedule. Both therefore see the same
draws in the same order, and the same float additions, so a replay's requests arrive
at the simulator's instants on the simulator's interface servers.
"""

from __future__ import annotations

import random
from typing import Iterator

__all__ = ["arrivals", "schedule", "load_end"]


def arrivals(sc) -> Iterator[tuple[float, int | None]]:
    """Yield ``(gap, draw)`` pairs for scenario ``sc``: wait ``gap`` seconds, then one
    request arrives, offered to interface server number ``draw`` (0 to
    ``interface_servers - 1``; the simulator moves it to the next interface server that
    is up when that one is down).

    A ``burst`` or ``fixed`` load ends with one ``(interval, None)`` pair: the wait after
    the last burst, with no request. A scenario with no interface servers has no
    arrivals (nobody turns client requests into messages).

    - ``poisson``: exponential gaps at ``rate``; ``requests`` of them when set, else
      until the next arrival would fall after ``duration``.
    - ``fixed``: one request every ``1 / rate`` seconds, from time 0.
    - ``burst``: ``burst_size`` requests at once every ``burst_interval`` seconds, from
      time 0.
    For ``fixed`` and ``burst`` the count is ``requests`` when set, else what fits in
    ``duration``.
    """
    load = sc.load
    n = sc.interface_servers
    if n == 0:
        return
    rng = random.Random(f"{sc.seed}/load")
    limit = load.requests
    if load.kind == "poisson":
        t, count = 0.0, 0
        while True:
            dt = rng.expovariate(load.rate)
            if not limit and t + dt > sc.duration:
                return
            t += dt
            count += 1
            yield dt, rng.randrange(n)
            if limit and count >= limit:
                return
    interval = 1.0 / load.rate if load.kind == "fixed" else load.burst_interval
    size = 1 if load.kind == "fixed" else load.burst_size
    total = limit or (int(sc.duration * load.rate) if load.kind == "fixed"
                      else int(sc.duration / interval) * size)
    count, gap = 0, 0.0
    while count < total:
        for _ in range(min(size, total - count)):
            yield gap, rng.randrange(n)
            gap = 0.0
            count += 1
        gap = interval
    if count:
        yield gap, None


def schedule(sc) -> list[tuple[float, int]]:
    """``(scenario time, draw)`` of every request of `arrivals`, the gaps summed in the
    order the simulator's clock sums them."""
    out: list[tuple[float, int]] = []
    t = 0.0
    for gap, draw in arrivals(sc):
        if gap:
            t += gap
        if draw is not None:
            out.append((t, draw))
    return out


def load_end(sc) -> float:
    """When the load is over, in scenario seconds: every gap of `arrivals` summed, the
    wait after the last burst included, and at least ``duration`` unless the load is
    limited by ``requests`` (a timed load lasts its duration). The simulator's
    ``load_done`` fires then; its drain starts there."""
    t = 0.0
    for gap, _ in arrivals(sc):
        if gap:
            t += gap
    return t if sc.load.requests else max(t, sc.duration)
