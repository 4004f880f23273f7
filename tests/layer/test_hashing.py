"""Tests for layer.hashing: upstream's consistent_hash, the 2015 rule, and the rings."""

import binascii
import math
import random
import string

import pytest
from hypothesis import given, strategies as st

from layer.hashing import (
    RINGS,
    consistent_hash,
    jump_hash,
    ketama_hash,
    rendezvous_hash,
    top_bits_hash,
)

NAMES = st.text(max_size=60) | st.binary(max_size=60)
HOST_LISTS = st.lists(st.text(string.ascii_lowercase + string.digits + ".:-", min_size=1,
                              max_size=16), min_size=1, max_size=16, unique=True)


def _sweep_names(count=2000, seed=7):
    """A fixed set of names shaped like channels_redis's process-specific names."""
    rnd = random.Random(seed)
    return [f"specific.{rnd.getrandbits(48):012x}!" for _ in range(count)]


SWEEP = _sweep_names()


@pytest.fixture(scope="module")
def upstream_hash():
    return pytest.importorskip("channels_redis.utils")._consistent_hash


# -- upstream's consistent_hash ------------------------------------------------------

@given(value=NAMES, ring_size=st.integers(1, 16))
def test_consistent_hash_equals_upstream(upstream_hash, value, ring_size):
    """Invariant: consistent_hash equals channels_redis.utils._consistent_hash."""
    assert consistent_hash(value, ring_size) == upstream_hash(value, ring_size)


def test_consistent_hash_equals_upstream_sweep(upstream_hash):
    """Invariant: consistent_hash equals upstream's on 2000 fixed names, rings 1 to 16."""
    for ring_size in range(1, 17):
        for name in SWEEP:
            assert consistent_hash(name, ring_size) == upstream_hash(name, ring_size)


# -- ranges ---------------------------------------------------------------------------

@given(value=NAMES, hosts=HOST_LISTS)
def test_every_function_returns_an_index_in_range(value, hosts):
    """Invariant: every hash function and ring returns an index in range(len(hosts))."""
    n = len(hosts)
    assert 0 <= consistent_hash(value, n) < n
    assert 0 <= top_bits_hash(value, n) < n
    assert 0 <= jump_hash(value, n) < n
    assert 0 <= rendezvous_hash(value, hosts) < n
    assert 0 <= ketama_hash(value, hosts) < n
    for ring in RINGS.values():
        assert 0 <= ring(value, hosts) < n


# -- hand-checked examples --------------------------------------------------------------

def test_crc_check_values():
    """Invariant: the examples below rest on the standard CRC-32 check values."""
    assert binascii.crc32(b"123456789") == 0xCBF43926  # the CRC-32 "check" value
    assert binascii.crc32(b"a") == 0xE8B7BE43
    assert binascii.crc32(b"") == 0


@pytest.mark.parametrize("value, ring_size, expected", [
    # crc32("123456789") = 0xCBF43926: top 12 bits 0xCBF = 3263.
    ("123456789", 1, 0),    # 3263 // ceil(4096/1)=4096 -> 0
    ("123456789", 3, 2),    # 3263 // ceil(1365.3)=1366 -> 2
    ("123456789", 5, 3),    # 3263 // ceil(819.2)=820   -> 3 (820*3=2460, 820*4=3280)
    ("123456789", 7, 5),    # 3263 // ceil(585.1)=586   -> 5 (586*5=2930, 586*6=3516)
    ("123456789", 16, 12),  # 3263 // 256 = 0xC         -> 12
    # crc32("a") = 0xE8B7BE43: top 12 bits 0xE8B = 3723.
    ("a", 2, 1),            # 3723 // 2048 -> 1
    ("a", 3, 2),            # 3723 // 1366 -> 2
    ("a", 10, 9),           # 3723 // ceil(409.6)=410 -> 9 (410*9=3690)
    ("a", 16, 14),          # 3723 // 256 = 0xE -> 14
    # crc32("") = 0: always 0.
    ("", 16, 0),
    (b"123456789", 3, 2),   # bytes are hashed as given
])
def test_top_bits_hash_examples(value, ring_size, expected):
    """Invariant: top_bits_hash = (crc32 >> 20) // ceil(4096 / N), per its docstring."""
    assert top_bits_hash(value, ring_size) == expected


@pytest.mark.parametrize("value, ring_size, expected", [
    # low 12 bits: crc32("123456789") & 0xFFF = 0x926 = 2342; crc32("a") & 0xFFF = 0xE43 = 3651
    ("123456789", 3, 1),    # int(2342 / 1365.33) = int(1.715) -> 1
    ("a", 3, 2),            # int(3651 / 1365.33) = int(2.674) -> 2
    ("a", 10, 8),           # int(3651 / 409.6)  = int(8.914) -> 8 (top_bits_hash says 9)
    ("a", 1, 0),            # one host: shard 0 without hashing
])
def test_consistent_hash_examples(value, ring_size, expected):
    """Invariant: consistent_hash = int((crc32 & 0xFFF) / (4096 / N)), per its docstring."""
    assert consistent_hash(value, ring_size) == expected


# -- adding a host ----------------------------------------------------------------------

def _hosts(n):
    return [f"redis-{i}" for i in range(n)]


@pytest.mark.parametrize("ring", ["jump", "rendezvous", "ketama"])
@pytest.mark.parametrize("n", range(1, 8))
def test_rings_move_about_one_share_when_a_host_is_added(ring, n):
    """Invariant: going from N to N+1 hosts, a ring moves names only onto the new host,
    and about 1/(N+1) of them.

    Expected: each name lands on the new host independently with p = 1/(N+1) (jump and
    rendezvous by construction), so the moved count of 2000 names is Binomial(2000, p),
    sd_b = sqrt(p(1-p)/2000) as a fraction (0.0097 at N=3). Ketama adds the spread of
    the new host's share of the ring: 160 random points among 160(N+1) own a share of
    about Gamma(160) / (160(N+1)), sd = p / sqrt(160). The bound is 4.5 sd (a random
    name set would fail it about once in 150,000 runs); the names are fixed, so the
    test is deterministic.
    """
    before, after = _hosts(n), _hosts(n + 1)
    place = RINGS[ring]
    moved = 0
    for name in SWEEP:
        old, new = place(name, before), place(name, after)
        if old != new:
            assert new == n, f"{name!r} moved from host {old} to old host {new}"
            moved += 1
    p = 1 / (n + 1)
    var = p * (1 - p) / len(SWEEP)
    if ring == "ketama":
        var += p * p / 160
    assert abs(moved / len(SWEEP) - p) <= 4.5 * math.sqrt(var)


def _crc_moved_share(n):
    """Exact share of the 4096 CRC buckets whose shard changes from N to N+1 hosts."""
    return sum(int(x / (4096 / n)) != int(x / (4096 / (n + 1)))
               for x in range(4096)) / 4096


@pytest.mark.parametrize("n", range(2, 8))
def test_crc_moves_about_half_when_a_host_is_added(n):
    """Invariant: consistent_hash, a bucket map, moves about half the names when a host
    is added, whatever N (so far more than the 1/(N+1) a ring moves).

    Expected: bucket k of N is [k/N, (k+1)/N) of the 12-bit space and keeps its shard
    under N+1 on [k/N, (k+1)/(N+1)), of width (N-k)/(N(N+1)); summed over k that is
    (N(N+1)/2)/(N(N+1)) = 1/2 staying, 1/2 moving. The exact share over the 4096
    buckets (rounding only) is checked to be within 0.001 of 1/2; the 2000 names then
    move Binomial(2000, share), bounded at 4.5 sd as for the rings (N=3 to 4: 0.4825
    of the names move, against 0.5002 expected).
    """
    share = _crc_moved_share(n)
    assert abs(share - 0.5) < 0.001
    moved = sum(consistent_hash(x, n) != consistent_hash(x, n + 1) for x in SWEEP)
    fraction = moved / len(SWEEP)
    assert abs(fraction - share) <= 4.5 * math.sqrt(share * (1 - share) / len(SWEEP))
    if n == 3:
        assert fraction > 0.4
    # and well outside what a ring's 1/(N+1) could give (its 4.5 sd bound)
    p = 1 / (n + 1)
    assert fraction > p + 4.5 * math.sqrt(p * (1 - p) / len(SWEEP))


# -- bad sizes --------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: consistent_hash("a", 0),
    lambda: top_bits_hash("a", 0),
    lambda: jump_hash("a", 0),
    lambda: rendezvous_hash("a", []),
    lambda: ketama_hash("a", []),
    lambda: consistent_hash("a", -1),
    *[(lambda ring=ring: ring("a", [])) for ring in RINGS.values()],
], ids=["consistent", "top_bits", "jump", "rendezvous", "ketama", "negative",
        *[f"ring-{name}" for name in RINGS]])
def test_ring_size_zero_is_a_value_error(call):
    """Invariant: a ring of no hosts raises a one-line ValueError that says what is
    allowed."""
    with pytest.raises(ValueError, match=r"^ring_size .* allowed: an integer >= 1$"):
        call()
