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
    (_run(fates={"delivered": 85, "misrouted": 0}),
     "runs[0].fates.delivered = 85 is not allowed; allowed: the sum of "
     "runs[0].fates_by_kind.*.delivered = 80"),
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


# -- the parent's bookkeeping, fed a request's events (no servers) -------------------------

class _Proc:
    def __init__(self, name: str, gen: int = 0):
        self.name, self.gen = name, gen


def _planned(sc, stack: str = "shardlab", scale: float = 1.0) -> ReplayRun:
    run = ReplayRun(sc, ["redis://127.0.0.1:1/0"] * sc.shards, stack, scale, "asgi")
    run.t0 = 100.0
    return run


def _serve(run: ReplayRun, rid: int, at: float, predicted: str, written: str | None,
           outcome: str | None = "ok") -> None:
    """Request ``rid`` sent at wall ``at``, taken and served by worker0, its reply
    predicted on ``predicted``; ``replied`` (written to ``written``) unless
    ``outcome`` is None (the send never finished)."""
    iface, worker = _Proc(run.reqs[rid].iface), _Proc("worker0")
    shard = run.sc.shard_names[0]
    run._event(iface, ("sending", rid, at))
    run._event(iface, ("sent", rid, "ok", shard, at + 0.001))
    run._event(worker, ("take", rid, at + 0.002))
    run._event(worker, ("served", rid, at + 0.003))
    run._event(worker, ("reply", rid, predicted, at + 0.004))
    if outcome is not None:
        run._event(worker, ("replied", rid, outcome, written, at + 0.005))


def _fates_of(run: ReplayRun, rid: int, end: float) -> dict:
    """The result for the requests fed so far (the others were never offered)."""
    for r in run.reqs:
        if r.id != rid:
            r.sending = None
    return run._fates({}, {}, end)


def _warnings(run: ReplayRun, result: dict) -> list[str]:
    return run._warnings({**result, "wall": {"overrun_s": 0.0}}, 0)


def _listened_and_other(run: ReplayRun, rid: int) -> tuple[str, str]:
    r = run.reqs[rid]
    listen = run._listen_shard(r.iface, r.channel, 0.0)
    return listen, next(s for s in run.sc.shard_names if s != listen)


def test_a_reply_is_placed_where_the_send_wrote_it(small):
    """Invariant: placement, writes per shard and misroutes follow the shard the
    layer's own send chose (``replied``), not the router's prediction made before it;
    a prediction that differs is reported as a warning."""
    run = _planned(load_scenario(small, {"router": "fixed"}))
    listen, other = _listened_and_other(run, 0)
    _serve(run, 0, 101.0, predicted=listen, written=other)
    result = _fates_of(run, 0, 102.0)
    assert result["placement"]["response"] == {run.reqs[0].channel: other}
    assert result["shard_load"]["by_kind"]["response"][other] == 1
    assert result["fates_by_kind"]["response"]["misrouted"] == 1
    assert result["invariants"]["rendezvous"]["first_violation"]["shard_written"] == other
    assert any("another shard than fixed's router predicted" in w
               for w in _warnings(run, result))
    # a send that never finished falls back on the prediction
    run = _planned(load_scenario(small, {"router": "fixed"}))
    _serve(run, 0, 101.0, predicted=listen, written=None, outcome=None)
    assert _fates_of(run, 0, 102.0)["placement"]["response"] == {run.reqs[0].channel: listen}


@pytest.mark.parametrize("fault", ["shard_crash", "partition"])
def test_an_unfinished_reply_to_a_shard_it_could_not_reach_is_not_misrouted(small, fault):
    """Invariant: a reply send that never finished, to a shard that was down (or cut
    off from the worker) when it began, did not reach the shard: not placed, not
    misrouted, but lost_in_crash (unreachable), as the simulator settles it first."""
    run = _planned(load_scenario(small, {"router": "fixed"}))
    listen, other = _listened_and_other(run, 0)
    if fault == "shard_crash":
        run.shard_down[other].append([100.5, 101.5])
    else:
        run.cut_spans[("worker0", other)] = [[100.5, 101.5]]
    _serve(run, 0, 101.0, predicted=other, written=None, outcome=None)
    result = _fates_of(run, 0, 102.0)
    assert result["placement"]["response"] == {}
    assert result["fates_by_kind"]["response"]["misrouted"] == 0
    fate = "lost_in_crash" if fault == "shard_crash" else "unreachable"
    assert result["fates_by_kind"]["response"][fate] == 1
    assert result["invariants"]["rendezvous"]["holds"]


def test_expired_is_judged_by_the_expiry_the_package_was_given(small):
    """Invariant: with channels_redis (whole seconds) the expiry the processes get and
    the one the fates judge by are the same number (3 s * 0.25 = 0.75 s becomes 1 s):
    a reply found nowhere 0.9 s after it was written has not expired; a warning says
    the expiry was rounded."""
    sc = load_scenario(small, {"router": "channels_redis-4", "expiry": 3.0})
    run = _planned(sc, "channels_redis", 0.25)
    assert run.expiry == 1 and run._spec("worker0", 0)["expiry"] == run.expiry
    listen, _ = _listened_and_other(run, 0)
    _serve(run, 0, 101.0, predicted=listen, written=listen)
    result = _fates_of(run, 0, 101.004 + 0.9)
    assert result["fates_by_kind"]["response"]["expired"] == 0
    assert result["fates_by_kind"]["response"]["in_flight"] == 1
    assert any("takes whole seconds" in w for w in _warnings(run, result))
    run = _planned(sc, "channels_redis", 0.25)
    _serve(run, 0, 101.0, predicted=listen, written=listen)
    assert _fates_of(run, 0, 101.004 + 1.1)["fates_by_kind"]["response"]["expired"] == 1
    assert _planned(sc, "shardlab", 0.25).expiry == 0.75  # layer.redis takes it as is


@pytest.mark.parametrize("load", [
    {"kind": "fixed", "rate": 2.0, "requests": 3},
    {"kind": "burst", "rate": 1.0, "burst_size": 2, "burst_interval": 1.5, "requests": 4},
    {"kind": "poisson", "rate": 5.0},
])
def test_the_load_ends_when_the_simulators_does(load):
    """Invariant: the replay's planned end of load and end of run are the simulator's
    (the wait after the last burst counted, a timed load lasting its duration), so a
    fault in that last gap is applied."""
    from sim.load import load_end
    from sim.runner import run_scenario
    from sim.scenario import scenario_from_dict

    sc = scenario_from_dict({"router": "fixed", "interface_servers": 1, "workers": 1,
                             "duration": 3.0, "drain": 0.2, "load": load,
                             "faults": [{"kind": "worker_crash", "at": 1.3,
                                         "target": "worker0", "duration": 0.1}]})
    run = _planned(sc)
    assert run.load_end == load_end(sc) > run.reqs[-1].t
    assert round(run.sim_end, 6) == run_scenario(sc)["end_time_s"]
    assert [a[2] for a in run.actions] == ["begin", "end"]  # both inside the run


# -- child side: which errors are retried ----------------------------------------------------

class _FailingLayer:
    def __init__(self, error: BaseException):
        self.error, self.calls = error, 0

    async def receive(self, channel):
        self.calls += 1
        raise self.error

    async def send(self, channel, message):
        raise self.error


def _node(small, role: str):
    from shardlab.replay_proc import _IfaceNode, _WorkerNode
    run = _planned(load_scenario(small, {"router": "fixed"}), scale=0.01)
    name = "iface0" if role == "iface" else "worker0"
    events: list = []
    cls = _IfaceNode if role == "iface" else _WorkerNode
    return cls(run._spec(name, 0), lambda *ev: events.append(ev)), events, run


@pytest.mark.parametrize("error, retried", [
    (ConnectionError("refused"), True), (OSError("no route"), True),
    (TypeError("a bug"), False), (ValueError("wrong client prefix"), False)])
def test_only_a_shard_down_or_cut_off_is_retried(small, error, retried):
    """Invariant: a receive that fails because its shard is down or cut off is tried
    again; any other error is reported to the parent (one "error" event naming it),
    which stops the run with ReplayError; a send failing so is reported too, and its
    "error" outcome is never given a fate."""
    import asyncio

    from shardlab.replay_proc import ReplayError

    node, events, run = _node(small, "iface")
    node.layer = layer = _FailingLayer(error)

    async def receiving():
        task = asyncio.create_task(node.await_reply(0, run.reqs[0].channel))
        await asyncio.sleep(0.2)
        finished = task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return finished
    finished = asyncio.run(receiving())
    assert finished is not retried
    assert (layer.calls > 2) is retried
    errors = [e for e in events if e[0] == "error"]
    assert errors == ([] if retried else [
        ("error", f"iface0: receive on {run.reqs[0].channel}: {type(error).__name__}: "
                  f"{error}")])
    outcome, _ = asyncio.run(node.send(layer, "http.request", {"id": 0}))
    assert (outcome == "error") is not retried
    if not retried:
        with pytest.raises(ReplayError, match="a replay process failed: iface0: send"):
            run._event(_Proc("iface0"), events[-1])
        worker, _, _ = _node(small, "worker")
        worker.layer = _FailingLayer(error)
        with pytest.raises(type(error)):  # out of run(): the child reports it and exits
            asyncio.run(worker.run(0.0))
        _serve(run, 0, 101.0, predicted="shard0", written="shard0", outcome="error")
        with pytest.raises(ReplayError, match="neither a full channel nor a shard down"):
            _fates_of(run, 0, 102.0)
