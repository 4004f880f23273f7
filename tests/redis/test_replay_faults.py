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

from redis_checks import SMALL, assert_all_gone, children  # noqa: E402
from shardlab.replay import main  # noqa: E402
from shardlab.replay_proc import ReplayRun, _IfaceNode  # noqa: E402
from sim.scenario import scenario_from_dict  # noqa: E402

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
    by_kind = run["fates_by_kind"]
    for kind, fates in by_kind.items():
        assert sum(fates.values()) == run["sent"][kind]
    assert run["fates"] == {f: sum(by_kind[k].get(f, 0) for k in by_kind)
                            for f in run["fates"]}
    # a reply follows a served request (killed servers lose some): never more replies
    assert run["sent"]["response"] - by_kind["response"]["duplicate"] \
        <= by_kind["request"]["delivered"]
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


def test_a_reply_popped_by_the_replaced_layer_is_still_received(redis_urls):
    """Invariant: when an interface server rebuilds its layer (a partition or host
    change) while a request send is still under way on the old one (so the old layer
    stays open for a while), a reply that arrives then is received through the new
    layer, not popped by the old layer's pull into a buffer nobody reads."""
    import asyncio
    import tomllib

    from layer.redis import RedisChannelLayer

    sc = scenario_from_dict({**tomllib.loads(SMALL), "router": "fixed"}, "small")
    run = ReplayRun(sc, redis_urls, "shardlab", 1.0, "asgi")  # blocking pops of 5 s
    rid, channel = run.reqs[0].id, run.reqs[0].channel
    listen = run._listen_shard("iface0", channel, 0.0)
    other = next(s for s in sc.shard_names if s != listen)

    async def scenario() -> list:
        events: list = []
        node = _IfaceNode(run._spec("iface0", 0), lambda *ev: events.append(ev))
        tx = RedisChannelLayer(redis_urls, router="fixed", prefix="asgi",
                               client_prefix="worker0", shard_names=sc.shard_names)
        try:
            node.channels[rid] = channel
            node.waiting[rid] = node.spawn(node.await_reply(rid, channel))
            await asyncio.sleep(0.3)  # the old layer's pull waits on the listen shard
            slow_send = asyncio.create_task(asyncio.sleep(1.5))  # keeps the old layer open
            node.sends[id(node.layer)] = {slow_send}
            # cut off from another shard: a new layer, listening on the same shard
            await node.reconfigure(sc.shard_names, frozenset({other}))
            await asyncio.sleep(0.3)
            await tx.send(channel, {"id": rid})
            for _ in range(40):
                if any(e[0] == "recv" for e in events):
                    break
                await asyncio.sleep(0.05)
            return events
        finally:
            await tx.close()
            await node.shutdown()
    events = asyncio.run(scenario())
    assert [e[:2] for e in events] == [("recv", rid)]
