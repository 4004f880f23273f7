"""peaky-traffic: bursts of requests against channel capacity and expiry.

Question
    Requests arrive in bursts of B at once. How many are refused with ChannelFull,
    and how many expire in the queue, as a function of B, the per-channel capacity C
    and the message expiry E?

Scenario
    Router ``fixed`` (channels_redis 2+ storage: a sorted set per channel; the
    request path is that of every 2.x-4.x release), N = 3 shards, one interface
    server (its round robin puts exactly B/N of each burst on each shard when N
    divides B), W = 6 workers, 50 ms mean service, ``[load] kind = "burst"``: B
    requests every 4 s for 20 s (5 bursts), 5 s drain. Quick: B in {30, 60, 90, 150,
    210, 300}, 3 seeds; full: B = 30, 60, ..., 360, 5 seeds. Series:
    ``ChannelFull, C = 20`` and ``C = 50`` (E = 60 s): requests refused per run;
    ``expired, C = 50, E = 0.5 s``: requests expired per run.

Expected
    A burst arrives in one instant. On shard k the W_k workers waiting there
    (sum W_k = W, every worker idle once the previous burst has drained, which 4 s
    allows: at most N C requests at W / s_mean = 120/s) are handed one request each;
    the key then takes C more and refuses the rest:

        refused per burst = sum_k max(0, B/N - W_k - C).

    Where the workers wait is a random walk (README, "What the model shows"), but
    the sum does not depend on it when B/N <= C (nothing refused: 0) or when
    B/N >= C + W (every shard overflows whatever W_k is: B - W - N C). The points
    are chosen in those two ranges, so

        ChannelFull per run = 5 * max(0, B - W - N C).

    Expiry: no prediction. A queued request expires when the key's last send is E
    old (``sorted_set``), so what survives is what the workers take within E of the
    burst, about W (1 + E / s_mean), less the time workers lose moving between
    shards; the queue on each shard is min(C, B/N - W_k), which again depends on the
    random walk. A formula for it would need a model of that walk.

How to read
    Below N C + W nothing is refused; above, each extra request of a burst is
    refused one for one, and a larger capacity only moves the knee (C = 50 at
    B = 156). With a short expiry the capacity hides a second loss: what the workers
    cannot take within E expires, so raising C beyond W E / (N s_mean) buys nothing.
"""

from __future__ import annotations

import dataclasses

from experiments.base import DOES_NOT_HOLD, HOLDS, Experiment, Point, agrees_at
from sim.runner import run_scenario
from sim.scenario import Load, default_scenario

N = 3
WORKERS = 6
INTERVAL = 4.0
DURATION = 20.0
BURSTS = int(DURATION / INTERVAL)
SERIES = {"ChannelFull, C = 20": (20, 60.0), "ChannelFull, C = 50": (50, 60.0),
          "expired, C = 50, E = 0.5 s": (50, 0.5)}


def prediction(series: str, b: int) -> float | None:
    cap, _ = SERIES[series]
    if series.startswith("expired"):
        return None
    per_shard = b / N
    if cap < per_shard < cap + WORKERS:
        return None  # depends on where the idle workers wait (not used by points())
    return float(BURSTS * max(0, b - WORKERS - N * cap))


class PeakyTraffic(Experiment):
    name = "peaky-traffic"
    claim = ("Channels have a capacity (default 100) and an expiry (default 60 s): a "
             "burst beyond what the waiting workers and the queues hold is refused "
             "with ChannelFull, one for one.")
    title = "Bursts against capacity and expiry (3 shards, 6 workers, 5 bursts)"
    xparam = "burst"
    xlabel = "requests per burst, B (count)"
    ylabel = "requests per run (count)"
    replications_quick = 3
    replications_full = 5
    _tol = 0.0

    def tolerance_note(self) -> str:
        return ("0: in the chosen ranges (B/N <= C or B/N >= C + W) the count is exact "
                "whatever the seed; a deviation means a burst met busy workers or a "
                "queue left from the previous burst")

    def points(self) -> list[Point]:
        bs = (30, 60, 90, 150, 210, 300) if self.quick else tuple(range(30, 361, 30))
        return [Point(s, {"burst": b}, prediction(s, b)) for s in SERIES for b in bs]

    def measure(self, point: Point, seed: int) -> float:
        cap, expiry = SERIES[point.series]
        sc = dataclasses.replace(
            default_scenario(), seed=seed, router="fixed", shards=N, interface_servers=1,
            workers=WORKERS, capacity=cap, expiry=expiry, duration=DURATION, drain=5.0,
            load=Load(kind="burst", burst_size=point.params["burst"],
                      burst_interval=INTERVAL), name="peaky-traffic")
        r = run_scenario(sc)
        fates = r["fates_by_kind"]["request"]
        return float(fates["expired"] if point.series.startswith("expired")
                     else fates["rejected_full"])

    def claim_verdict(self, result: dict) -> tuple[str, str]:
        """ChannelFull must be the excess one for one (exact); the claim holds only
        with a long expiry if requests the queues held expire there instead."""
        full = [p for p in result["points"] if p["prediction"] is not None]
        off = [p for p in full if not agrees_at(self, p)]
        top = max(full, key=lambda p: p["value"]) if full else None
        exp = {p["params"]["burst"]: p["value"] for p in result["points"]
               if p["series"].startswith("expired")}
        worst = max(exp.items(), key=lambda kv: kv[1]) if exp else (0, 0.0)
        why = (f"ChannelFull matched 5 max(0, B - W - N C) at {len(full) - len(off)} of "
               f"{len(full)} points (e.g. {top['value']:.0f} refused per run at B = "
               f"{top['params']['burst']}, {top['series']})." if top else "")
        if off:
            return DOES_NOT_HOLD, why + (f" {len(off)} points differ: bursts met busy "
                                         "workers or a queue left from the last burst.")
        if worst[1] > 0:
            return ("holds only while the expiry outlasts the queue", why + (
                f" With E = 0.5 s and C = 50, up to {worst[1]:.0f} requests per run "
                f"(B = {worst[0]}) expire in the queue without any ChannelFull: a "
                "capacity that admits more than the workers take within the expiry "
                "turns refusals into silent expiry."))
        return HOLDS, why


EXPERIMENT = PeakyTraffic
