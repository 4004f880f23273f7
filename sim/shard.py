"""A Redis shard: per-key FIFO queues, expiry, capacity, blocking receive, crash.

Storage follows the release of the process that wrote the message (its router's
``storage``):

- ``sorted_set`` (channels_redis 2+): a channel key is one sorted set; a send first
  prunes messages older than the expiry, then refuses the message if the set holds
  ``capacity`` or more; the whole key vanishes ``expiry`` after its last send. A
  receiver pops the oldest member even if it is stale, if no send pruned it yet.
- ``key_ttl`` (asgi_redis, 2015): each message is its own key with a time-to-live;
  the channel is a list of message keys that vanishes ``expiry + 1`` after its last
  send. Capacity counts list entries, expired ones included; a receiver that pops
  an entry whose message key expired skips it.
- ``pubsub``: nothing is stored; a publish reaches the subscribers of that moment.

Expiry is evaluated lazily, when a key is next touched and at the end of the run,
which gives the same fates as Redis's active expiry: a message's expiry time is a
function of the sends to its key alone.

Receivers that wait are kept on the key and handed a message by the send that
arrives (no timer per receive; the receiver schedules its own timeout only when it
actually waits). A crash loses every key and group, and wakes waiters with None.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from sim.ledger import EXPIRED, LOST_IN_CRASH, REJECTED_FULL

__all__ = ["Msg", "Shard", "Key"]


class Msg:
    """One message. ``owner`` is the interface server that gets (or got) the answer."""

    __slots__ = ("kind", "owner", "owner_gen", "channel", "start", "t0", "ttl",
                 "misrouted", "done", "group", "trace")

    def __init__(self, kind: int, owner, owner_gen: int, channel: str, start: float,
                 group: str | None = None):
        self.kind = kind
        self.owner = owner
        self.owner_gen = owner_gen
        self.channel = channel
        self.start = start
        self.t0 = start
        self.ttl = False          # True: a key_ttl message (expires at t0 + expiry)
        self.misrouted = False    # written where its listener never looks
        self.done = 0             # its fate is in the ledger (world._SETTLED, _DELIVERED)
        self.group = group
        self.trace: dict | None = None  # scripted messages only: what happened to it


class Key:
    __slots__ = ("q", "waiters", "deadline")

    def __init__(self) -> None:
        self.q: deque[Msg] = deque()
        self.waiters: deque = deque()
        self.deadline = 0.0


class Shard:
    """One Redis server. ``settle(msg, fate)`` is the world's single fate entry."""

    def __init__(self, env, name: str, expiry: float, settle: Callable[..., None],
                 kinds: int = 3, on_full: Callable[["Shard", str, Msg, deque], None] | None = None):
        self.env = env
        self.name = name
        self.expiry = expiry
        self.settle = settle            # settle(msg, fate, at=None)
        self.on_full = on_full          # told of each refusal, with what filled the key
        self.up = True
        self.keys: dict[str, Key] = {}
        # key -> callbacks of the processes listening there (survive a crash: the
        # processes reconnect when the server is back)
        self.listeners: dict[str, list[Callable[[Msg], None]]] = {}
        self.groups: dict[str, dict[str, float]] = {}
        self.lost_groups: set[str] = set()  # memberships a crash took (for fates only)
        self.writes = [0] * kinds       # messages written, by kind

    # -- expiry ---------------------------------------------------------------------
    def _expire_all(self, k: Key) -> None:
        settle, expiry = self.settle, self.expiry
        for m in k.q:  # each went at its own time-to-live, or with the whole key
            settle(m, EXPIRED, min(k.deadline, m.t0 + expiry) if m.ttl else k.deadline)
        k.q.clear()

    def _fresh(self, name: str, now: float) -> Key | None:
        k = self.keys.get(name)
        if k is not None and k.q and now >= k.deadline:
            self._expire_all(k)
        return k

    # -- writes ---------------------------------------------------------------------
    def put(self, name: str, msg: Msg, capacity: int, sorted_set: bool) -> bool:
        """Store ``msg`` under key ``name``; False (and fate rejected_full) when full."""
        now = self.env.now
        k = self._fresh(name, now)
        if k is None:
            k = self.keys[name] = Key()
        elif sorted_set and k.q:
            cutoff = now - self.expiry
            q = k.q
            while q and q[0].t0 <= cutoff and not q[0].ttl:
                m = q.popleft()
                self.settle(m, EXPIRED, m.t0 + self.expiry)
        if len(k.q) >= capacity:
            if self.on_full is not None:
                self.on_full(self, name, msg, k.q)
            self.settle(msg, REJECTED_FULL)
            return False
        self.writes[msg.kind] += 1
        msg.t0 = now
        msg.ttl = not sorted_set
        k.deadline = now + self.expiry + (0.0 if sorted_set else 1.0)
        listeners = self.listeners.get(name)
        if listeners and not k.q:
            listeners[0](msg)
            return True
        while k.waiters:
            ev = k.waiters.popleft()
            if not ev.triggered:
                ev.succeed(msg)
                return True
        k.q.append(msg)
        return True

    def publish(self, name: str, msg: Msg) -> int:
        """Pub/sub: hand ``msg`` to every listener of ``name`` now; returns how many."""
        self.writes[msg.kind] += 1
        msg.t0 = self.env.now
        listeners = self.listeners.get(name)
        if not listeners:
            return 0
        for cb in tuple(listeners):
            cb(msg)
        return len(listeners)

    # -- reads ----------------------------------------------------------------------
    def take(self, name: str) -> Msg | None:
        """Pop the oldest live message under ``name``, or None."""
        now = self.env.now
        k = self._fresh(name, now)
        if k is None:
            return None
        q = k.q
        while q:
            m = q.popleft()
            if m.ttl and now >= m.t0 + self.expiry:
                self.settle(m, EXPIRED, m.t0 + self.expiry)  # its key is gone: skip it
                continue
            return m
        return None

    def wait(self, name: str, ev) -> None:
        k = self.keys.get(name)
        if k is None:
            k = self.keys[name] = Key()
        k.waiters.append(ev)

    def unwait(self, name: str, ev) -> None:
        k = self.keys.get(name)
        if k is not None:
            try:
                k.waiters.remove(ev)
            except ValueError:
                pass

    def listen(self, name: str, cb: Callable[[Msg], None]) -> None:
        """Attach a listener to ``name`` and hand it whatever is already queued."""
        self.listeners.setdefault(name, []).append(cb)
        if self.up:
            while (m := self.take(name)) is not None:
                cb(m)

    def unlisten(self, name: str, cb: Callable[[Msg], None]) -> None:
        cbs = self.listeners.get(name)
        if cbs and cb in cbs:
            cbs.remove(cb)
            if not cbs:
                del self.listeners[name]

    # -- groups (membership lives on the shard the group name hashes to) -------------
    def group_add(self, group: str, channel: str, group_expiry: float) -> None:
        members = self.groups.setdefault(group, {})
        members[channel] = self.env.now

    def group_discard(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self.groups[group]

    def group_members(self, group: str, group_expiry: float) -> list[str]:
        members = self.groups.get(group)
        if not members:
            return []
        cutoff = self.env.now - group_expiry
        return [c for c, t in members.items() if t > cutoff]

    # -- faults ---------------------------------------------------------------------
    def crash(self) -> None:
        """Lose every key and group; wake every waiting receiver with None."""
        self.up = False
        now = self.env.now
        for k in self.keys.values():
            if k.q and now >= k.deadline:
                self._expire_all(k)
            for m in k.q:
                self.settle(m, LOST_IN_CRASH)
            for ev in k.waiters:
                if not ev.triggered:
                    ev.succeed(None)
        self.keys.clear()
        self.lost_groups.update(self.groups)
        self.groups.clear()

    def restart(self) -> None:
        """Back, empty; listeners reconnect."""
        self.up = True

    def finish(self, settle_left: Callable[[Msg], None]) -> dict[str, int]:
        """End of run: expire what is due, hand every other message to ``settle_left``.

        Returns how many messages were left queued under each key.
        """
        now = self.env.now
        left: dict[str, int] = {}
        for name, k in self.keys.items():
            if k.q and now >= k.deadline:
                self._expire_all(k)
            for m in k.q:
                if m.ttl and now >= m.t0 + self.expiry:
                    self.settle(m, EXPIRED, m.t0 + self.expiry)
                else:
                    settle_left(m)
                    left[name] = left.get(name, 0) + 1
            k.q.clear()
        return left
