"""`shardlab replay` with faults applied for real, and stopping on SIGTERM.

A small scenario (2 interface servers, 3 workers, about 60 requests) on 3
redis-servers the replay starts itself, with one fault of every kind: a shard killed
with SIGKILL and restarted empty, a worker and an interface server killed and
restarted, a partition, a host-list change. Then a replay that is sent SIGTERM
mid-run must leave no redis-server and no replay process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")

from redis_checks import assert_all_gone, children  # noqa: E402
from shardlab.replay import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

FAULTS = """\
name = "faults"
router = "fixed"
interface_servers = 2
workers = 3
duration = 2.0
drain = 2.0
expiry = 3.0
[load]
kind = "poisson"
rate = 30.0
[[faults]]
kind = "shard_crash"
at = 0.5
target = "shard1"
duration = 0.5
[[faults]]
kind = "worker_crash"
at = 0.7
target = "worker0"
duration = 0.5
[[faults]]
kind = "iface_crash"
at = 1.0
target = "iface1"
duration = 0.25
[[faults]]
kind = "partition"
at = 1.0
target = "worker1"
shard = "shard0"
duration = 0.5
[[faults]]
kind = "host_change"
at = 1.5
hosts = ["shard0", "shard2"]
"""


def test_every_fault_kind_applied_for_real(redis_binary, tmp_path):
    """Invariant: each fault kind is applied to the real processes and servers (the
    shard's redis-server killed and restarted, the worker and interface server killed
    and restarted, the partition and host change sent), every message sent gets exactly
    one fate, and the crashes cost messages with the simulator's fate names."""
    path = tmp_path / "faults.toml"
    path.write_text(FAULTS)
    out = tmp_path / "real.json"
    assert main(["replay", str(path), "--redis-servers", "3", "--time-scale", "0.5",
                 "--json", str(out), "--quiet"]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["processes"] == "separate"
    actions = [a["action"] for a in run["faults_applied"]]
    assert actions == [
        "SIGKILL redis-server of shard1", "SIGKILL worker0 (generation 0)",
        "restarted shard1 empty on its port", "SIGKILL iface1 (generation 0)",
        "worker1 cut off from shard0", "started worker0 generation 1",
        "started iface1 generation 1", "worker1 reaches shard0 again",
        "hosts ['shard0', 'shard2'] for 5 process(es)"]
    for kind, fates in run["fates_by_kind"].items():
        assert sum(fates.values()) == run["sent"][kind]
    assert run["invariants"]["conservation"]["holds"]
    assert run["sent"]["request"] > 40
    lost = run["fates_by_kind"]["request"]["lost_in_crash"] + \
        run["fates_by_kind"]["response"]["lost_in_crash"]
    assert lost > 0  # shard1 held messages when it was killed
    assert run["fates_by_kind"]["response"]["misrouted"] == 0  # fixed, one host list
    assert run["fates_by_kind"]["response"]["delivered"] > run["sent"]["response"] // 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_servers_and_processes(redis_binary, tmp_path):
    """Invariant: SIGTERM to a running replay stops its redis-servers and its interface
    server and worker processes, and the command ends with one line and code 143."""
    path = tmp_path / "long.toml"
    path.write_text('interface_servers = 1\nworkers = 2\nduration = 60.0\n'
                    '[load]\nkind = "poisson"\nrate = 20.0\n')
    env = dict(os.environ, PATH=os.path.dirname(redis_binary) + os.pathsep
               + os.environ.get("PATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "shardlab.replay", "replay", str(path),
                             "--redis-servers", "3", "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = children(proc.pid)
            servers = [p for p, c in kids.items() if c.startswith("redis-server")]
            others = [p for p, c in kids.items() if not c.startswith("redis-server")]
            if len(servers) == 3 and len(others) >= 3:  # 3 replay processes (+ tracker)
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            pytest.fail(f"replay did not start its servers and processes: {kids}")
        time.sleep(1.0)  # mid-run
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        "shardlab: terminated (SIGTERM): replay processes and redis servers stopped"], err
    assert_all_gone(kids)
