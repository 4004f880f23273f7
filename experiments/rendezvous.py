"""rendezvous: do a response and its listener meet on the same shard?

Question
    For each router profile, what fraction of responses is written to a shard its
    interface server never reads, as the host count N goes from 1 to 16?

Scenario
    The default deployment (`sim/default.toml`: 20 workers, Poisson load of 200
    requests/s, 50 ms mean service) with 32 interface servers, so that many distinct
    response prefixes are sampled, N shards, replies by direct ``send()``. Quick:
    10 s of load, N in {1, 2, 3, 4, 8, 16}, 8 seeds; full: 30 s, N = 1..16, 10 seeds.
    Value: misrouted responses / responses sent.

Expected
    channels_redis-4 (2.2.0 to 4.3.0, issue #221): ``send()`` hashes the whole name
    ``prefix + token`` while the receiver listens on the shard of ``prefix``. The
    token differs per response, so the two shards are independent draws from the
    bucket map: P(meet) = sum_k p_k^2 and the misrouted fraction is

        1 - sum_k p_k^2,   p_k = |{x < 4096 : int(x / (4096 / N)) = k}| / 4096,

    which is exactly (N - 1)/N when N divides 4096 and within 1e-6 of it otherwise.
    channels-2015: a response is written at the shard of a random storage key, the
    same formula with the top-bits buckets (``ceil(4096 / N)`` wide). asgi_redis-1.0,
    asgi_redis-1, channels_redis-2.0 and fixed hash the same string on both sides: 0.

How to read
    One line per router; dashes are the predictions. channels_redis-4 and the 2015
    backend climb along (N-1)/N (half lost on 2 shards, 15/16 on 16); every other
    profile stays at 0. On one host every profile delivers.
"""

from __future__ import annotations

import dataclasses

from experiments.analytic import crc_bucket_probs, mismatch, top_bits_probs
from experiments.base import DOES_NOT_HOLD, HOLDS, Experiment, Point, by_series
from sim.runner import run_scenario
from sim.scenario import default_scenario

ROUTERS = ("channels_redis-4", "channels-2015", "asgi_redis-1.0", "asgi_redis-1",
           "channels_redis-2.0", "fixed")


def prediction(router: str, n: int) -> float:
    """Misrouted fraction of direct responses for ``router`` on ``n`` hosts."""
    if router == "channels_redis-4":
        return mismatch(crc_bucket_probs(n))
    if router == "channels-2015":
        return mismatch(top_bits_probs(n))
    return 0.0


class Rendezvous(Experiment):
    name = "rendezvous"
    claim = ("Response channels are sent to a predictable server that both the "
             "interface server and worker can derive (Channels docs, Scaling), so no "
             "response is misrouted.")
    title = "Misrouted responses vs host count, per router profile"
    xparam = "shards"
    xlabel = "hosts (Redis shards), N (count)"
    ylabel = "misrouted responses (fraction, 0-1)"
    replications_quick = 8
    replications_full = 10
    # Seed-to-seed sd of one run's fraction is up to 0.03, larger than the binomial
    # 0.5/sqrt(1900) = 0.012: CRC32 is affine over GF(2), so the responses of one
    # prefix (tokens 0, 1, 2, ...) are not independent draws. The mean of >= 8 seeds
    # then has sd <= 0.011, and 0.04 is about 3.8 sd.
    _tol = 0.04

    def tolerance_note(self) -> str:
        return ("|value - prediction| <= 0.04: one seed's fraction varies with sd up to "
                "0.03 (CRC32 is affine, so one prefix's responses are correlated); the "
                "mean of >= 8 seeds has sd <= 0.011, and 0.04 is about 3.8 sd")

    def points(self) -> list[Point]:
        ns = (1, 2, 3, 4, 8, 16) if self.quick else tuple(range(1, 17))
        return [Point(r, {"shards": n}, prediction(r, n)) for r in ROUTERS for n in ns]

    def measure(self, point: Point, seed: int) -> float:
        sc = dataclasses.replace(default_scenario(), seed=seed, router=point.series,
                                 shards=point.params["shards"], interface_servers=32,
                                 duration=10.0 if self.quick else 30.0, drain=2.0,
                                 name="rendezvous")
        r = run_scenario(sc)
        sent = r["sent"]["response"]
        return r["fates_by_kind"]["response"]["misrouted"] / sent if sent else 0.0

    def claim_verdict(self, result: dict) -> tuple[str, str]:
        """No response misrouted: a profile fails when its misrouted fraction exceeds
        the noise tolerance at some host count."""
        worst = {s: max(pts, key=lambda p: p["value"]) for s, pts in by_series(result).items()}
        bad = [s for s, p in worst.items() if p["value"] > self._tol]
        good = [s for s in worst if s not in bad]
        top = max((worst[s]["value"] for s in good), default=0.0)
        fails = "; ".join(f"{s} misroutes {worst[s]['value']:.2f} of responses on "
                          f"N = {worst[s]['params']['shards']} hosts" for s in bad)
        if not bad:
            return HOLDS, (f"no profile misroutes more than {top:.3g} of responses on any "
                           f"host count (noise tolerance {self._tol:g}).")
        why = (f"{fails}: on N > 1 hosts these write about (N-1)/N of direct responses "
               "where nobody listens (channels_redis #221 for channels_redis-4; the 2015 "
               "backend hashed a random message key).")
        if not good:
            return DOES_NOT_HOLD, why
        return (f"holds only for {', '.join(good)}",
                f"{why} The others misroute at most {top:.3g}.")


EXPERIMENT = Rendezvous
