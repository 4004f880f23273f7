"""Tests for model.cli: the ``check`` subcommand's arguments, errors, output and JSON."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layer.routing import RouterError
from model import CheckError
from model.cli import add_check_parser, cmd_check
from sim.scenario import ScenarioError

ROOT = Path(__file__).resolve().parents[2]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"shardlab: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shardlab")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_check_parser(sub)
    return p


def run(argv, capsys):
    """What `shardlab check ARGV` does, through the real entry point: exit code,
    stdout, stderr."""
    from shardlab.cli import main
    try:
        code = main(["check", *argv])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, words", [
    (["--router", "nope"], ["--router 'nope' is unknown", "fixed"]),
    (["--faults", "expiry,meteor"], ["--faults 'meteor' is unknown", "shard_crash"]),
    (["--faults", ","], ["--faults ','", "allowed"]),
    (["--faults", "shard_crash,,expiry"], ["--faults 'shard_crash,,expiry'",
                                           "an empty name between commas"]),
    (["--faults", "none,expiry"], ["--faults 'none,expiry'", "'none' stands alone",
                                   "shard_crash"]),
    (["--shards", "0"], ["--shards '0'", "from 1 to 31"]),
    (["--servers", "two"], ["--servers 'two'", "integer"]),
    (["--draws", "0"], ["--draws '0'", "from 1 to 100"]),
    (["--max-states", "-5"], ["--max-states '-5'"]),
    (["--property", "liveness"], ["--property 'liveness' is unknown", "owner_only"]),
    (["--json", "/nonexistent/dir/out.json"], ["--json", "does not exist"]),
    (["/nonexistent.toml"], ["does not exist"]),
    ([str(ROOT / "sim/default.toml"), "--json", str(ROOT / "sim/default.toml")],
     ["is an input of this run"]),
])
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    """Invariant: bad input ends with one line on stderr naming the flag (or file), the
    value and what is allowed, exit code 2, and nothing on stdout."""
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("shardlab: error: ")
    for w in words:
        assert w in err


def test_scenario_values_out_of_range_name_the_scenario(tmp_path, capsys):
    """Invariant: a scenario's size beyond the model's range is named with its file;
    a flag overrides the scenario's value."""
    sc = tmp_path / "big.toml"
    sc.write_text('router = "fixed"\nworkers = 40\nshards = 2\ninterface_servers = 1\n')
    code, _, err = run([str(sc), "--draws", "1"], capsys)
    assert code == 2 and "workers in" in err and "big.toml" in err
    code, out, _ = run([str(sc), "--workers", "1", "--draws", "1", "--faults", "none",
                        "--requests-per-server", "1"], capsys)
    assert code == 0 and "fixed: 1 interface servers x 1 workers x 2 shards" in out


def test_json_shape(tmp_path, capsys):
    """Invariant: the JSON holds, per router, router, config, states, transitions,
    complete, and properties mapping each name to holds and counterexample (a list of
    numbered steps, or null), plus the separate loss_with_faults report."""
    path = tmp_path / "out.json"
    code, _, _ = run(["--router", "channels_redis-4", "--router", "fixed", "--draws", "2",
                      "--json", str(path), "--quiet"], capsys)
    assert code == 0
    data = json.loads(path.read_text())
    assert data["mode"] == "check" and [c["router"] for c in data["checks"]] == \
        ["channels_redis-4", "fixed"]
    for c in data["checks"]:
        assert {"router", "config", "states", "transitions", "complete", "properties",
                "loss_with_faults", "draws", "coverage", "symmetry"} <= set(c)
        assert set(c["properties"]) == {"rendezvous", "cluster_containment",
                                        "at_most_once", "owner_only", "no_silent_loss"}
        for e in c["properties"].values():
            assert e["holds"] in (True, False, "unknown")
            assert (e["counterexample"] is None) == (e["holds"] is not False)
        assert c["config"]["draws"] == 2 and len(c["draws"]) == 2
    steps = data["checks"][0]["properties"]["rendezvous"]["counterexample"]
    assert steps[0]["step"] == 1 and {"action", "actor", "verb", "text"} <= set(steps[0])


def test_a_large_configuration_is_warned_about(capsys):
    """A configuration far beyond the default gets a note on stderr naming the cap
    (--max-states) before the search starts; the default gets none."""
    code, _, err = run(["--router", "fixed", "--servers", "4", "--workers", "20",
                        "--max-states", "500", "--draws", "1", "--quiet"], capsys)
    assert code == 0 and "beyond what an exhaustive search finishes quickly" in err
    assert "--max-states (now 500 per draw)" in err
    code, _, err = run(["--router", "fixed", "--draws", "1", "--quiet"], capsys)
    assert code == 0 and "beyond" not in err


def test_json_dash_prints_only_the_json_on_stdout(tmp_path, capsys, monkeypatch):
    """Invariant: ``--json -`` puts the JSON document, and nothing else, on stdout, and
    writes no file named '-'."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["--router", "fixed", "--draws", "1", "--faults", "none",
                        "--json", "-"], capsys)
    assert code == 0 and not (tmp_path / "-").exists()
    data = json.loads(out)
    assert data["mode"] == "check" and data["checks"][0]["router"] == "fixed"


def test_one_router_prints_steps_and_a_sequence_diagram(capsys):
    """Invariant (done when): --router channels_redis-4 --shards 2 prints the shortest
    rendezvous counterexample as numbered steps and a diagram with the processes and
    shards as columns."""
    code, out, _ = run(["--router", "channels_redis-4", "--shards", "2"], capsys)
    assert code == 0
    assert "rendezvous: shortest counterexample, 4 steps (draw 1" in out
    assert "  4. worker0 sends the response on http.response." in out
    assert "[breaks rendezvous]" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
    # the processes that take a step, and every shard (there are few)
    assert header.split()[1:] == ["iface0", "shard0", "shard1", "worker0"]
    assert "not drawn (they take no step): iface1, worker1" in out


def test_a_large_configuration_draws_only_what_takes_part(capsys):
    """Invariant: with many shards and processes the diagram has a column only for
    what a step touches, and says how many it left out."""
    code, out, _ = run(["--router", "channels_redis-4", "--shards", "12", "--servers", "3",
                        "--workers", "5", "--draws", "1", "--requests-per-server", "1",
                        "--faults", "none"], capsys)
    assert code == 0
    header = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
    cols = header.split()[1:]
    assert len(cols) < 3 + 12 + 5 and len([c for c in cols if c.startswith("shard")]) <= 3
    assert "not drawn (they take no step):" in out and "shards" in out


def test_no_arguments_print_a_verdict_table_for_every_router(capsys):
    """Invariant (done when): with no arguments, one verdict row per router profile."""
    code, out, _ = run(["--draws", "1", "--faults", "none", "--requests-per-server", "1"],
                       capsys)
    assert code == 0
    for r in ("channels-2015", "channels_redis-4", "fixed", "channels_redis-pubsub"):
        assert f"  {r} " in out
    assert "shardlab check --router NAME" in out


def test_output_bytes_do_not_depend_on_pythonhashseed(tmp_path):
    """Invariant: the same arguments give the same JSON bytes under any PYTHONHASHSEED."""
    outs = []
    for seed in ("0", "4242"):
        path = tmp_path / f"{seed}.json"
        code = ("import sys; sys.argv=['x']; from tests.model.test_check_cli import parser;"
                f"a=parser().parse_args(['check','--router','channels_redis-pubsub-3.3',"
                f"'--router','channels-2015','--draws','2','--quiet','--json',{str(path)!r}]);"
                "a.func(a)")
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1]
