"""clusters: do responses survive splitting the deployment into K clusters?

Question
    With shards and workers split into K clusters and requests load-balanced over
    every shard, what fraction of responses is lost when each worker hashes a
    response within its own cluster's shards (naive), against one ring of all shards
    that every worker and interface server shares (the documented design)?

Scenario
    Router ``fixed`` (so the profile itself routes responses correctly), 2 shards and
    10 workers per cluster, 4 interface servers per cluster, default load (Poisson
    200/s, 50 ms service), ``[topology] clusters = K`` with ``responses = "cluster"``
    (naive) or ``"shared"``. Quick: 10 s, K in {1, 2, 3, 4, 6}, 5 seeds; full:
    30 s, K = 1..8, 10 seeds. Value: misrouted responses / responses sent.

Expected
    A request lands on a shard chosen round robin over all shards, so its cluster is
    uniform over the K clusters, and a worker of that cluster serves it. Naive: the
    response is hashed within the worker's cluster, while the interface server listens
    only in its home cluster (the two are independent), so it is lost unless the
    clusters coincide:  lost = (K - 1) / K.  Shared: one ring that both sides
    derive:  lost = 0.

How to read
    The naive line follows (K-1)/K: half the responses are lost with two clusters.
    The shared ring loses nothing at any K: this is why Channels marks response
    channels and routes them to a predictable server.
"""

from __future__ import annotations

import dataclasses

from experiments.base import DOES_NOT_HOLD, HOLDS, Experiment, Point, by_series
from sim.runner import run_scenario
from sim.scenario import Topology, default_scenario

SERIES = {"naive (cluster)": "cluster", "shared ring": "shared"}


class Clusters(Experiment):
    name = "clusters"
    claim = ("If we broke things into clusters, a response might be sent on a different "
             "cluster to the one the interface server listens on; a ring shared by "
             "every worker and interface server avoids that (Channels docs, Scaling).")
    title = "Responses lost vs number of clusters"
    xparam = "clusters"
    xlabel = "clusters, K (count)"
    ylabel = "lost (misrouted) responses (fraction, 0-1)"
    replications_quick = 5
    replications_full = 10
    # A seed sends >= 1900 responses: binomial sd <= 0.5/sqrt(1900) = 0.0115; the mean
    # of >= 5 seeds has sd <= 0.0052, and 0.03 is about 6 sd.
    _tol = 0.03

    def tolerance_note(self) -> str:
        return ("|value - prediction| <= 0.03: a seed sends >= 1900 responses (binomial "
                "sd <= 0.0115); the mean of >= 5 seeds has sd <= 0.0052, about 6 sd")

    def points(self) -> list[Point]:
        ks = (1, 2, 3, 4, 6) if self.quick else tuple(range(1, 9))
        return [Point(s, {"clusters": k}, (k - 1) / k if mode == "cluster" else 0.0)
                for s, mode in SERIES.items() for k in ks]

    def measure(self, point: Point, seed: int) -> float:
        k = point.params["clusters"]
        sc = dataclasses.replace(
            default_scenario(), seed=seed, router="fixed", shards=2 * k, workers=10 * k,
            interface_servers=4 * k, duration=10.0 if self.quick else 30.0, drain=2.0,
            topology=Topology(clusters=k, responses=SERIES[point.series]), name="clusters")
        r = run_scenario(sc)
        sent = r["sent"]["response"]
        return r["fates_by_kind"]["response"]["misrouted"] / sent if sent else 0.0

    def claim_verdict(self, result: dict) -> tuple[str, str]:
        """Naive clusters must lose responses at K > 1 and the shared ring none
        (both beyond or within the noise tolerance)."""
        groups = by_series(result)
        naive = [p for p in groups.get("naive (cluster)", []) if p["params"]["clusters"] > 1]
        shared = groups.get("shared ring", [])
        low = min(naive, key=lambda p: p["value"]) if naive else None
        top = max((p["value"] for p in shared), default=0.0)
        why = (f"naive clusters lost {low['value']:.2f} to "
               f"{max(p['value'] for p in naive):.2f} of responses for K = 2 to "
               f"{max(p['params']['clusters'] for p in naive)}; the shared ring lost at "
               f"most {top:.3g} at any K." if low else "no K > 1 in the result.")
        naive_loses = low is not None and low["value"] > self._tol
        shared_safe = top <= self._tol
        if naive_loses and shared_safe:
            return HOLDS, why
        if shared_safe:
            return "holds only for the shared ring (naive clusters did not lose)", why
        return DOES_NOT_HOLD, why


EXPERIMENT = Clusters
