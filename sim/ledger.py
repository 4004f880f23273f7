"""The ledger: every message sent, and the one fate each message ends with.

Counts only, never the messages themselves: memory does not grow with the run's
length. Latency is kept in a log-bucketed histogram (buckets 1 % wide), so p50 and
p99 are streaming quantiles with at most 0.5 % relative error, identical in any
process for the same sequence of deliveries.

Fates (`FATES`), one per message:

=========================  ==========================================================
delivered                  received by its one reader (a request: served to the end)
misrouted                  written where its listener never looks (this cause wins
                           over the later expiry, crash or full key that removes it)
expired                    removed by its time-to-live before anyone read it
lost_in_crash              on a shard that crashed, or sent to a shard that was down
rejected_full              refused because the channel was at capacity (ChannelFull
                           for a send; silently dropped by a group send)
dropped_by_dead_worker     held by a worker that crashed before replying
orphaned                   its listener is gone: the interface server crashed, the
                           client had already given up, or (pub/sub) nobody was
                           subscribed any more
unreachable                the sender could not reach the shard (a partition)
duplicate                  delivered more than once (at-most-once broken)
in_flight                  still queued or being served when the run ended
=========================  ==========================================================
"""

from __future__ import annotations

import math

__all__ = ["FATES", "KINDS", "Ledger", "LatencyHistogram",
           "DELIVERED", "MISROUTED", "EXPIRED", "LOST_IN_CRASH", "REJECTED_FULL",
           "DROPPED_BY_DEAD_WORKER", "ORPHANED", "UNREACHABLE", "DUPLICATE", "IN_FLIGHT",
           "REQUEST", "RESPONSE", "SCRIPTED"]

FATES = ("delivered", "misrouted", "expired", "lost_in_crash", "rejected_full",
         "dropped_by_dead_worker", "orphaned", "unreachable", "duplicate", "in_flight")
(DELIVERED, MISROUTED, EXPIRED, LOST_IN_CRASH, REJECTED_FULL, DROPPED_BY_DEAD_WORKER,
 ORPHANED, UNREACHABLE, DUPLICATE, IN_FLIGHT) = range(len(FATES))

#: Message kinds: client requests, their responses, and the messages of a scripted
#: scenario's steps (field cases).
KINDS = ("request", "response", "scripted")
REQUEST, RESPONSE, SCRIPTED = range(len(KINDS))

_BUCKETS_PER_E = 100.0  # bucket width: a factor of e**(1/100), about 1 %
_FLOOR = 1e-9           # latencies below a nanosecond share one bucket


class LatencyHistogram:
    """Streaming quantiles over positive values, in logarithmic buckets."""

    __slots__ = ("counts", "n", "zero")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.zero = 0

    def add(self, x: float) -> None:
        self.n += 1
        if x <= _FLOOR:
            self.zero += 1
            return
        b = int(math.floor(math.log(x) * _BUCKETS_PER_E))
        self.counts[b] = self.counts.get(b, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 < q <= 1): the bucket's geometric midpoint; None if empty."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = self.zero
        if seen >= rank:
            return 0.0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return float(f"{math.exp((b + 0.5) / _BUCKETS_PER_E):.6g}")
        raise AssertionError("unreachable: counts add up to n")


class Ledger:
    """Counts of messages sent and of fates, by message kind.

    The simulator's per-message path calls only `sent_one` and `fate`.
    """

    __slots__ = ("sent", "fates", "latency")

    def __init__(self) -> None:
        self.sent = [0] * len(KINDS)
        self.fates = [[0] * len(FATES) for _ in KINDS]
        self.latency = LatencyHistogram()

    def sent_one(self, kind: int) -> None:
        self.sent[kind] += 1

    def fate(self, kind: int, fate: int) -> None:
        self.fates[kind][fate] += 1

    # -- reporting ------------------------------------------------------------------
    def fates_by_kind(self) -> dict[str, dict[str, int]]:
        return {k: dict(zip(FATES, self.fates[i])) for i, k in enumerate(KINDS)}

    def fate_totals(self) -> dict[str, int]:
        return {f: sum(self.fates[k][i] for k in range(len(KINDS)))
                for i, f in enumerate(FATES)}

    def sent_by_kind(self) -> dict[str, int]:
        return dict(zip(KINDS, self.sent))

    def unbalanced(self) -> list[str]:
        """Kinds whose fates do not add up to the messages sent (should be none)."""
        return [k for i, k in enumerate(KINDS) if sum(self.fates[i]) != self.sent[i]]
