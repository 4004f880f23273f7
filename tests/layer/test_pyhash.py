"""layer.pyhash against real CPython: subprocesses of sys.executable run with PYTHONHASHSEED.

Each subprocess hashes a whole batch (a JSON document on stdin) and also reports
its sys.hash_info and the raw 24-byte _Py_HashSecret, so one subprocess per seed
checks the algorithm, the key derivation and the hashes together.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import layer.pyhash
from layer.pyhash import hash_secret_key, python_str_hash, siphash13

MAX_SEED = 4294967295
FIXED_SEEDS = [0, 1, 2, 42, MAX_SEED]

_CHILD = r"""
import ctypes, json, sys
batch = json.load(sys.stdin)
try:
    secret = bytes((ctypes.c_ubyte * 24).in_dll(ctypes.pythonapi, "_Py_HashSecret")).hex()
except (AttributeError, ValueError):
    secret = None
json.dump({
    "algorithm": sys.hash_info.algorithm,
    "cutoff": sys.hash_info.cutoff,
    "hash_bits": sys.hash_info.hash_bits,
    "secret": secret,
    "str_hashes": [hash("".join(map(chr, cps))) for cps in batch["strings"]],
    "bytes_hashes": [hash(bytes.fromhex(b)) for b in batch["bytes"]],
}, sys.stdout)
"""


def run_cpython(seed: int, strings: Sequence[str], blobs: Sequence[bytes] = ()) -> dict:
    """Hash ``strings`` and ``blobs`` in a fresh ``sys.executable`` with PYTHONHASHSEED=seed."""
    # Strings travel as code-point lists: json.loads would fuse an escaped
    # surrogate pair such as "\ud83d\ude00" into one astral character.
    batch = json.dumps({"strings": [list(map(ord, s)) for s in strings], "bytes": [b.hex() for b in blobs]})
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=batch, env=env, capture_output=True, text=True, encoding="ascii", timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["str_hashes"]) == len(strings) and len(out["bytes_hashes"]) == len(blobs)
    return out


def _signed_hash(u: int) -> int:
    """uint64 -> Py_hash_t as _Py_HashBytes returns it (-1 is reserved, becomes -2)."""
    h = u - (1 << 64) if u >> 63 else u
    return -2 if h == -1 else h


def _width(s: str) -> int:
    """Bytes per code point in CPython's PEP 393 representation of ``s``."""
    top = max(map(ord, s), default=0)
    return 1 if top < 0x100 else 2 if top < 0x10000 else 4


def _build_corpus() -> tuple[list[str], list[bytes]]:
    rng = random.Random(0x5EED)
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    strings = ["", "specific.AbCd!x1", "specific.", "chat", "asgi", "group:room-42", "a\x00b", "\x00" * 8]
    strings += [
        "specific." + "".join(rng.choices(alnum, k=rng.randint(4, 16))) + "!" + "".join(rng.choices(alnum, k=rng.randint(0, 12)))
        for _ in range(20)
    ]
    # Code-point class boundaries, lone surrogates, a surrogate "pair" as two code points.
    strings += ["\x7f", "\x80", "\xff", "\u0100", "\ud7ff", "\ud800", "\udfff", "\ue000", "\uffff",
                "\U00010000", "\U0010ffff", "\ud83d\ude00", "x\udc00" * 5, "\U0001f600\ud800"]
    # kind -> (pool of code points, forced code point range making the string that kind)
    kinds = {
        "ascii": ((0, 0x7F), (0x20, 0x7E)),
        "latin1": ((0, 0xFF), (0x80, 0xFF)),
        "bmp": ((0, 0xFFFF), (0x100, 0xFFFF)),
        "astral": ((0, 0x10FFFF), (0x10000, 0x10FFFF)),
    }
    for length in range(1, 41):
        for pool, forced in kinds.values():
            for _ in range(2):
                chars = [chr(rng.randint(*pool)) for _ in range(length - 1)]
                chars.insert(rng.randint(0, length - 1), chr(rng.randint(*forced)))
                strings.append("".join(chars))
    blobs = [rng.randbytes(n) for n in range(1, 41) for _ in range(3)]
    return strings, blobs


CORPUS, BLOB_CORPUS = _build_corpus()


@functools.lru_cache(maxsize=None)
def reference(seed: int) -> dict:
    """One subprocess per fixed seed, shared by every test below."""
    return run_cpython(seed, CORPUS, BLOB_CORPUS)


def _mismatches(strings, got, want):
    return [(s, g, w) for s, g, w in zip(strings, got, want) if g != w][:5]


def test_corpus_covers_every_width_and_length_mod_8():
    """Invariant: the fixed corpus hits every (bytes-per-char, byte length mod 8) pair, i.e. every SipHash tail case per width."""
    seen = {(_width(s), (len(s) * _width(s)) % 8) for s in CORPUS if s}
    assert {(1, r) for r in range(8)} | {(2, r) for r in range(0, 8, 2)} | {(4, r) for r in (0, 4)} <= seen
    assert {len(s) % 8 for s in CORPUS if _width(s) == 4} == set(range(8))


def test_reference_interpreter_is_siphash13_without_cutoff():
    """Invariant: the interpreter we compare against hashes str with SipHash-1-3, 64-bit, no small-string cutoff."""
    child = reference(1)
    assert (child["algorithm"], child["cutoff"], child["hash_bits"]) == ("siphash13", 0, 64)
    assert (sys.hash_info.algorithm, sys.hash_info.cutoff, sys.hash_info.hash_bits) == ("siphash13", 0, 64)


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_hash_secret_key_matches_real_hash_secret(seed):
    """Invariant: hash_secret_key(seed) == the first 16 bytes of CPython's _Py_HashSecret under PYTHONHASHSEED=seed."""
    secret = reference(seed)["secret"]
    if secret is None:
        pytest.skip("_Py_HashSecret is not readable through ctypes in this interpreter")
    assert hash_secret_key(seed) == struct.unpack("<QQ", bytes.fromhex(secret)[:16])


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_python_str_hash_matches_cpython(seed):
    """Invariant: python_str_hash(s, seed) == hash(s) in CPython run with PYTHONHASHSEED=seed, for every corpus string."""
    got = [python_str_hash(s, seed) for s in CORPUS]
    assert _mismatches(CORPUS, got, reference(seed)["str_hashes"]) == []


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_siphash13_matches_cpython_bytes_hash(seed):
    """Invariant: signed siphash13(key(seed), b) == hash(b) for bytes b of every length 1..40 (same _Py_HashBytes path)."""
    k0, k1 = hash_secret_key(seed)
    got = [_signed_hash(siphash13(k0, k1, b)) for b in BLOB_CORPUS]
    assert _mismatches(BLOB_CORPUS, got, reference(seed)["bytes_hashes"]) == []


_any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # includes lone surrogates
_channel_name = st.from_regex(r"specific\.[A-Za-z0-9]{4,16}![A-Za-z0-9]{0,12}", fullmatch=True)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, MAX_SEED),
    strings=st.lists(st.one_of(_any_text, _channel_name), min_size=1, max_size=60),
)
def test_python_str_hash_matches_cpython_for_drawn_seeds(seed, strings):
    """Invariant: python_str_hash(s, seed) == CPython hash(s) under PYTHONHASHSEED=seed for hypothesis-drawn seeds and strings (one subprocess per example)."""
    want = run_cpython(seed, strings)["str_hashes"]
    assert _mismatches(strings, [python_str_hash(s, seed) for s in strings], want) == []


def _running_seed() -> tuple[int | None, str]:
    """PYTHONHASHSEED this interpreter really started with, or (None, why not)."""
    raw = os.environ.get("PYTHONHASHSEED")
    if raw is None or sys.flags.ignore_environment:
        return None, "PYTHONHASHSEED not set (or ignored) for this interpreter"
    if not raw.isdigit() or int(raw) > MAX_SEED:
        return None, f"PYTHONHASHSEED={raw!r} is not a fixed seed"
    seed = int(raw)
    try:  # os.environ may have been changed after start-up (e.g. by a plugin)
        secret = bytes((ctypes.c_ubyte * 24).in_dll(ctypes.pythonapi, "_Py_HashSecret"))
    except (AttributeError, ValueError):
        return seed, ""
    if struct.unpack("<QQ", secret[:16]) != hash_secret_key(seed):
        return None, f"PYTHONHASHSEED={raw} was set after this interpreter started"
    return seed, ""


_ENV_SEED, _ENV_SKIP = _running_seed()


@pytest.mark.skipif(_ENV_SEED is None, reason=_ENV_SKIP)
@settings(max_examples=300, deadline=None)
@given(s=st.one_of(_any_text, _channel_name))
def test_running_interpreter_hash_agrees(s):
    """Invariant: with PYTHONHASHSEED set for this process, python_str_hash(s, seed) == the built-in hash(s)."""
    assert python_str_hash(s, _ENV_SEED) == hash(s)


@pytest.mark.parametrize(
    "raw, expected",
    [(0, 0), (2**63 - 1, 2**63 - 1), (2**63, -(2**63)), (2**64 - 2, -2), (2**64 - 1, -2)],
)
def test_uint64_to_py_hash_t(monkeypatch, raw, expected):
    """Invariant: the SipHash uint64 is read as signed 64-bit and -1 (unreachable by search) becomes -2, as in _Py_HashBytes."""
    monkeypatch.setattr(layer.pyhash, "siphash13", lambda k0, k1, data: raw)
    assert python_str_hash("chat", 42) == expected == _signed_hash(raw)


@pytest.mark.parametrize("bad", [-1, MAX_SEED + 1, 2**64, 1.0, "1", None, True])
def test_bad_seed_raises_value_error(bad):
    """Invariant: a seed outside int 0..4294967295 raises a ValueError naming the value and the range, even for ''."""
    for call in (lambda: hash_secret_key(bad), lambda: python_str_hash("", bad), lambda: python_str_hash("chat", bad)):
        with pytest.raises(ValueError, match=r"0\.\.4294967295") as exc:
            call()
        assert repr(bad) in str(exc.value) and "\n" not in str(exc.value)
