"""Shared by the tests in tests/redis: checks every storage of layer.redis must pass
(each storage's file calls them with its own profile), the small scenario the replay
tests run, and what they need to see which processes are left."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from layer.redis import RedisChannelLayer


async def received_once_each(urls: list[str], router: str, n: int,
                             channel: str = "work.q") -> tuple[list[int], str]:
    """Send ``n`` messages on ``channel`` from one process while four processes with
    three receivers each take them; return what was received, sorted, and the
    channel's storage key (to check nothing is left)."""
    sender = RedisChannelLayer(urls, router=router, client_prefix="s")
    receivers = [RedisChannelLayer(urls, router=router, client_prefix=f"r{i}")
                 for i in range(4)]
    got: list[int] = []
    deadline = time.monotonic() + 15

    async def worker(layer):
        while len(got) < n and time.monotonic() < deadline:
            try:
                got.append((await layer.receive(channel, timeout=0.3))["n"])
            except TimeoutError:
                pass
    try:
        tasks = [asyncio.create_task(worker(layer)) for layer in receivers for _ in range(3)]
        for i in range(n):
            await sender.send(channel, {"n": i})
        await asyncio.gather(*tasks)
        return sorted(got), sender.key_of(channel)
    finally:
        for layer in (sender, *receivers):
            await layer.close()


async def check_blocking_receive(rx: RedisChannelLayer, tx: RedisChannelLayer,
                                 channel: str) -> None:
    """A receive on ``channel`` blocks until ``tx`` sends 0.3 s later, and on silence
    raises TimeoutError after about its ``timeout``."""
    async def later():
        await asyncio.sleep(0.3)
        await tx.send(channel, {"n": 1})
    started = time.monotonic()
    sending = asyncio.create_task(later())
    assert await rx.receive(channel, timeout=3) == {"n": 1}
    assert 0.25 < time.monotonic() - started < 2
    await sending
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await rx.receive(channel, timeout=0.4)
    assert 0.35 < time.monotonic() - started < 1.5


#: The replay tests' scenario: a small version of the default (1 interface server,
#: 3 workers, 40 requests at 50/s).
SMALL = """\
name = "small"
interface_servers = 1
workers = 3
[load]
kind = "poisson"
rate = 50.0
requests = 40
"""


def redis_flags(urls: list[str]) -> list[str]:
    """``--redis URL`` for each of ``urls``."""
    return [x for u in urls for x in ("--redis", u)]


def _stat(pid: int | str) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None


def children(pid: int) -> dict[int, str]:
    """pid -> command name of the direct children of ``pid`` (from /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        stat = _stat(entry) if entry.isdigit() else None
        if stat and int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out[int(entry)] = stat[stat.index("(") + 1:stat.rindex(")")]
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    kids, todo = [], [pid]
    while todo:
        found = list(children(todo.pop()))
        kids += found
        todo += found
    return kids


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    stat = _stat(pid)
    return stat is not None and stat[stat.rindex(")") + 2] != "Z"


def assert_all_gone(pids, within: float = 5.0) -> None:
    """Every process of ``pids`` ends within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)], pids
