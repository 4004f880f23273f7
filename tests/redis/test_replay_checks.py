"""`shardlab replay` and `shardlab compare`: honest results at any time scale, bad
input refused in one line, and stopping on a signal to the whole process group.

A replay that cannot keep up with its time scale still offers every planned request,
says how late it was (``wall``, ``warnings``, a WARNING line) and shows no fate that did
not happen; the host list that decides a misroute is the one the owner really used.
Duplicate or malformed ``--redis`` URLs, garbage in result files and too many
processes end with one line and exit code 2. Ctrl-C or SIGTERM to the process group
ends with 130 or 143 and one line, leaving no process or server behind.
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

from shardlab.replay import main, replay_scenario  # noqa: E402
from shardlab.replay_proc import ReplayError, ReplayRun  # noqa: E402
from redis_checks import assert_all_gone, descendants, redis_flags  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors
        return e.code


# -- 1, 9: a time scale the machine cannot follow ---------------------------------------

def test_tiny_time_scale_offers_everything_and_warns(redis_urls, small, tmp_path, capsys):
    """Invariant: at --time-scale 0.001 (40 requests planned within 1 ms) every planned
    request is still sent and gets one fate, `fixed` misroutes none, ``wall`` counts
    the late sends, the table says WARNING, and stderr's count is the table's."""
    out = tmp_path / "real.json"
    assert main(["replay", small, "--router", "fixed", *redis_flags(redis_urls),
                 "--time-scale", "0.001", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    run = json.loads(out.read_text())["runs"][0]
    assert run["sent"]["request"] == 40 and run["wall"]["not_sent"] == 0
    for kind, fates in run["fates_by_kind"].items():
        assert sum(fates.values()) == run["sent"][kind]
    resp = run["fates_by_kind"]["response"]
    assert resp["misrouted"] == 0
    # every reply reached its client: in time, or after the (scaled: 60 ms) client
    # timeout because the run fell behind; none is left without a fate that happened
    assert resp["delivered"] + resp["orphaned"] == run["sent"]["response"] >= 30
    assert run["wall"]["late_sends"] > 0 and run["wall"]["max_send_lateness_s"] > 0
    assert run["warnings"] and "fell behind" in run["warnings"][0]
    assert "WARNING: the real run fell behind" in captured.out
    assert "requests, responses: messages sent." in captured.out  # the legend
    if "replayed" in captured.err:
        assert "replayed 40 requests" in captured.err


def test_owner_host_list_is_the_one_it_applied(small):
    """Invariant: a misroute is judged on the host list the owner had applied when the
    reply was written (its own ``config`` report), not on when the parent sent it."""
    sc = load_scenario(small, {"router": "fixed"})
    run = ReplayRun(sc, ["redis://127.0.0.1:1/0"] * 3, "shardlab", 1.0, "asgi")
    run.t0 = 100.0
    channel = next(c for c in (f"http.response.abcdef{i:02d}!0" for i in range(100))
                   if run._listen_shard("iface0", c, 0.0) == "shard1")

    class Child:
        name, gen = "iface0", 0
    run._event(Child(), ("config", ["shard0", "shard2"], 105.0))
    assert run._listen_shard("iface0", channel, 104.9) == "shard1"  # not applied yet
    assert run._listen_shard("iface0", channel, 105.1) in ("shard0", "shard2")


def test_one_server_for_every_shard_is_an_error_not_a_finding(redis_urls, small):
    """Invariant: when one Redis database serves all three shards, replies 'misrouted'
    by channels_redis-4 are received all the same: the replay stops with an error
    instead of reporting misroutes that did not happen."""
    sc = load_scenario(small, {"router": "channels_redis-4"})
    with pytest.raises(ReplayError, match="one Redis server given for two shards"):
        replay_scenario(sc, [redis_urls[0]] * 3, "shardlab", 0.25, "dup")


def test_queued_at_end_has_the_simulators_shape(redis_urls, tmp_path, capsys):
    """Invariant: a replay that ends with requests queued reports ``queued_at_end`` as
    the simulator does (shard -> key -> count, keys without the prefix), its counts
    match the in-flight requests found queued, and the table prints 'left queued'."""
    path = tmp_path / "slow.toml"
    path.write_text('name = "slow"\ninterface_servers = 1\nworkers = 1\nservice_time = 1.0\n'
                    'drain = 0.5\n[load]\nkind = "poisson"\nrate = 50.0\nrequests = 20\n')
    out = tmp_path / "real.json"
    assert main(["replay", str(path), "--router", "fixed", *redis_flags(redis_urls),
                 "--time-scale", "0.1", "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    queued = run["queued_at_end"]
    assert queued and all(set(keys) == {"http.request"} for keys in queued.values())
    total = sum(n for keys in queued.values() for n in keys.values())
    assert total == run["in_flight_by_reason"]["request"]["queued"]
    assert "left queued at the end" in capsys.readouterr().out


# -- 2: faults_applied says when things happened ------------------------------------------

def test_faults_applied_record_real_times_and_readiness(redis_binary, tmp_path):
    """Invariant: each applied fault action records its planned and its real
    (scenario-time) moment; a restart records when the process was ready again and
    whether that took longer than the fault's duration."""
    path = tmp_path / "crash.toml"
    path.write_text('name = "crash"\nrouter = "fixed"\ninterface_servers = 1\nworkers = 2\n'
                    'duration = 1.0\ndrain = 1.0\n[load]\nkind = "poisson"\nrate = 20.0\n'
                    '[[faults]]\nkind = "worker_crash"\nat = 0.2\ntarget = "worker0"\n'
                    'duration = 0.01\n')
    out = tmp_path / "real.json"
    assert main(["replay", str(path), "--redis-servers", "3", "--time-scale", "0.5",
                 "--json", str(out), "--quiet"]) == 0
    kill, start = json.loads(out.read_text())["runs"][0]["faults_applied"]
    assert (kill["planned_at"], start["planned_at"]) == (0.2, 0.21)
    assert kill["at"] >= 0.2 - 1e-3 and start["at"] >= kill["at"]
    assert start["ready_at"] > start["at"]
    # a new Python process needs far longer than 0.01 scenario s (5 ms) to start
    assert start["outlasted_duration"] and start["down_s"] > 0.01


# -- 3, 5, 6, 8, 10: one line, exit 2 -------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--redis", "redis://127.0.0.1:99999/0"], "port '99999' is not an integer from 1 to 65535"),
    (["--redis", "redis://127.0.0.1:6379:abc"], "port '6379:abc'"),
    (["--redis", "redis://127.0.0.1:6379/x"], "database 'x' is not a non-negative integer"),
    (["--redis", "redis://:6379/0"], "no host"),
    (["--redis", "redis://127.0.0.1:7/0", "--redis", "redis://127.0.0.1:7",
      "--redis", "redis://127.0.0.1:8/0"],
     "--redis redis://127.0.0.1:7: the same server and database as --redis "
     "redis://127.0.0.1:7/0"),
    (["--redis", "unix:///tmp/x.sock", "--redis", "unix:///tmp/x.sock?db=0",
      "--redis", "unix:///tmp/y.sock"], "the same server and database"),
    (["--requests", "99999999999"], "argument --requests: '99999999999': must be an "
                                    "integer from 1 to 10000000"),
    (["@many"], "interface_servers + workers = 4 + 2000 = 2004"),
])
def test_bad_replay_input_is_one_line(tmp_path, capsys, argv, needle):
    """Invariant: a malformed or duplicate --redis URL, too many requests or too many
    processes end with one line naming the flag or key and the value, exit code 2."""
    if argv == ["@many"]:
        path = tmp_path / "many.toml"
        path.write_text("workers = 2000\n")
        argv = [str(path)]
    assert _code(["replay", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err


def test_server_side_url_errors_are_one_line(redis_urls, capsys):
    """Invariant: a database the server refuses (index out of range), a server that
    does not answer and one server under two addresses end with one line, exit 2."""
    port = redis_urls[0].rsplit(":", 1)[1].split("/")[0]
    a = f"redis://127.0.0.1:{port}/99"
    assert _code(["replay", "--redis", a, *redis_flags(redis_urls[1:])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shardlab: error: --redis {a}: the server refused it: DB index")
    assert len(err.strip().splitlines()) == 1
    same = f"redis://127.000.000.001:{port}/0"
    assert _code(["replay", *redis_flags(redis_urls[:2]), "--redis", same]) == 2
    err = capsys.readouterr().err
    assert f"--redis {same}: the same server (run_id" in err, err


def _file(tmp_path, name, runs, **top):
    path = tmp_path / name
    path.write_text(json.dumps({"mode": "sim", **top, "runs": runs}))
    return str(path)


def _run(router="fixed", sent=40, misrouted=0, **extra):
    return {"router": router, "scenario": "small", "seed": 1, "shards": 3,
            "sent": {"request": sent, "response": sent},
            "fates_by_kind": {"request": {"delivered": sent},
                              "response": {"delivered": sent - misrouted,
                                           "misrouted": misrouted}},
            "latency_s": {"p50": 0.07, "p99": 0.1}, **extra}


@pytest.mark.parametrize("run, needle", [
    ({**_run(), "fates_by_kind": {"request": {"delivered": 40},
                                  "response": {"delivered": 0, "misrouted": 50}}},
     "runs[0].fates_by_kind.response = {\"delivered\": 0, \"misrouted\": 50} is not "
     "allowed; allowed: fates adding up to runs[0].sent.response = 40"),
    ({**_run(), "fates_by_kind": {"request": {"delivered": "40"},
                                  "response": {"delivered": 40}}},
     "runs[0].fates_by_kind.request.delivered = \"40\""),
    ({**_run(), "latency_s": {"p50": "fast", "p99": 0.1}}, "runs[0].latency_s.p50 = \"fast\""),
    ({**_run(), "sent": {"request": 40, "response": 0}},
     "runs[0].fates_by_kind.response = {\"delivered\": 40, \"misrouted\": 0} is not "
     "allowed; allowed: fates adding up to runs[0].sent.response = 0"),
    ({**_run(), "sent": {"request": -1, "response": 40}}, "runs[0].sent.request = -1"),
    (_run(placement={"response": {"x!1": 1}}),
     "runs[0].placement.response['x!1'] = 1 is not allowed; allowed: a shard name"),
])
def test_compare_refuses_impossible_results(tmp_path, capsys, run, needle):
    """Invariant: a result file whose values no run can produce is refused on read,
    with one line naming the file, the key path and the value; exit code 2."""
    good = _file(tmp_path, "good.json", [_run()])
    bad = _file(tmp_path, "bad.json", [run])
    assert _code(["compare", good, bad]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"'{bad}': {needle}" in err, err


def test_compare_refuses_a_router_twice(tmp_path, capsys):
    """Invariant: a result file with the same router twice is refused (which run would
    be compared is undefined)."""
    good = _file(tmp_path, "good.json", [_run()])
    bad = _file(tmp_path, "bad.json", [_run(), _run()])
    assert _code(["compare", bad, good]) == 2
    assert "runs[1].router = \"fixed\" is not allowed; allowed: each router once" in \
        capsys.readouterr().err


# -- 7: results that are not comparable are said to be so ----------------------------------

def test_compare_says_what_differs(tmp_path, capsys):
    """Invariant: compare names what differs besides the mode (shards, scenario, seed,
    requests sent) in a note line and in the JSON, and still exits 0."""
    a = _file(tmp_path, "a.json", [_run()])
    b = _file(tmp_path, "b.json", [_run(sent=30, shards=5, seed=2, scenario="other")])
    out = tmp_path / "cmp.json"
    assert main(["compare", a, b, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "note: fixed: the runs differ in more than their mode" in text
    for part in ('scenario A "small", B "other"', "shards A 3, B 5", "seed A 1, B 2",
                 "requests sent A 40, B 30"):
        assert part in text, text
    differ = json.loads(out.read_text())["not_comparable"]
    assert {d["what"] for d in differ} == {"scenario", "shards", "seed", "requests sent"}
    same = _file(tmp_path, "same.json", [_run()])
    assert main(["compare", a, same]) == 0
    assert "note:" not in capsys.readouterr().out


# -- 4, 10: signals to the whole process group ----------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig, when, code, line", [
    (signal.SIGINT, "starting", 130,
     "shardlab: interrupted (SIGINT): replay processes and redis servers stopped"),
    (signal.SIGINT, "running", 130,
     "shardlab: interrupted (SIGINT): replay processes and redis servers stopped"),
    (signal.SIGTERM, "starting", 143,
     "shardlab: terminated (SIGTERM): replay processes and redis servers stopped"),
])
def test_process_group_signal_stops_everything(redis_binary, tmp_path, sig, when, code,
                                               line):
    """Invariant: Ctrl-C (SIGINT) or SIGTERM sent to the whole process group, while the
    replay processes are starting or once they run, ends the command with exactly one
    line and code 130 / 143 (no traceback from a child, no 'cannot reach a Redis
    server'), and leaves no replay process and no redis-server behind."""
    path = tmp_path / "long.toml"
    path.write_text('interface_servers = 2\nworkers = 6\nduration = 60.0\n'
                    '[load]\nkind = "poisson"\nrate = 20.0\n')
    env = dict(os.environ, PATH=os.path.dirname(redis_binary) + os.pathsep
               + os.environ.get("PATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "shardlab.replay", "replay", str(path),
                             "--redis-servers", "3", "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = descendants(proc.pid)
            seen.update(kids)
            spawned = [p for p in kids if b"spawn_main" in Path(f"/proc/{p}/cmdline")
                       .read_bytes()] if kids else []
            if (when == "starting" and spawned) or (when == "running" and len(spawned) >= 8):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            pytest.fail(f"replay did not start its processes: {kids}")
        if when == "running":
            time.sleep(1.0)
        seen.update(descendants(proc.pid))
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [line], err
    assert_all_gone(seen)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_with_given_servers_says_only_what_stopped(redis_urls, tmp_path):
    """Invariant: with --redis (servers the replay did not start) SIGTERM says the
    replay processes were stopped and the servers left running, and they do run."""
    from shardlab.servers import ping

    path = tmp_path / "long.toml"
    path.write_text('interface_servers = 1\nworkers = 1\nduration = 60.0\n'
                    '[load]\nkind = "poisson"\nrate = 20.0\n')
    proc = subprocess.Popen([sys.executable, "-m", "shardlab.replay", "replay", str(path),
                             *redis_flags(redis_urls), "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        "shardlab: terminated (SIGTERM): replay processes stopped (the --redis servers "
        "are not ours: left running)"], err
    ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in redis_urls]
    assert all(ping(p) for p in ports)
