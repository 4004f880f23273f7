"""The properties of a sharded channel layer, declared once.

The simulator's monitors (`sim.monitors`), the model checker and the tests all
evaluate these same declarations: each is a name, a kind (stateright's ``always``,
``sometimes``, ``eventually``), a sentence a workshop can read, and a predicate over
the few facts the property needs. Nothing else in the project restates them.

- ``rendezvous``: a specific channel's message is written to a shard its owner
  listens on (sender and listener derived the same shard from the name);
- ``cluster_containment``: a response is never written outside the shards its owner
  can read at all (its host list), so it cannot leave the owner's cluster;
- ``at_most_once``: no message is delivered more than once;
- ``conservation``: every message sent has exactly one fate, so the fates add up to
  the messages sent;
- ``owner_only``: a server never receives a response to a request it did not send;
- ``no_silent_loss`` (an ``eventually`` property): a run without a crash, an expiry or a
  worker crash ends with every request answered or explicitly refused (ChannelFull,
  a connection error: an error the sender sees); at-most-once excuses the loss that
  those faults cause.

The simulator monitors `SIM_PROPERTIES`; the model checker (`model.checker`) evaluates
`MODEL_PROPERTIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Mapping

__all__ = ["Property", "PROPERTIES", "SIM_PROPERTIES", "MODEL_PROPERTIES",
           "rendezvous", "cluster_containment", "at_most_once", "conservation",
           "owner_only", "no_silent_loss", "SETTLED_OUTCOMES"]


def rendezvous(written_shard: str, listened_shards: Collection[str]) -> bool:
    """True when the shard written is one the owner listens on."""
    return written_shard in listened_shards


def cluster_containment(written_shard: str, readable_shards: Collection[str]) -> bool:
    """True when the shard written is one the owner can read at all."""
    return written_shard in readable_shards


def at_most_once(deliveries: int) -> bool:
    """True when a message was delivered no more than once."""
    return deliveries <= 1


def conservation(sent: int, fates: Mapping[str, int]) -> bool:
    """True when the fates of the messages add up to the messages sent."""
    return sum(fates.values()) == sent


def owner_only(receiver: str, owner: str) -> bool:
    """True when the server that received a response is the one that sent the request."""
    return receiver == owner


#: Request outcomes that are not a silent loss: the client got its answer, or a sender
#: saw an error (ChannelFull, an unreachable shard) that it can report.
SETTLED_OUTCOMES = ("answered", "refused")


def no_silent_loss(outcomes: Collection[str], excused: bool) -> bool:
    """True when every request ended answered or refused, or a fault excuses the run."""
    return excused or all(o in SETTLED_OUTCOMES for o in outcomes)


@dataclass(frozen=True)
class Property:
    """A named predicate, with the facts it reads listed in ``over``."""

    name: str
    kind: str
    description: str
    over: tuple[str, ...]
    check: Callable[..., bool]


PROPERTIES: dict[str, Property] = {p.name: p for p in (
    Property("rendezvous", "always",
             "a specific channel's message is written to a shard its owner listens on",
             ("written_shard", "listened_shards"), rendezvous),
    Property("cluster_containment", "always",
             "a response is never written outside the shards its owner can read",
             ("written_shard", "readable_shards"), cluster_containment),
    Property("at_most_once", "always",
             "no message is delivered more than once",
             ("deliveries",), at_most_once),
    Property("conservation", "always",
             "the fates of all messages add up to the messages sent",
             ("sent", "fates"), conservation),
    Property("owner_only", "always",
             "a server never receives a response to a request it did not send",
             ("receiver", "owner"), owner_only),
    Property("no_silent_loss", "eventually",
             "a run without a crash, an expiry or a worker crash ends with every request "
             "answered or explicitly refused",
             ("outcomes", "excused"), no_silent_loss),
)}

#: The properties the simulator monitors, in report order.
SIM_PROPERTIES = ("rendezvous", "cluster_containment", "at_most_once", "conservation")

#: The properties the model checker evaluates, in report order.
MODEL_PROPERTIES = ("rendezvous", "cluster_containment", "at_most_once", "owner_only",
                    "no_silent_loss")
