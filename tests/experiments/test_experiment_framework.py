"""The framework: determinism, seeds, intervals, the closed forms, the CLI's errors,
and the same bytes from a Dask cluster (`--dask`)."""

from __future__ import annotations

import argparse
import binascii
import json
import random
import socket
import sys

import pytest

from experiments import ExperimentError
from experiments.analytic import (crc_bucket, crc_bucket_probs, crc_moved_fraction,
                                  expected_max_load, mismatch)
from experiments.base import Point, point_seed, run_experiment, t_interval
from experiments import cli
from experiments.cli import add_experiment_parser, cmd_experiment, main
from experiments.clusters import Clusters
from experiments.peaky_traffic import PeakyTraffic
from experiments.resharding import Resharding
from experiments.resharding_rolling import new_host_share
from experiments.shard_failure import ShardFailure
from layer.hashing import consistent_hash


@pytest.mark.parametrize("cls", [Resharding, Clusters, ShardFailure, PeakyTraffic])
def test_serial_and_parallel_runs_are_identical(cls):
    """Seeds come from the point, not the order: 1 and 2 workers give the same JSON."""
    serial = run_experiment(cls(quick=True), workers=1)
    parallel = run_experiment(cls(quick=True), workers=2)
    assert json.dumps(serial) == json.dumps(parallel)


def test_point_seed_depends_only_on_the_point():
    """The seed of a point is a function of its name, series, params and replication."""
    a = point_seed("x", Point("s", {"n": 1, "m": 2}), 0)
    assert a == point_seed("x", Point("s", {"m": 2, "n": 1}), 0)
    assert len({a, point_seed("x", Point("s", {"n": 1, "m": 2}), 1),
                point_seed("x", Point("t", {"n": 1, "m": 2}), 0)}) == 3


def test_t_interval():
    """Mean +- t(0.975, r-1) s / sqrt(r); a single value is its own interval."""
    assert t_interval([2.0]) == (2.0, 2.0, 2.0)
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 * 1.0 / 3 ** 0.5)


def test_bucket_map_is_consistent_hash():
    """The closed forms count the same map `layer.hashing.consistent_hash` computes."""
    rng = random.Random("names")
    for _ in range(500):
        name = f"http.response.{rng.getrandbits(40):x}!"
        x = binascii.crc32(name.encode()) & 0xFFF
        for n in (1, 2, 3, 5, 7, 16):
            assert crc_bucket(x, n) == consistent_hash(name, n)


def test_closed_forms():
    """(N-1)/N on equal buckets; crc moves half its names; balls in bins, small case."""
    assert mismatch(crc_bucket_probs(4)) == pytest.approx(0.75)
    assert all(abs(crc_moved_fraction(n) - 0.5) < 0.002 for n in range(1, 17))
    # 4 balls, 2 bins: max 4 w.p. 2/16, 3 w.p. 8/16, 2 w.p. 6/16
    assert expected_max_load(4, [0.5, 0.5])[0] == pytest.approx(2.75)
    assert expected_max_load(1, [0.25] * 4) == (1.0, 0.0)


def _args(argv):
    parser = argparse.ArgumentParser(prog="shardlab")
    add_experiment_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv, words", [
    (["experiment", "run", "nope"], "unknown; allowed: rendezvous"),
    (["experiment", "run"], "give an experiment name or --all"),
    (["experiment", "run", "clusters", "--all"], "not both"),
    (["experiment", "run", "--all", "--dask", "tcp://x:8786", "--serial"], "give one"),
    (["experiment", "run", "--all", "--dask", ""], "give the scheduler's address"),
    (["experiment", "run", "--all", "--dask", "nonsense"], "is not a Dask scheduler address"),
    (["experiment"], "give an action"),
])
def test_cli_errors_are_one_line(argv, words):
    """Bad input raises ExperimentError (a ValueError) with a one-line message."""
    with pytest.raises(ExperimentError) as e:
        cmd_experiment(_args(argv))
    assert isinstance(e.value, ValueError)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_cli_error_exit_code(tmp_path, capsys):
    """The stand-alone entry prints one error line and exits 2, writing nothing."""
    assert main(["experiment", "run", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("shardlab: error:")
    assert not (tmp_path / "r").exists()


def _bad_out(tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    if kind == "png is a directory":
        (out / "clusters.png").mkdir()
    elif kind == "summary is a directory":
        (out / "summary.md").mkdir()
    elif kind == "empty result":
        (out / "rendezvous.json").write_text('{"experiment": "rendezvous", "points": []}')
    elif kind == "point without value":
        (out / "rendezvous.json").write_text(json.dumps({"experiment": "rendezvous",
            "points": [{"series": "fixed", "params": {}, "low": 0, "high": 0,
                        "prediction": None}]}))
    return out


@pytest.mark.parametrize("kind, words", [
    ("png is a directory", "clusters.png' exists and is not a regular file"),
    ("summary is a directory", "summary.md' exists and is not a regular file"),
    ("empty result", "'points' is not a non-empty list"),
    ("point without value", "points[0] lacks one of"),
])
def test_an_out_that_cannot_take_the_results_is_refused_before_any_work(
        tmp_path, capsys, kind, words):
    """Invariant: outputs are written whole or not at all: an --out where a result
    file cannot be written, or holding a result that is not complete, is refused up
    front (one line, exit 2) and nothing is written."""
    out = _bad_out(tmp_path, kind)
    before = sorted(p.name for p in out.iterdir())
    assert main(["experiment", "run", "clusters", "--quick", "--serial",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_an_interrupt_stops_the_workers_without_a_traceback(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: the run stops with one
    line and exit 130, no worker prints a traceback and none is left running, and
    every file in --out is whole (the summary lists what finished)."""
    import os
    import signal
    import subprocess
    import time
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "shardlab", "experiment", "run", "--all",
                             "--quick", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, text=True)
    deadline = time.monotonic() + 60  # until the pool is busy with the first sweep
    while time.monotonic() < deadline and len(_children(proc.pid)) < 2:
        time.sleep(0.1)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "no worker pool started"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "shardlab: interrupted"
    time.sleep(0.2)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")
                and "zombie" not in open(f"/proc/{w}/status").read()]
    for path in out.glob("*.json") if out.exists() else []:
        assert json.loads(path.read_text())["points"]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def test_cli_list(capsys):
    """`experiment list` names every experiment."""
    assert cmd_experiment(_args(["experiment", "list"])) == 0
    out = capsys.readouterr().out
    for name in ("rendezvous", "resharding", "hot-shard", "hash-seed", "clusters",
                 "resharding-rolling", "shard-failure", "peaky-traffic",
                 "workers-per-shard", "receive-latency"):
        assert name in out


def test_seed_point_shares_one_run_across_series():
    """shard-failure's series of one replication read the same run: same seed."""
    exp = ShardFailure(quick=True)
    a, b = (p for p in exp.points() if p.params == {"down_s": 5.0}
            and p.series in ("requests lost", "duplicates"))
    assert point_seed(exp.name, exp.seed_point(a), 0) == point_seed(exp.name, exp.seed_point(b), 0)
    assert exp.seed_point(a) == Point("", {"down_s": 5.0})


def test_new_host_share():
    """E[floor(n/k)]/lam for n ~ Poisson(lam): small lam by hand, large lam -> 1/k."""
    import math
    lam = 0.5  # only n >= 4 counts, once (n < 8 almost surely)
    by_hand = sum(math.exp(-lam) * lam ** n / math.factorial(n) * (n // 4)
                  for n in range(40)) / lam
    assert new_host_share(lam, 4) == pytest.approx(by_hand, rel=1e-9)
    assert new_host_share(1000.0, 4) == pytest.approx(0.25, abs=0.001)


# -- --dask -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dask_address():
    """A local Dask cluster: two worker processes, one thread each, this environment."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_dask_run_writes_the_same_bytes_as_a_serial_run(dask_address, tmp_path):
    """The points of a quick experiment run as tasks on a Dask cluster (each one the
    same work as a local process does) give a JSON identical to a serial run's."""
    for mode, extra in (("dask", ["--dask", dask_address]), ("serial", ["--serial"])):
        assert cmd_experiment(_args(["experiment", "run", "resharding", "--quick", "--out",
                                     str(tmp_path / mode), *extra])) == 0
    dask_bytes = (tmp_path / "dask" / "resharding.json").read_bytes()
    assert dask_bytes == (tmp_path / "serial" / "resharding.json").read_bytes()
    assert (tmp_path / "dask" / "resharding.png").exists()
    assert (tmp_path / "dask" / "summary.md").exists()


def test_dask_progress_counts_every_point(dask_address):
    """The progress callback advances once per point as the tasks finish."""
    exp = Resharding(quick=True)
    done = []
    client = cli.connect_dask(dask_address)
    try:
        run_experiment(exp, progress=done.append, client=client)
    finally:
        client.close()
    assert sum(done) == len(exp.points())


def test_dask_unreachable_is_one_line(monkeypatch, tmp_path, capsys):
    """An address where no scheduler answers: one error line after the (here shortened)
    connect timeout, exit 2, nothing written."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    monkeypatch.setattr(cli, "DASK_CONNECT_TIMEOUT", 1.0)
    out = tmp_path / "r"
    assert main(["experiment", "run", "clusters", "--quick", "--out", str(out),
                 "--dask", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Dask scheduler answered there within 1 s" in err
    assert not out.exists()


def test_dask_not_installed_is_one_line(monkeypatch):
    """Without the distributed package --dask says how to install it."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    with pytest.raises(ExperimentError) as e:
        cmd_experiment(_args(["experiment", "run", "clusters", "--dask", "tcp://x:8786"]))
    assert "install it with pip install 'shardlab[dask]'" in str(e.value)
    assert "\n" not in str(e.value)
