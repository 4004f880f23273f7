"""Closed forms the experiments' predictions are built from.

The releases' shard maps are functions of 12 bits of a CRC32, so their exact shard
probabilities come from counting the 4096 buckets, assuming (as for any good
checksum of varied names) that those 12 bits are uniform:

- `crc_bucket_probs`: ``consistent_hash`` (channels_redis 2.2+, asgi_redis 1.4, pub/sub
  3.3.1+): bucket ``x`` goes to ``int(x / (4096 / N))``;
- `top_bits_probs`: the 2015 backend and asgi_redis 1.0: ``x // ceil(4096 / N)``.

`expected_max_load` is the balls-in-bins expectation used by ``hot-shard``.
"""

from __future__ import annotations

import math

__all__ = ["crc_bucket", "crc_bucket_probs", "top_bits_probs", "mismatch",
           "crc_moved_fraction", "expected_max_load"]

BUCKETS = 4096


def crc_bucket(x: int, n: int) -> int:
    """Shard of 12-bit bucket ``x`` under ``consistent_hash`` with ``n`` hosts."""
    return 0 if n == 1 else int(x / (BUCKETS / float(n)))


def crc_bucket_probs(n: int) -> list[float]:
    """P(shard = k) under ``consistent_hash`` with ``n`` hosts, uniform 12-bit buckets."""
    counts = [0] * n
    for x in range(BUCKETS):
        counts[crc_bucket(x, n)] += 1
    return [c / BUCKETS for c in counts]


def top_bits_probs(n: int) -> list[float]:
    """P(shard = k) under the top-bits rule: buckets of ``ceil(4096 / n)``."""
    d = math.ceil(BUCKETS / n)
    counts = [0] * n
    for x in range(BUCKETS):
        counts[x // d] += 1
    return [c / BUCKETS for c in counts]


def mismatch(probs: list[float]) -> float:
    """P(two independent draws from ``probs`` differ) = 1 - sum p_k^2.

    With N equal shards this is (N - 1) / N.
    """
    return 1.0 - math.fsum(p * p for p in probs)


def crc_moved_fraction(n: int) -> float:
    """Fraction of 12-bit buckets whose ``consistent_hash`` shard changes n -> n + 1.

    Continuous form: a bucket at u in [0, 1) stays iff floor(uN) = floor(u(N+1)) = k,
    i.e. u in [k/N, (k+1)/(N+1)), of length (N-k)/(N(N+1)); summed over k = 0..N-1
    that is 1/2, so half of all names move, whatever N. This function counts the
    4096 buckets exactly.
    """
    return sum(crc_bucket(x, n) != crc_bucket(x, n + 1) for x in range(BUCKETS)) / BUCKETS


def _max_cdf(balls: int, probs: list[float], m: int) -> float:
    """P(every bin holds <= m of ``balls`` balls thrown independently by ``probs``).

    The multinomial sum over counts c_k <= m of balls! prod p_k^c_k / c_k!, built bin
    by bin (a truncated exponential generating function).
    """
    poly = [1.0] + [0.0] * balls          # coefficients of x^j / j! ... kept as p^j / j!
    for p in probs:
        term = [p ** c / math.factorial(c) for c in range(min(m, balls) + 1)]
        new = [0.0] * (balls + 1)
        for j, a in enumerate(poly):
            if a == 0.0:
                continue
            for c, b in enumerate(term):
                if j + c > balls:
                    break
                new[j + c] += a * b
        poly = new
    return poly[balls] * math.factorial(balls)


def expected_max_load(balls: int, probs: list[float]) -> tuple[float, float]:
    """Mean and standard deviation of the fullest bin's count.

    ``balls`` balls land independently in bins with probabilities ``probs``;
    E[M] = sum_{m >= 0} P(M > m), E[M^2] = sum_{m >= 0} (2m + 1) P(M > m).
    """
    mean = second = 0.0
    for m in range(balls):
        tail = 1.0 - _max_cdf(balls, probs, m)
        mean += tail
        second += (2 * m + 1) * tail
    return mean, math.sqrt(max(second - mean * mean, 0.0))
