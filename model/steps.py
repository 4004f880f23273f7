"""Counterexample steps in words: what each action of a run did, for a workshop.

`explain_path` replays a run through `Model.next_state` and describes each step from
the states before and after it (so the words cannot disagree with the model): the
process that acted, the request and its reply channel, the shard, what happened, and
which properties broke at that step. The same records are the ``counterexample``
lists of the JSON and the rows of the terminal sequence diagram (`model.render`).
"""

from __future__ import annotations

from model.protocol import ANSWERED, BITS, QUEUED, REFUSED, Action, Model, State

__all__ = ["explain_path", "explain", "unsettled"]


def explain_path(model: Model, actions: list[Action]) -> list[dict]:
    """One record per step: ``step`` (from 1), ``action`` (the `Action`'s four fields,
    to replay it), ``actor``, ``verb``, ``request``,
    ``channel``, ``shard``, ``target`` (the column the step points at), ``effect``,
    ``broke`` (properties broken at this step) and ``text``. The last step of a
    ``no_silent_loss`` run is followed by nothing: the run ends there."""
    s = model.init_states()[0]
    out = []
    for n, a in enumerate(actions, 1):
        t = model.next_state(s, a)
        rec = explain(model, s, a, t)
        rec["step"] = n
        out.append(rec)
        s = t
    return out


def explain(model: Model, s: State, a: Action, t: State) -> dict:
    """The record of one step ``a`` from ``s`` to ``t`` (without its number)."""
    p, x = a.req, a.shard
    shard = model.shard_names[x] if x >= 0 else None
    label = model.request_label(p) if p >= 0 else None
    channel = model.channel[p] if p >= 0 else None
    rc = model.config.request_channel
    before = s.reqs[p] if p >= 0 else None
    after = t.reqs[p] if p >= 0 else None
    broke = [n for n, b in BITS.items() if t.broken & b and not s.broken & b]
    verb = a.verb
    target = shard
    if verb == "request":
        owner = model.iface_names[model.owner[p]]
        where = ", ".join(model.listens_on(p, t)) or "no shard"
        text = (f"a client request enters {owner}: reply channel {channel}, "
                f"listened for on {where}")
        effect, target = f"enters, listens on {where}", None
    elif verb == "send":
        if model.pubsub:
            subs = [model.worker_names[c & 31] for c in after.copies]
            effect = (f"published to {', '.join(subs)}" if subs
                      else "published to no subscriber: lost")
            text = f"{a.actor} publishes {label} on {rc} at {shard}: " + (
                f"reaches {', '.join(subs)}" if subs else "no worker subscribes there, lost")
        elif after.outcome == REFUSED:
            effect = "ChannelFull: refused"
            text = (f"{a.actor} sends {label} on {rc} to {shard}: refused, the key is "
                    f"full (capacity {model.config.capacity}); {a.actor} sees ChannelFull")
        else:
            effect = f"{label} queued"
            text = f"{a.actor} sends {label} on {rc} to {shard}"
    elif verb == "take":
        effect = f"{label} taken"
        if x >= 0:
            text = f"{a.actor} takes {label} from {shard}"
        else:
            text = f"{a.actor} takes {label} from its inbox"
            target = None
    elif verb == "reply":
        owner = model.iface_names[model.owner[p]]
        listened = ", ".join(model.listens_on(p, s)) or "no shard"
        meets = shard in model.listens_on(p, s)
        text = (f"{a.actor} sends the response on {channel} to {shard}; "
                f"{owner} listens on {listened}")
        if model.pubsub:
            effect = "delivered" if after.outcome == ANSWERED and before.outcome != ANSWERED \
                else "published to no subscriber: lost"
            text += f": {effect}"
        elif before.outcome != REFUSED and after.outcome == REFUSED:
            effect = "ChannelFull: refused"
            text += (f": refused, {owner}'s key there is full (capacity "
                     f"{model.config.capacity}); {a.actor} sees ChannelFull")
        elif not meets:
            effect = "stored where nobody reads"
            text += ": misrouted, nobody will read it there"
        else:
            effect = "response stored"
    elif verb == "receive":
        effect = "received"
        owner = model.iface_names[model.owner[p]]
        text = f"{a.actor} receives the response to {label} from {shard}"
        if a.actor != owner:
            text += f" (a request of {owner}, not of {a.actor})"
    elif verb == "unreachable":
        effect = "unreachable: send fails"
        what = f"{label} on {rc}" if a.actor.startswith("iface") else \
            f"the response on {channel}"
        text = (f"{a.actor} is cut from {shard} (partition): its send of {what} fails "
                "with an error it sees")
    elif verb == "expire":
        gone = [c for c in before.copies if c not in after.copies]
        kind = "request" if gone and gone[0] >> 5 == QUEUED else "response"
        effect = f"{label} {kind} expired"
        text = f"the {kind} for {label} on {shard} expires"
    elif verb == "crash_shard":
        lost = [model.request_label(q) for q, (r0, r1) in enumerate(zip(s.reqs, t.reqs))
                if r0.copies != r1.copies]
        effect = "crash: " + ", ".join(lost) + " lost"
        text = f"{shard} crashes and comes back empty, losing {', '.join(lost)}"
    elif verb == "crash_worker":
        lost = [model.request_label(q) for q, (r0, r1) in enumerate(zip(s.reqs, t.reqs))
                if r0.copies != r1.copies]
        text = f"{a.actor} crashes holding {', '.join(lost)} and restarts; dropped"
        effect, target = "crash: dropped", None
    elif verb == "host_change":
        hosts = ", ".join(model.hosts_of(a.actor, t))
        text = f"{a.actor}'s host list changes to {hosts}"
        effect, target = "host list: " + hosts, None
    else:  # pragma: no cover
        raise ValueError(f"unknown action {a!r}")
    if broke:
        text += " [breaks " + ", ".join(broke) + "]"
    return {"action": list(a), "actor": a.actor or None, "verb": verb, "request": label, "channel": channel,
            "shard": shard, "target": target, "effect": effect, "broke": broke,
            "text": text}


def unsettled(model: Model, actions: list[Action]) -> list[str]:
    """Where a run ends: each request neither answered nor refused, and why."""
    s = model.init_states()[0]
    for a in actions:
        s = model.next_state(s, a)
    out = []
    for p in model.silent_losses(s):
        rq = s.reqs[p]
        owner = model.iface_names[model.owner[p]]
        if not rq.copies:
            why = "no copy left"
        else:
            why = "; ".join(model._where(c) for c in rq.copies)
            if any(c >> 5 == QUEUED for c in rq.copies):
                why += ", which no worker polls"
            else:
                why += f", where {owner} does not listen"
        out.append(f"{model.request_label(p)} unanswered: {why}")
    return out
