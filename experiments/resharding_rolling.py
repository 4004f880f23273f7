"""resharding-rolling: messages lost while a host-list change rolls out.

The second half of the issue's ``resharding`` question (the first half, the share of
names that move, is `experiments.resharding`).

Question
    A deployment on N Redis hosts gets an (N+1)-th. Processes are restarted with the
    new list one by one, so for a while some run on N hosts and some on N + 1. What
    fraction of client requests goes unanswered as a function of the fraction of
    processes already switched, for the releases' bucket map (``crc``) and for a
    consistent ring (jump)?

Scenario
    Routers ``fixed`` (crc) and ``fixed-jump``: the corrected rule, so that nothing is
    lost before the change. N = 3 shards in use, ``shard3`` added; every process
    starts on ``shard0..shard2`` (``[[processes]] hosts``), and a ``host_change``
    fault at t = 0 moves the first round(g I) of the I = 256 interface servers to
    ``shard0..shard3``. The rollout goes interface servers first; all 20 workers are
    still on the old list (a worker on the new list would wait on the new, empty
    shard for good: channels_redis 2+ keeps one receive on one shard, see README
    "What the model shows"). Poisson 200 requests/s, 50 ms service, 2 s drain, capacity 10**6 (no key refuses).
    Quick: 10 s, g in {0, 0.25, 0.5, 0.75, 1}, 5 seeds; full: 30 s, g = 0, 0.1, ...,
    1, 10 seeds. Value: the loss probability of one request,
    q + (1 - q) * misrouted / responses, with q the share of requests written to
    ``shard3``. The second term is taken over the requests actually served: idle
    workers drift between shards (README, "What the model shows"), so some requests
    are still queued at the end on old shards even at g = 0; they are not lost by
    the change, and counting them as sent-but-unanswered would bias the response
    term low.

Expected
    A switched interface server sends its requests round robin over N + 1 hosts; the
    1/(N + 1) that land on the new host are never polled (no worker lists it) and are
    lost. The rest are served by an old-list worker, which writes the response at
    ring(prefix, N hosts) while the server listens at ring(prefix, N + 1 hosts): lost
    iff the prefix moved, with probability m (crc: 1/2, counted exactly over the
    4096 buckets; jump: 1/(N + 1)). Sender and receiver are on different lists
    exactly for the switched servers' traffic, a share g. So

        lost = q + (g - q) * m,   q = g * s,

    with s the share of a switched server's requests on the new host. For a long
    run s = 1/(N+1) and lost = g (1/(N+1) + N/(N+1) m): N = 3, crc 0.625 g, jump
    0.4375 g. But the change gives each server a new layer whose round robin starts
    at host 0 (field case 05), and a server sends n ~ Poisson(lam = R T / I)
    requests (lam = 7.8 quick, 23.4 full), of which floor(n / (N+1)) reach host N:
    s = E[floor(n / (N+1))] / lam = (1/lam) sum_{j >= 1} P(n >= j (N+1)), computed
    exactly (0.202 quick, 0.234 full, against 0.25).

How to read
    Both lines rise linearly with the switched share; the bucket map's slope is the
    steeper (it moves half the prefixes, a ring a quarter). The loss is not
    transient: it lasts until the workers switch too, and requests on the new host
    are lost until a worker lists it. Each prefix moves or not as a whole, so the
    seed-to-seed spread is that of a mean over g I coin flips.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.analytic import crc_moved_fraction
from experiments.base import DOES_NOT_HOLD, HOLDS, Experiment, Point, agrees_at, by_series
from sim.runner import run_scenario
from sim.scenario import Fault, ProcessOverride, default_scenario

N = 3
IFACES = 256
WORKERS = 20
RATE = 200.0
# So large that no key refuses a request: every request for the new host is written
# there (and counted), and no refusal elsewhere hides a response.
CAPACITY = 1_000_000
SERIES = {"crc (bucket map)": "fixed", "jump ring": "fixed-jump"}


def moved(series: str, n: int = N) -> float:
    """Share of prefixes whose shard differs between n and n + 1 hosts."""
    return crc_moved_fraction(n) if SERIES[series] == "fixed" else 1.0 / (n + 1)


def new_host_share(lam: float, k: int) -> float:
    """E[floor(n / k)] / lam, n ~ Poisson(lam): the share of one server's requests
    that its round robin (restarted at host 0 by the change) puts on host k - 1."""
    total = 0.0
    top = int(lam + 12 * math.sqrt(lam) + 40)
    pmf = [math.exp(-lam + i * math.log(lam) - math.lgamma(i + 1)) for i in range(top)]
    tail = 1.0
    for j in range(1, top):
        tail -= pmf[j - 1]                  # now P(n >= j)
        if j % k == 0:
            total += max(tail, 0.0)
    return total / lam


def prediction(series: str, g: float, duration: float, n: int = N) -> float:
    k = round(g * IFACES)
    q = k / IFACES * new_host_share(RATE * duration / IFACES, n + 1)
    return q + (k / IFACES - q) * moved(series, n)


class ReshardingRolling(Experiment):
    name = "resharding-rolling"
    claim = ("Changing the host list loses messages in flight while processes disagree "
             "on it: the loss is the switched share times the share of traffic the two "
             "lists place differently.")
    title = "Requests lost during a rolling change from 3 to 4 hosts"
    xparam = "switched"
    xlabel = "interface servers already on the new list, g (fraction, 0-1)"
    ylabel = "lost requests (fraction, 0-1)"
    replications_quick = 5
    replications_full = 10

    @property
    def duration(self) -> float:
        return 10.0 if self.quick else 30.0

    def tolerance(self, point: Point) -> float:
        # L = sum over switched servers i of n_i (a + b X_i) / R, X_i ~ Bernoulli(m)
        # whether prefix i moved, n_i its requests (multinomial, mean R/I). To first
        # order Var L = g E[(a + b X)^2] / R + g b^2 m (1 - m) / I. Tolerance: 3 sd of
        # the mean over r seeds, plus 0.005 for requests in service at the end.
        g = point.params["switched"]
        m = moved(point.series)
        a, b = 1.0 / (N + 1), N / (N + 1)
        second = (1 - m) * a * a + m * (a + b) ** 2
        var = g * second / (RATE * self.duration) + g * b * b * m * (1 - m) / IFACES
        return 3 * math.sqrt(var / self.replications) + 0.005

    def tolerance_note(self) -> str:
        return ("3 sd of the mean over r seeds, Var = g E[(a + bX)^2] / R + g b^2 m(1-m) / I "
                "(R requests split over I servers; each switched prefix moves or not, "
                "X ~ Bernoulli(m), a = 1/(N+1), b = N/(N+1)), plus 0.005 for requests "
                "in service when the run ends")

    def points(self) -> list[Point]:
        gs = (0.0, 0.25, 0.5, 0.75, 1.0) if self.quick else tuple(i / 10 for i in range(11))
        return [Point(s, {"switched": g}, prediction(s, g, self.duration))
                for s in SERIES for g in gs]

    def measure(self, point: Point, seed: int) -> float:
        old = tuple(f"shard{i}" for i in range(N))
        new = old + (f"shard{N}",)
        ifaces = [f"iface{i}" for i in range(IFACES)]
        workers = [f"worker{i}" for i in range(WORKERS)]
        k = round(point.params["switched"] * IFACES)
        faults = (Fault(kind="host_change", at=0.0, hosts=new,
                        processes=tuple(ifaces[:k])),) if k else ()
        sc = dataclasses.replace(
            default_scenario(), seed=seed, router=SERIES[point.series], shards=N + 1,
            interface_servers=IFACES, workers=WORKERS, duration=self.duration, drain=2.0,
            capacity=CAPACITY, processes=tuple(ProcessOverride(name=p, hosts=old) for p in ifaces + workers),
            faults=faults, name="resharding-rolling")
        r = run_scenario(sc)
        sent, responses = r["sent"]["request"], r["sent"]["response"]
        if not sent:
            return 0.0
        q = r["shard_load"]["by_kind"]["request"][f"shard{N}"] / sent
        misrouted = r["fates_by_kind"]["response"]["misrouted"] / responses if responses else 0.0
        return q + (1.0 - q) * misrouted

    def claim_verdict(self, result: dict) -> tuple[str, str]:
        """Nothing lost before the change, and the loss the switched share times the
        share placed differently (each point within tolerance)."""
        groups = by_series(result)
        bad = [p for pts in groups.values() for p in pts if not agrees_at(self, p)]
        ends = []
        for s, pts in groups.items():
            top = max(pts, key=lambda p: p["params"]["switched"])
            ends.append(f"{s} {top['value']:.2f} (predicted {top['prediction']:.2f})")
        start = max((p["value"] for pts in groups.values() for p in pts
                     if p["params"]["switched"] == 0.0), default=0.0)
        why = (f"with every interface server switched and the workers not yet, the lost "
               f"fraction of requests is {', '.join(ends)}; with none switched "
               f"{start:.3g}. The loss lasts as long as the rollout, not just the moment "
               "of the change.")
        if not bad:
            return HOLDS, why
        return DOES_NOT_HOLD, why + f" {len(bad)} points are off by more than the tolerance."

    def findings(self, result: dict) -> list[str]:
        return []


EXPERIMENT = ReshardingRolling
