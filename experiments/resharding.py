"""resharding: how many response channels change shard when a host is added?

Question
    When the host list grows from N to N + 1, what fraction of response channels
    (their non-local names, which the corrected rule hashes) is placed on another
    shard, for the releases' bucket map (``crc``) and for the jump, rendezvous and
    ketama rings? Every such channel loses what is queued for it during the change.

Scenario
    No simulation run: each seed draws M response prefixes shaped as the simulator
    makes them (``http.response.`` + 8 random letters + ``!``, from a per-seed
    ``random.Random``) and places each with `layer.hashing.RINGS` on
    ``shard0..shard{N-1}`` and on ``shard0..shardN``. Quick: M = 2000, N in
    {1, 2, 3, 4, 8, 15}, 5 seeds; full: M = 10000, N = 1..15, 10 seeds.
    Value: fraction of the M names whose shard differs.

Expected
    jump, rendezvous, ketama (consistent rings): only the names the new host takes
    over move, a 1/(N + 1) share:  moved = 1 / (N + 1).
    crc (``int((crc32 & 0xfff) / (4096 / N))``, a fixed bucket map, not a ring): a
    name at u = bucket/4096 keeps its shard iff floor(uN) = floor(u(N+1)) = k, i.e.
    u in [k/N, (k+1)/(N+1)), of length (N-k)/(N(N+1)); summed over k = 0..N-1 the
    kept share is 1/2, so  moved = 1/2  for every N (the prediction counts the 4096
    buckets exactly; it differs from 1/2 by < 0.002).

How to read
    crc stays flat at one half: adding a fifth Redis server to channels_redis moves
    half of the response channels, not a fifth. The three rings fall along
    1/(N + 1). Ketama's share wobbles around the curve because the new host's 160
    points cover a random share of the circle.
"""

from __future__ import annotations

import math
import random
import string

from experiments.analytic import crc_moved_fraction
from experiments.base import DOES_NOT_HOLD, HOLDS, Experiment, Point, agrees_at, by_series
from layer.hashing import KETAMA_VNODES, RINGS

RING_NAMES = ("crc", "jump", "rendezvous", "ketama")


def prediction(ring: str, n: int) -> float:
    return crc_moved_fraction(n) if ring == "crc" else 1.0 / (n + 1)


class Resharding(Experiment):
    name = "resharding"
    claim = ("Changing the host list moves response channels (loses what is in flight "
             "for them); a consistent ring moves only 1/(N+1) of them, the releases' "
             "bucket map about half.")
    title = "Response channels moved when hosts go from N to N+1"
    xparam = "hosts_before"
    xlabel = "hosts before the change, N (count; to N + 1)"
    ylabel = "response channels moved (fraction, 0-1)"
    replications_quick = 5
    replications_full = 10

    @property
    def names_per_seed(self) -> int:
        return 2000 if self.quick else 10000

    def tolerance(self, point: Point) -> float:
        # Sampling: M names per seed, r seeds: sd sqrt(p(1-p)/(M r)); 4 sd of it.
        # Ketama: the new host's share of the circle is a sum of 160 arcs, relative sd
        # about 1/sqrt(160), fixed by the host names (no seed averages it): 3 sd of it.
        p = prediction(point.series, point.params["hosts_before"])
        tol = 4 * math.sqrt(p * (1 - p) / (self.names_per_seed * self.replications))
        if point.series == "ketama":
            tol += 3 * p / math.sqrt(KETAMA_VNODES)
        return tol + 1e-3

    def tolerance_note(self) -> str:
        return ("4 sampling sd, sqrt(p(1-p)/(M r)) over M names and r seeds, plus 0.001; "
                "for ketama plus 3 p / sqrt(160): the new host's share of the circle "
                "has relative sd about 1/sqrt(160) and does not depend on the seed")

    def points(self) -> list[Point]:
        ns = (1, 2, 3, 4, 8, 15) if self.quick else tuple(range(1, 16))
        return [Point(r, {"hosts_before": n}, prediction(r, n)) for r in RING_NAMES for n in ns]

    def measure(self, point: Point, seed: int) -> float:
        rng = random.Random(f"{seed}/names")
        n = point.params["hosts_before"]
        before = tuple(f"shard{i}" for i in range(n))
        after = before + (f"shard{n}",)
        ring = RINGS[point.series]
        moved = 0
        m = self.names_per_seed
        for _ in range(m):
            name = "http.response." + "".join(rng.choice(string.ascii_letters)
                                              for _ in range(8)) + "!"
            moved += ring(name, before) != ring(name, after)
        return moved / m

    def claim_verdict(self, result: dict) -> tuple[str, str]:
        """Each ring must move 1/(N+1) and the bucket map about half, within tolerance."""
        groups = by_series(result)
        good = [s for s, pts in groups.items() if all(agrees_at(self, p) for p in pts)]
        crc = [p["value"] for p in groups.get("crc", [])]
        rings = [s for s in groups if s != "crc"]
        ring_dev = max((abs(p["value"] - p["prediction"]) for s in rings for p in groups[s]),
                       default=0.0)
        why = (f"the releases' map (crc) moved {min(crc, default=0):.2f} to "
               f"{max(crc, default=0):.2f} of response channels per host added, whatever "
               f"N; the rings ({', '.join(rings)}) were within {ring_dev:.3f} of 1/(N+1).")
        if len(good) == len(groups):
            return HOLDS, why
        if not good:
            return DOES_NOT_HOLD, why
        return f"holds only for {', '.join(good)}", why

    def findings(self, result: dict) -> list[str]:
        crc = [p["value"] for p in result["points"] if p["series"] == "crc"]
        return [f"The releases' map (crc) moves {min(crc):.2f} to {max(crc):.2f} of "
                "response channels on every host added, not 1/(N+1): a host-list change "
                "in channels_redis disturbs half of the interface servers."]


EXPERIMENT = Resharding
