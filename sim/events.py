"""The simulator's event log: one small tuple per occurrence, for replaying a run.

Off by default and free when off (`sim.world.World` checks ``events is not None`` at
its few emission sites and builds nothing otherwise); on with ``World(sc,
events=True)`` or ``run_scenario(sc, events=True)``, which puts the list under the
result's ``events``. It covers the request/response flow of interface servers and
workers and the faults; scripted steps (field cases) have their own trace instead.

A message is named by its reply channel, which names the request it belongs to
(server and token). Every event is ``(verb, time, *fields)``:

==================  ============================================================
``start``           ``name, prefix, hash_seed, hosts`` at t = 0, per process (``prefix``
                    is None for a worker)
``request``         ``iface, gen, token, channel``: a client request enters a server
``send_request``    ``iface, channel, shard, outcome, detail``: ``outcome`` is ``queued``,
                    ``full`` (ChannelFull), ``unreachable`` (partition), ``down`` (the shard
                    is down: lost), ``handed`` (to a waiting worker, ``detail`` its name) or
                    ``published`` (pub/sub, ``detail`` the subscribers reached, a tuple)
``take``            ``worker, shard, channel``: a worker popped a queued request
``reply``           ``worker, channel, shard, outcome, detail``: ``outcome`` is ``stored``,
                    ``full``, ``unreachable``, ``down``, ``delivered`` (to a server listening
                    there, ``detail`` its name) or ``published`` (pub/sub, ``detail`` the
                    servers reached)
``receive``         ``iface, shard, key, channel``: a server took a stored response when it
                    started listening there (a request, a host change, a partition's end)
``expire``          ``shard, channel, kind``: a message's time-to-live removed it (also when
                    a send pruned it, or at the end of the run)
``shard_crash``     ``shard, lost``: the channels of the messages it lost (a tuple)
``shard_restart``   ``shard``
``worker_crash``    ``worker, dropped``: the channels it held, was handed or had in its
                    inbox (a tuple)
``worker_restart``  ``worker``: its process runs again (pub/sub: subscribed again)
``host_change``     ``process, hosts``
``partition``       ``process, shard, on``
``fate``            ``kind, channel, fate``: a message got its fate; the cause, before the
                    precedence of `World.settle` (``kind``: request or response)
==================  ============================================================
"""

from __future__ import annotations

__all__ = ["VERBS", "describe"]

VERBS = ("start", "request", "send_request", "take", "reply", "receive", "expire",
         "shard_crash", "shard_restart", "worker_crash", "worker_restart",
         "host_change", "partition", "fate")


def describe(event: tuple) -> str:
    """One trace line, ``time verb fields``, for people."""
    verb, t, *fields = event
    return f"{t:10.6f} {verb} " + " ".join(str(f) for f in fields)
