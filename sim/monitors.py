"""Monitors: the simulator's evaluation of the declared properties.

The predicates come from `model.properties` (declared once); this module only feeds
them the facts of each event and keeps, per property, whether it held, how many
times it was violated and the first offending message (channel, sender, shard
written, shard(s) listened) so that a report can show it.
"""

from __future__ import annotations

from typing import Any, Mapping

from model.properties import PROPERTIES, SIM_PROPERTIES

__all__ = ["Monitors"]

_rendezvous = PROPERTIES["rendezvous"].check
_containment = PROPERTIES["cluster_containment"].check
_at_most_once = PROPERTIES["at_most_once"].check
_conservation = PROPERTIES["conservation"].check


class Monitors:
    """Violation counts and first offenders for `model.properties.SIM_PROPERTIES`."""

    __slots__ = ("violations", "first", "checked")

    def __init__(self) -> None:
        self.violations = {p: 0 for p in SIM_PROPERTIES}
        self.first: dict[str, dict[str, Any] | None] = {p: None for p in SIM_PROPERTIES}
        self.checked = {p: 0 for p in SIM_PROPERTIES}

    def _violate(self, prop: str, detail: dict[str, Any]) -> None:
        self.violations[prop] += 1
        if self.first[prop] is None:
            self.first[prop] = detail

    def on_specific_write(self, now: float, channel: str, sender: str, shard: str,
                          listened: frozenset, readable: frozenset) -> bool:
        """A message for a one-listener channel was written; True if it meets its owner."""
        self.checked["rendezvous"] += 1
        self.checked["cluster_containment"] += 1
        ok = _rendezvous(shard, listened)
        if not ok:
            self._violate("rendezvous", self._detail(now, channel, sender, shard, listened))
        if not _containment(shard, readable):
            self._violate("cluster_containment",
                          self._detail(now, channel, sender, shard, readable, "readable"))
        return ok

    def on_rendezvous(self, now: float, channel: str, sender: str, shard: str,
                      listened: frozenset) -> bool:
        """A message routed by its name (a pub/sub publish); True if a listener is there."""
        self.checked["rendezvous"] += 1
        ok = _rendezvous(shard, listened)
        if not ok:
            self._violate("rendezvous", self._detail(now, channel, sender, shard, listened))
        return ok

    def on_deliveries(self, now: float, channel: str, sender: str, shard: str,
                      deliveries: int) -> None:
        self.checked["at_most_once"] += 1
        if not _at_most_once(deliveries):
            self._violate("at_most_once", {"time": round(now, 6), "channel": channel,
                                           "sender": sender, "shard": shard,
                                           "deliveries": deliveries})

    def on_delivered(self, now: float, channel: str, times: int) -> None:
        """A message handed to a receiver, the ``times``-th time (queue storages)."""
        self.checked["at_most_once"] += 1
        if not _at_most_once(times):
            self._violate("at_most_once", {"time": round(now, 6), "channel": channel,
                                           "deliveries": times})

    def on_end(self, sent: Mapping[str, int], fates: Mapping[str, Mapping[str, int]]) -> None:
        for kind, n in sent.items():
            self.checked["conservation"] += 1
            if not _conservation(n, fates[kind]):
                self._violate("conservation", {"kind": kind, "sent": n,
                                               "fates": sum(fates[kind].values())})

    @staticmethod
    def _detail(now, channel, sender, shard, shards, what="listened") -> dict[str, Any]:
        return {"time": round(now, 6), "channel": channel, "sender": sender,
                "shard_written": shard, f"shards_{what}": sorted(shards)}

    def report(self) -> dict[str, dict[str, Any]]:
        return {p: {"holds": self.violations[p] == 0, "violations": self.violations[p],
                    "checked": self.checked[p], "first_violation": self.first[p]}
                for p in SIM_PROPERTIES}
