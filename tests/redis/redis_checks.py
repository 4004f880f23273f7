"""Checks every storage of layer.redis must pass, shared by the storage test files
(each file calls them with its own profile)."""

from __future__ import annotations

import asyncio
import time

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
