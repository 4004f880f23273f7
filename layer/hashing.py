"""Hash functions that map a channel or group name to a shard index.

Two shipped rules, both fixed bucket maps over CRC32 (not rings, whatever their name):

- `consistent_hash`: channels_redis 2.2 to 4.3 (``channels_redis/utils.py``), asgi_redis
  1.4 and the pub/sub layer from 3.3.1: the low 12 bits of the CRC32 of the UTF-8
  name, divided by the float ``4096 / N``. channels_redis short-circuits one host to
  shard 0; asgi_redis 1.4 computed ``int(x / 4096.0)``, which is 0 as well, so one
  function serves both.
- `top_bits_hash`: the 2015 Redis backend of Channels and asgi_redis up to 1.0.x:
  the top 12 bits of the CRC32, integer-divided by ``ceil(4096 / N)``.

And the rings a corrected rule may use instead, each named for what it is, each a
function of the name and the process's host list (`RINGS`):

- ``crc``: `consistent_hash` on the host count (the releases' rule, the default);
- ``jump``: jump consistent hash (Lamping and Veach, 2014) on a 64-bit BLAKE2b key;
  hosts are numbered, so only appending or removing the last host is cheap;
- ``rendezvous``: highest random weight over the host names (BLAKE2b of host and name);
- ``ketama``: a ring of MD5 points, ``vnodes`` per host name, as in libketama.

Every function is pure and independent of ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import binascii
import bisect
import functools
import hashlib
import math
from typing import Callable, Sequence

__all__ = [
    "consistent_hash",
    "top_bits_hash",
    "jump_hash",
    "rendezvous_hash",
    "ketama_hash",
    "RINGS",
    "KETAMA_VNODES",
]

_MASK64 = (1 << 64) - 1
#: Points per host on the ketama ring (libketama uses 160 per host of weight 1).
KETAMA_VNODES = 160


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf8") if isinstance(value, str) else value


def _check_size(ring_size: int) -> None:
    if not isinstance(ring_size, int) or ring_size < 1:
        raise ValueError(f"ring_size {ring_size!r} is not allowed; allowed: an integer >= 1")


def consistent_hash(value: str | bytes, ring_size: int) -> int:
    """Shard index of ``value`` under channels_redis's ``consistent_hash``.

    Behaviour of channels_redis 2.2.0 to 4.3.0 (``_consistent_hash``): one host is
    shard 0; otherwise ``int((crc32(utf8(value)) & 0xFFF) / (4096 / ring_size))``.

    Parameters
    ----------
    value : str or bytes
        The name to place (a str is encoded as UTF-8).
    ring_size : int
        The number of hosts, at least 1.

    Returns
    -------
    int
        An index in ``range(ring_size)``.
    """
    _check_size(ring_size)
    if ring_size == 1:
        return 0
    return int((binascii.crc32(_as_bytes(value)) & 0xFFF) / (4096 / float(ring_size)))


def top_bits_hash(value: str | bytes, ring_size: int) -> int:
    """Shard index under the 2015 backend's and asgi_redis 1.0.x's rule.

    ``((crc32(utf8(value)) & 0xFFFFFFFF) >> 20) // ceil(4096 / ring_size)``: the top 12
    bits of the CRC, in buckets of ``ceil(4096 / N)``. For N that do not divide 4096
    the last bucket is short, so the load is slightly uneven.
    """
    _check_size(ring_size)
    divisor = int(math.ceil(4096 / float(ring_size)))
    return ((binascii.crc32(_as_bytes(value)) & 0xFFFFFFFF) >> 20) // divisor


def _key64(value: str | bytes) -> int:
    return int.from_bytes(hashlib.blake2b(_as_bytes(value), digest_size=8).digest(), "little")


def jump_hash(value: str | bytes, ring_size: int) -> int:
    """Jump consistent hash of ``value`` over ``ring_size`` numbered buckets.

    The algorithm of Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash
    Algorithm" (2014), on a 64-bit BLAKE2b key of the name. Going from N to N+1
    buckets moves exactly the keys that land in the new bucket, about 1/(N+1).
    """
    _check_size(ring_size)
    key = _key64(value)
    b, j = -1, 0
    while j < ring_size:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def rendezvous_hash(value: str | bytes, hosts: Sequence[str]) -> int:
    """Index of the host with the highest random weight for ``value``.

    Weight of host h is the 64-bit BLAKE2b of ``h + "\\0" + value``; ties (never seen
    in practice) go to the lower index. Removing a host moves only its own names.
    """
    _check_size(len(hosts))
    v = _as_bytes(value)
    best, best_w = 0, -1
    for i, h in enumerate(hosts):
        w = int.from_bytes(hashlib.blake2b(h.encode("utf8") + b"\0" + v,
                                           digest_size=8).digest(), "little")
        if w > best_w:
            best, best_w = i, w
    return best


@functools.lru_cache(maxsize=64)
def _ketama_points(hosts: tuple[str, ...], vnodes: int) -> tuple[list[int], list[int]]:
    points: list[tuple[int, int]] = []
    for i, h in enumerate(hosts):
        for v in range(vnodes // 4):
            d = hashlib.md5(f"{h}-{v}".encode("utf8")).digest()
            for k in range(4):  # four 32-bit points per digest, as libketama does
                points.append((int.from_bytes(d[4 * k:4 * k + 4], "little"), i))
    points.sort()
    return [p for p, _ in points], [i for _, i in points]


def ketama_hash(value: str | bytes, hosts: Sequence[str], vnodes: int = KETAMA_VNODES) -> int:
    """Index of the host owning ``value`` on a ketama ring of ``vnodes`` points a host.

    The name's point is the first 32 bits (little-endian) of its MD5; it belongs to
    the next host point clockwise, wrapping at 2**32.
    """
    _check_size(len(hosts))
    keys, owners = _ketama_points(tuple(hosts), vnodes)
    p = int.from_bytes(hashlib.md5(_as_bytes(value)).digest()[:4], "little")
    j = bisect.bisect_left(keys, p)
    return owners[j % len(keys)]


#: Ring name -> function of (name, host list) -> index, for the ``fixed`` profile.
RINGS: dict[str, Callable[[str, Sequence[str]], int]] = {
    "crc": lambda value, hosts: consistent_hash(value, len(hosts)),
    "jump": lambda value, hosts: jump_hash(value, len(hosts)),
    "rendezvous": rendezvous_hash,
    "ketama": ketama_hash,
}
