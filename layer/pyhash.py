"""CPython 3.11's built-in ``hash`` of a ``str``, for an explicit ``PYTHONHASHSEED``.

channels_redis 3.3.0's pub/sub layer chose a shard with the absolute value of
Python's ``hash`` of the name modulo the number of shards, so processes started
with different hash seeds routed the same channel to different shards.  To model that profile
deterministically, each simulated process carries a hash seed and calls
:func:`python_str_hash` instead of the built-in ``hash``.

Exact for CPython 3.11 built with its default string hash, SipHash-1-3
(``sys.hash_info.algorithm == 'siphash13'``, ``sys.hash_info.cutoff == 0``, i.e.
no small-string DJBX33A shortcut), 64-bit ``Py_hash_t``:

* ``PYTHONHASHSEED=0`` zeroes the 24-byte hash secret; ``N`` in 1..2**32-1
  fills it from the LCG ``x = x*214013 + 2531011 (mod 2**32)``, one byte
  ``(x >> 16) & 0xff`` per step.  The SipHash key is ``k0, k1`` = bytes 0..7
  and 8..15 of the secret read as little-endian uint64.
* The hashed bytes are the string's internal (PEP 393) representation: 1, 2
  or 4 bytes per code point in native byte order, chosen by the largest code
  point.  The empty string hashes to 0; the uint64 result is read as signed and ``-1``
  becomes ``-2``.

``tests/layer/test_pyhash.py`` checks this against real ``sys.executable``
subprocesses run with ``PYTHONHASHSEED`` set (and against their actual
``_Py_HashSecret``).
"""

from __future__ import annotations

import functools
import struct
import sys

__all__ = ["siphash13", "hash_secret_key", "python_str_hash"]

_M64 = 0xFFFFFFFFFFFFFFFF
_MAX_SEED = 4294967295
# PEP 393 storage is native-endian; SipHash then reads it as little-endian words.
_UCS2 = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
_UCS4 = "utf-32-le" if sys.byteorder == "little" else "utf-32-be"


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    """One SipRound (two half-rounds) on 64-bit words."""
    M = _M64
    v0 = (v0 + v1) & M
    v2 = (v2 + v3) & M
    v1 = ((v1 << 13 | v1 >> 51) & M) ^ v0
    v3 = ((v3 << 16 | v3 >> 48) & M) ^ v2
    v0 = (v0 << 32 | v0 >> 32) & M
    v2 = (v2 + v1) & M
    v0 = (v0 + v3) & M
    v1 = ((v1 << 17 | v1 >> 47) & M) ^ v2
    v3 = ((v3 << 21 | v3 >> 43) & M) ^ v0
    v2 = (v2 << 32 | v2 >> 32) & M
    return v0, v1, v2, v3


def siphash13(k0: int, k1: int, data: bytes) -> int:
    """SipHash-1-3 of ``data`` under the 128-bit key ``(k0, k1)``, as a uint64.

    Same variant as CPython's ``Python/pyhash.c``: 1 compression round,
    3 finalisation rounds, output ``v0 ^ v1 ^ v2 ^ v3``.
    """
    n = len(data)
    full = n >> 3
    # Full 8-byte words, then the final block: the 0..7 trailing bytes with
    # the length's low byte in the top byte.
    words = struct.unpack_from(f"<{full}Q", data) + (
        ((n << 56) & _M64) | int.from_bytes(data[full << 3:], "little"),
    )

    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    for m in words:
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)  # SipHash-1-3: one round per word
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(3):                              # ... and three to finish
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


@functools.lru_cache(maxsize=256)
def hash_secret_key(hash_seed: int) -> tuple[int, int]:
    """SipHash key ``(k0, k1)`` that CPython derives from ``PYTHONHASHSEED=hash_seed``."""
    if isinstance(hash_seed, bool) or not isinstance(hash_seed, int) or not 0 <= hash_seed <= _MAX_SEED:
        raise ValueError(f"hash_seed must be an int in 0..{_MAX_SEED} (the PYTHONHASHSEED range), got {hash_seed!r}")
    if hash_seed == 0:
        return (0, 0)  # CPython zeroes the secret rather than running the LCG from 0
    secret = bytearray(16)  # only the first 16 of the 24 secret bytes feed SipHash
    x = hash_seed
    for i in range(16):
        x = (x * 214013 + 2531011) & 0xFFFFFFFF
        secret[i] = (x >> 16) & 0xFF
    return struct.unpack("<QQ", secret)


def python_str_hash(s: str, hash_seed: int) -> int:
    """What CPython 3.11's built-in ``hash`` gives for ``s`` under ``PYTHONHASHSEED=hash_seed``."""
    k0, k1 = hash_secret_key(hash_seed)
    if not s:
        return 0
    if s.isascii():
        data = s.encode("ascii")
    else:
        top = ord(max(s))
        if top < 0x100:
            data = s.encode("latin-1")
        elif top < 0x10000:
            data = s.encode(_UCS2, "surrogatepass")
        else:
            data = s.encode(_UCS4, "surrogatepass")
    h = siphash13(k0, k1, data)
    if h >= 0x8000000000000000:
        h -= 0x10000000000000000
        if h == -1:
            h = -2
    return h
