"""hot-shard: how unevenly do response channels load the shards?

Question
    Each interface server's responses all go to the one shard of its prefix. How
    much more than the mean does the busiest shard take (max over mean of response
    writes per shard), as a function of the number of interface servers I and of
    shards N?

Scenario
    The default deployment with the ``fixed`` router (responses meet their listener;
    the placement is that of every CRC release), I interface servers, N shards,
    Poisson 200 requests/s, each request sent to a uniformly chosen interface server.
    Quick: 10 s, I in {1, 2, 4, 8, 16, 32}, N in {2, 4, 8}, 10 seeds; full: 30 s,
    I in {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}, 20 seeds. Value: max over shards
    of response writes, divided by their mean (``shard_load.by_kind.response``).

Expected
    Balls in bins: each of the I prefixes lands on shard k with probability p_k (the
    4096-bucket map, `experiments.analytic.crc_bucket_probs`), independently. With
    equal traffic per server the imbalance is N * M / I, M the fullest bin's count:

        E[imbalance] = (N / I) * E[M],   E[M] = sum_{m >= 0} (1 - P(all c_k <= m)),
        P(all c_k <= m) = I! [x^I] prod_k sum_{c <= m} (p_k x)^c / c!

    computed exactly. One server: imbalance N. Many servers: towards 1, slowly
    (the excess falls like sqrt(2 N ln N / I)).

How to read
    Each shard count is one line, with its prediction dashed. Few interface servers
    make hot shards: 4 servers on 4 shards put twice the mean on the busiest shard
    on average. The traffic per server is itself random (each request picks a
    server), which the balls-in-bins formula leaves out; it can only raise the
    maximum, and the tolerance bounds that excess.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from experiments.analytic import crc_bucket_probs, expected_max_load
from experiments.base import DOES_NOT_HOLD, HOLDS, Experiment, Point, agrees_at, by_series
from sim.runner import run_scenario
from sim.scenario import default_scenario

RATE = 200.0


@functools.lru_cache(maxsize=None)
def _max_load(ifaces: int, shards: int) -> tuple[float, float]:
    return expected_max_load(ifaces, crc_bucket_probs(shards))


def prediction(ifaces: int, shards: int) -> float:
    return shards * _max_load(ifaces, shards)[0] / ifaces


class HotShard(Experiment):
    name = "hot-shard"
    claim = ("Response channels are spread over the shards by hashing; the busiest "
             "shard's share follows balls in bins over the interface servers' prefixes.")
    title = "Response load imbalance (max / mean) vs interface servers"
    xparam = "interface_servers"
    xlabel = "interface servers, I (count)"
    ylabel = "busiest shard's response writes / mean (ratio)"
    replications_quick = 10
    replications_full = 20

    @property
    def duration(self) -> float:
        return 10.0 if self.quick else 30.0

    def tolerance(self, point: Point) -> float:
        i, n = point.params["interface_servers"], point.params["shards"]
        sd = n * _max_load(i, n)[1] / i
        responses = RATE * self.duration
        # 3 standard errors of the mean over seeds, from the balls-in-bins sd itself,
        # plus the excess a random traffic split can add to a maximum of N shard
        # loads: relative sd sqrt(N / R) each, max of N at most sqrt(2 ln N) sd.
        return 3 * sd / math.sqrt(self.replications) + math.sqrt(2 * math.log(n) * n / responses)

    def tolerance_note(self) -> str:
        return ("3 sd / sqrt(r), sd the balls-in-bins standard deviation of the "
                "imbalance over r seeds, plus sqrt(2 ln N * N / R), the most a Poisson "
                "split of R responses raises the maximum of N shard loads (Gaussian "
                "maximum bound)")

    def points(self) -> list[Point]:
        ifaces = (1, 2, 4, 8, 16, 32) if self.quick else (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
        return [Point(f"{n} shards", {"interface_servers": i, "shards": n}, prediction(i, n))
                for n in (2, 4, 8) for i in ifaces]

    def measure(self, point: Point, seed: int) -> float:
        sc = dataclasses.replace(
            default_scenario(), seed=seed, router="fixed", shards=point.params["shards"],
            interface_servers=point.params["interface_servers"], duration=self.duration,
            drain=2.0, name="hot-shard")
        loads = list(run_scenario(sc)["shard_load"]["by_kind"]["response"].values())
        total = sum(loads)
        return max(loads) * len(loads) / total if total else 0.0

    def claim_verdict(self, result: dict) -> tuple[str, str]:
        """Balls in bins must describe every shard count, within tolerance."""
        groups = by_series(result)
        good = [s for s, pts in groups.items() if all(agrees_at(self, p) for p in pts)]
        quoted = []
        for s, pts in groups.items():
            few = min(pts, key=lambda p: abs(p["params"]["interface_servers"] - 4))
            quoted.append(f"{few['params']['interface_servers']} interface servers on {s}: "
                          f"busiest shard {few['value']:.2f}x the mean (balls in bins "
                          f"{few['prediction']:.2f}x)")
        why = "; ".join(quoted) + "."
        if len(good) == len(groups):
            return HOLDS, why
        if not good:
            return DOES_NOT_HOLD, why
        return f"holds only for {', '.join(good)}", why


EXPERIMENT = HotShard
