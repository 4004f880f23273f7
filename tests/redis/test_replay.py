"""`shardlab replay` on real Redis servers, and `shardlab compare`.

The replay of a small version of the default scenario (1 interface server, 3 workers,
40 requests at 50/s, 3 servers; every interface server and worker its own OS process)
is held against `sim.runner` on the same scenario: the misrouted share of responses
agrees within the sampling interval, through the installed channels_redis package and
through shardlab's own layer, and `fixed` misroutes none; response placement matches
the simulator's exactly, per channel name. Faults and SIGTERM: test_replay_faults.py.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("redis", reason="redis-py is not installed; pip install 'shardlab[real]'")

from shardlab.replay import compare_placement, compare_results, main  # noqa: E402
from shardlab.replay_proc import ReplayRun  # noqa: E402
from sim.runner import run_scenario  # noqa: E402
from redis_checks import redis_flags  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402

TIME_SCALE = "0.25"


def _simulate(path: str, router: str) -> dict:
    return {"mode": "sim", "runs": [run_scenario(load_scenario(path, {"router": router}),
                                                 placement=True)]}


def _misrouted_row(sim: dict, real: dict, router: str) -> dict:
    rows = {r["router"]: r for r in compare_results(sim, real)}
    return next(f for f in rows[router]["fates"]
                if f["kind"] == "response" and f["fate"] == "misrouted")


def _fates_add_up(run: dict) -> None:
    """Conservation, recomputed from the result's own counts: each kind's fates add up
    to what was sent, the totals are the kinds' sums, and no more replies were sent
    (duplicates aside) than requests were served."""
    by_kind = run["fates_by_kind"]
    for kind, fates in by_kind.items():
        assert sum(fates.values()) == run["sent"][kind], (kind, fates, run["sent"])
    assert run["fates"] == {f: sum(by_kind[k].get(f, 0) for k in by_kind)
                            for f in run["fates"]}
    assert (run["sent"]["response"] - by_kind["response"]["duplicate"]
            <= by_kind["request"]["delivered"])


def _check_run(run: dict) -> None:
    assert run["mode"] == "real" and run["processes"] == "separate"
    _fates_add_up(run)
    assert run["sent"]["request"] == 40
    assert "wall" in run and "elapsed_s" in run["wall"]


def test_channels_redis_replay_misroutes_as_simulated(redis_urls, small, tmp_path, capsys,
                                                     monkeypatch):
    """Invariant: through the installed channels_redis (channels_redis-4 rule) on 3 real
    servers, the misrouted share of responses lies inside the sampling interval of the
    simulation's, and is not zero (the #221 loss happens for real); fates add up; the
    placement reported is where the package's send wrote (what the servers hold at the
    end agrees), and it is the simulator's, per name."""
    pytest.importorskip("channels_redis.core", reason="channels_redis is not installed")
    held: dict = {}
    inspect = ReplayRun._inspect

    def recording(self):  # what the servers hold after the run, before its cleanup
        found, found_req, queued = inspect(self)
        held.update(found)
        return found, found_req, queued
    monkeypatch.setattr(ReplayRun, "_inspect", recording)
    out = tmp_path / "real.json"
    assert main(["replay", small, "--stack", "channels_redis", *redis_flags(redis_urls),
                 "--time-scale", TIME_SCALE, "--json", str(out), "--quiet"]) == 0
    real = json.loads(out.read_text())
    assert real["stack"] == "channels_redis" and real["time_scale"] == 0.25
    run = real["runs"][0]
    _check_run(run)
    assert run["fates_by_kind"]["response"]["misrouted"] > 0
    sim = _simulate(small, "channels_redis-4")
    row = _misrouted_row(sim, real, "channels_redis-4")
    assert row["inside"], row
    # The package hashes the same names the simulator does: every reply the real run
    # wrote is on the shard the simulator wrote it to. (Under load a request can still
    # be queued when the replay ends, as channels_redis workers stay on the shard they
    # chose, so the real run may write a few replies fewer: compared per name.)
    placed = compare_placement(sim["runs"][0], run)
    assert placed["method"] == "per name" and placed["only_b"] == 0
    assert placed["common"] == run["sent"]["response"] >= 30
    assert placed["same"] == placed["common"], placed["first_differences"]
    # A misrouted reply stays where the package wrote it (its owner waits elsewhere):
    # the servers hold each reply left over on the shard the placement names.
    placement = run["placement"]["response"]
    assert len(held) >= run["fates_by_kind"]["response"]["misrouted"] > 0
    assert held == {ch: {placement[ch]} for ch in held}


def test_shardlab_replay_misroutes_as_simulated_and_fixed_none(redis_urls, small, tmp_path):
    """Invariant: through layer.redis on 3 real servers, channels_redis-4's misrouted
    share lies inside the simulation's sampling interval, and `fixed` misroutes no
    response (rendezvous holds) and delivers every one."""
    out = tmp_path / "real.json"
    assert main(["replay", small, "--router", "channels_redis-4", "--router", "fixed",
                 *redis_flags(redis_urls), "--time-scale", TIME_SCALE,
                 "--json", str(out), "--quiet"]) == 0
    real = json.loads(out.read_text())
    runs = {r["router"]: r for r in real["runs"]}
    for run in runs.values():
        _check_run(run)
    assert runs["channels_redis-4"]["fates_by_kind"]["response"]["misrouted"] > 0
    row = _misrouted_row(_simulate(small, "channels_redis-4"), real, "channels_redis-4")
    assert row["inside"], row
    fixed = runs["fixed"]
    assert fixed["fates_by_kind"]["response"]["misrouted"] == 0
    assert fixed["invariants"]["rendezvous"]["holds"]
    # every reply written is delivered (a request still queued when the replay ends,
    # possible under load, has no reply yet)
    assert fixed["fates_by_kind"]["response"]["delivered"] == fixed["sent"]["response"] >= 30


def _result(router: str, sent: int, misrouted: int, p50: float) -> dict:
    fates = {"delivered": sent - misrouted, "misrouted": misrouted}
    return {"router": router, "sent": {"request": sent, "response": sent},
            "fates_by_kind": {"request": {"delivered": sent}, "response": fates},
            "latency_s": {"p50": p50, "p99": 2 * p50}}


def test_compare_side_by_side_with_interval(tmp_path, capsys):
    """Invariant: compare puts each fate's share side by side with the difference and
    says 'inside' exactly when |p2 - p1| <= 1.96 sqrt(p1 q1/n1 + p2 q2/n2)."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"mode": "sim", "runs": [_result("channels_redis-4", 40, 26, 0.07),
                                                      _result("fixed", 40, 0, 0.07)]}))
    b.write_text(json.dumps({"mode": "real", "stack": "shardlab",
                             "runs": [_result("channels_redis-4", 40, 24, 0.08),
                                      _result("fixed", 40, 10, 0.08)]}))
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "channels_redis-4" in text and "misrouted" in text and "real/shardlab" in text
    assert "65.0%" in text and "60.0%" in text and "70 ms" in text and "80 ms" in text
    rows = {r["router"]: r for r in json.loads(out.read_text())["routers"]}
    cr4 = next(f for f in rows["channels_redis-4"]["fates"] if f["fate"] == "misrouted")
    assert cr4["inside"] and cr4["difference"] == pytest.approx(-0.05)
    assert cr4["half_width"] == pytest.approx(1.96 * (0.65 * 0.35 / 40 + 0.6 * 0.4 / 40) ** 0.5)
    fixed = next(f for f in rows["fixed"]["fates"] if f["fate"] == "misrouted")
    assert fixed["inside"] is False  # 0/40 against 10/40: outside


@pytest.mark.parametrize("argv, needle", [
    (["compare", "/nonexistent/a.json", "/nonexistent/b.json"], "no such file"),
    (["compare", "@notjson", "@notjson"], "not JSON"),
    (["compare", "@nojson_runs", "@nojson_runs"], "not a run result"),
    (["replay", "@faults", "--redis", "redis://127.0.0.1:1/0", "--redis",
      "redis://127.0.0.1:2/0", "--redis", "redis://127.0.0.1:3/0"], "needs servers"),
    (["replay", "--redis-servers", "2", "--shards", "3"], "--redis-servers 2"),
    (["replay", "--stack", "channels_redis", "--router", "fixed"], "allowed: channels_redis-4"),
    (["replay", "--router", "asgi_redis-1", "--redis-servers", "3"],
     "--router asgi_redis-1: the replay reads back sorted-set storage only"),
    (["replay", "--time-scale", "0"], "--time-scale"),
    (["replay", "--redis", "redis://127.0.0.1:1/0", "--redis-servers", "3"], "not both"),
    (["replay", "--redis", "127.0.0.1:6379"], "not a redis://"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, needle):
    """Invariant: bad input (a missing or malformed result file, a shard crash on
    servers the replay did not start, a router the stack cannot honour, a bad flag)
    ends with one line on stderr and exit code 2, before any server is started."""
    files = {"@notjson": "{not json", "@nojson_runs": json.dumps({"runs": 3}),
             "@faults": '[[faults]]\nkind = "shard_crash"\nat = 1.0\ntarget = "shard1"\n'
                        'duration = 1.0\n'}
    args = []
    for a in argv:
        if a in files:
            p = tmp_path / (a[1:] + ".toml")
            p.write_text(files[a])
            a = str(p)
        args.append(a)
    try:
        code = main(args)
    except SystemExit as e:  # argparse errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err


IFACE_CRASHES = [
    # iface1 down twice (generations 0, 1, 2); iface2 down meanwhile: a draw of iface1
    # goes to iface2, or to iface0 while both are down ("the next one up")
    {"kind": "iface_crash", "at": 0.8, "target": "iface1", "duration": 1.0},
    {"kind": "iface_crash", "at": 1.2, "target": "iface2", "duration": 1.0},
    {"kind": "iface_crash", "at": 2.5, "target": "iface1", "duration": 0.5},
]


@pytest.mark.parametrize("overrides", [
    {"load": {"requests": 50}},
    {"interface_servers": 3, "load": {"kind": "poisson", "rate": 40.0, "requests": 150},
     "faults": IFACE_CRASHES},
], ids=["default", "iface_crashes"])
def test_replay_uses_the_simulators_names_and_arrivals(overrides):
    """Invariant: the requests a replay plans are the simulator's: same arrival times,
    same interface server and generation for each (the next one up while one is down),
    same reply channel names (each generation's prefix + local_token(n))."""
    sc = load_scenario(None, overrides)
    events = run_scenario(sc, events=True)["events"]
    simulated = [(round(e[1], 6), e[2], e[3], e[5]) for e in events if e[0] == "request"]
    run = ReplayRun(sc, ["redis://127.0.0.1:1/0"] * sc.shards, "shardlab", 1.0, "asgi")
    planned = [(round(r.t, 6), r.iface, r.gen, r.channel) for r in run.reqs]
    assert planned == simulated
    # what each interface server process is given is exactly that, per generation
    assert sorted((rid, t, ch) for part in run.plan.values() for rid, t, ch in part) == [
        (r.id, r.t, r.channel) for r in run.reqs]
    if sc.faults:
        assert {(r.iface, r.gen) for r in run.reqs} >= {("iface1", 2), ("iface2", 1)}
        assert len({r.iface for r in run.reqs if 1.2 < r.t < 1.8}) == 1  # iface0 alone


def test_servers_are_stopped_on_error(redis_binary):
    """Invariant: RedisServers answers PING once started and leaves no redis-server
    running when its block ends with an error (as with Ctrl-C)."""
    from shardlab.servers import RedisServers, ping

    servers = RedisServers(2, binary=redis_binary)
    with pytest.raises(RuntimeError, match="boom"):
        with servers:
            procs, ports = list(servers.procs), list(servers.ports)
            assert len(ports) == 2 and all(ping(p) for p in ports)
            raise RuntimeError("boom")
    assert all(p.poll() is not None for p in procs)
    assert not any(ping(p) for p in ports)


def test_compare_placement_per_name_and_per_shard():
    """Invariant: compare checks placement exactly: per channel name when both results
    hold a placement map, else the writes per shard and kind, and says which."""
    from shardlab.replay import compare_placement

    a = {"placement": {"response": {"x!0": "shard0", "x!1": "shard1", "x!2": "shard2"}},
         "shard_load": {"by_kind": {"request": {"shard0": 2}, "response": {"shard0": 3}}}}
    b = {"placement": {"response": {"x!0": "shard0", "x!1": "shard2", "x!9": "shard1"}},
         "shard_load": {"by_kind": {"request": {"shard0": 2}, "response": {"shard0": 4}}}}
    p = compare_placement(a, b)
    assert p["method"] == "per name" and (p["common"], p["same"]) == (2, 1)
    assert p["first_differences"] == [{"channel": "x!1", "a": "shard1", "b": "shard2"}]
    assert (p["only_a"], p["only_b"]) == (1, 1)
    del b["placement"]
    p = compare_placement(a, b)
    assert p["method"] == "per-shard counts"
    assert p["equal"] == {"request": True, "response": False}
    assert compare_placement({}, b) == {"method": None}
