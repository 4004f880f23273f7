"""hash-seed: the pub/sub layer of channels_redis 3.3.0 and Python's salted hash.

Question
    channels_redis 3.3.0's pub/sub layer chose a shard with ``abs(hash(name)) % N``;
    Python salts ``hash()`` per process (``PYTHONHASHSEED``). What fraction of
    responses is lost on N hosts when processes start with different seeds, against
    one seed everywhere and against 3.3.1's CRC rule?

Scenario
    32 interface servers and 8 workers, Poisson 200 requests/s, 2 ms mean service,
    N shards. Pub/sub broadcasts a request to every worker subscribed on its shard, so
    a request may be answered several times; each copy is one response, published
    by its own worker's hash. Series: ``channels_redis-pubsub-3.3``
    with ``hash_seeds = "per-process"`` and with ``"same"``, and
    ``channels_redis-pubsub`` (3.3.1+). Quick: 5 s, N in {1, 2, 3, 4, 8, 16},
    5 seeds; full: 20 s, N = 1..16, 10 seeds. Value: misrouted responses / responses
    sent (requests no worker saw send no response and are not counted).

Expected
    The worker publishes a response at ``abs(h_w(name)) % N`` and the interface
    server subscribed at ``abs(h_i(name)) % N``, with h_w and h_i SipHash under two
    independent keys: two independent, uniform shards (the 64-bit hash is uniform
    mod N to within 2**-60). They meet with probability 1/N:

        lost = (N - 1) / N     (per-process seeds; 0 on one host, shard 0),
        lost = 0               (same seed everywhere, or 3.3.1+'s CRC on both sides).

How to read
    The per-process line follows (N-1)/N; the same-seed and 3.3.1+ lines stay at 0.
    The fault is invisible on one host and in any test run with a fixed
    PYTHONHASHSEED, which is why it shipped (channels_redis #273).
"""

from __future__ import annotations

import dataclasses

from experiments.base import DOES_NOT_HOLD, HOLDS, Experiment, Point, agrees_at, by_series
from sim.runner import run_scenario
from sim.scenario import Load, default_scenario

SERIES = {
    "pubsub-3.3.0, per-process seeds": ("channels_redis-pubsub-3.3", "per-process"),
    "pubsub-3.3.0, same seed": ("channels_redis-pubsub-3.3", "same"),
    "pubsub-3.3.1+ (CRC)": ("channels_redis-pubsub", "per-process"),
}


class HashSeed(Experiment):
    name = "hash-seed"
    claim = ("The pub/sub layer of channels_redis 3.3.0 routes by Python's hash(): with "
             "per-process hash seeds (the default) (N-1)/N of responses are lost on N hosts.")
    title = "Pub/sub responses lost vs host count, by hash seeding"
    xparam = "shards"
    xlabel = "hosts (Redis shards), N (count)"
    ylabel = "misrouted responses (fraction, 0-1)"
    replications_quick = 5
    replications_full = 10
    # Fewest responses at N = 16: about 500 a seed (quick); binomial sd
    # sqrt(0.9375 * 0.0625 / 500) = 0.011, but the copies of one request share a
    # name, and a seed draws only 8 worker keys: allow 0.04 (5 sd of one seed).
    _tol = 0.04

    def tolerance_note(self) -> str:
        return ("|value - prediction| <= 0.04: a seed sends about 500 responses or more "
                "(binomial sd <= 0.016); 0.04 allows for the correlation of the copies of "
                "one request and is over 5 sd of the mean of >= 5 seeds")

    def points(self) -> list[Point]:
        ns = (1, 2, 3, 4, 8, 16) if self.quick else tuple(range(1, 17))
        return [Point(s, {"shards": n},
                      (n - 1) / n if SERIES[s][1] == "per-process" and "3.3.0" in s else 0.0)
                for s in SERIES for n in ns]

    def measure(self, point: Point, seed: int) -> float:
        router, seeds = SERIES[point.series]
        sc = dataclasses.replace(
            default_scenario(), seed=seed, router=router, hash_seeds=seeds,
            shards=point.params["shards"], interface_servers=32, workers=8,
            service_time=0.002, duration=5.0 if self.quick else 20.0, drain=2.0,
            load=Load(kind="poisson", rate=200.0), name="hash-seed")
        r = run_scenario(sc)
        sent = r["sent"]["response"]
        return r["fates_by_kind"]["response"]["misrouted"] / sent if sent else 0.0

    def claim_verdict(self, result: dict) -> tuple[str, str]:
        """Per-process seeds must lose (N-1)/N, and the controls nothing, within tolerance."""
        groups = by_series(result)
        lossy = [s for s in groups if "per-process" in s and "3.3.0" in s]
        bad = [p for pts in groups.values() for p in pts if not agrees_at(self, p)]
        top = max(groups[lossy[0]], key=lambda p: p["params"]["shards"]) if lossy else None
        controls = max((p["value"] for s, pts in groups.items() if s not in lossy
                        for p in pts), default=0.0)
        why = (f"per-process seeds lost {top['value']:.3f} of responses on N = "
               f"{top['params']['shards']} hosts ((N-1)/N = {top['prediction']:.3f}); one "
               f"seed everywhere and 3.3.1+'s CRC lost at most {controls:.3g}."
               if top else "no per-process series in the result.")
        if not bad and top:
            return HOLDS, why
        return DOES_NOT_HOLD, why + f" {len(bad)} points are off by more than the tolerance."


EXPERIMENT = HashSeed
