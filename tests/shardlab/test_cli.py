"""shardlab.cli: ``run`` and ``route`` through the real entry point; bad input, --json."""

import json
from pathlib import Path

import pytest

from shardlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--shards", "2", "--requests", "40"]


def cli(argv, capsys):
    """Exit code, stdout and stderr of ``shardlab ARGV``."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, words", [
    (["run", "--router", "nope"], ["--router", "'nope' is unknown", "fixed"]),
    (["run", "--shards", "0"], ["--shards", "'0'", "from 1 to 64"]),
    (["run", "--shards", "65"], ["--shards", "'65'", "from 1 to 64"]),
    (["run", "--requests", "0"], ["--requests", "'0'", "from 1 to 10000000"]),
    (["run", "--requests", "99999999999"], ["--requests", "from 1 to 10000000"]),
    (["run", "--seed", "x"], ["--seed", "'x'", "integer"]),
    (["run", "/nonexistent.toml"], ["/nonexistent.toml", "does not exist"]),
    (["run", "--json", "/nonexistent/dir/out.json"], ["--json", "does not exist"]),
    (["run", "--json", ""], ["--json ''", "file name"]),
    (["route", "http.response.ab!c", "--hosts", "0"], ["--hosts", "'0'", "from 1 to 64"]),
    (["route", "bad name!", "--router", "fixed"], ["bad name!", "fixed"]),
    (["route", "x", "--hash-seeds", "1"], ["--hash-seeds", "SENDER,LISTENER"]),
    (["run", str(ROOT / "scenarios/field/01-direct-send-specific.toml"), "--requests", "5"],
     ["--requests 5", "has no client load", "allowed only with interface servers"]),
    (["run", "--nope"], ["unrecognized arguments: --nope", "'shardlab run --help'"]),
    (["experiment", "list", "--bogus"], ["--bogus", "'shardlab experiment list --help'"]),
])
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    """Invariant: bad input is one line on stderr naming the flag or file, the value and
    what is allowed; exit code 2; nothing on stdout."""
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("shardlab: error: ")
    for w in words:
        assert w in err


def test_a_failed_run_leaves_an_existing_output_untouched(tmp_path, capsys):
    """Invariant: outputs are written whole or not at all."""
    path = tmp_path / "out.json"
    path.write_text("keep")
    code, _, _ = cli(["run", "--router", "fixed", "--seed", "-1", "--json", str(path)], capsys)
    assert code == 2 and path.read_text() == "keep"


def test_json_file_and_json_dash_hold_the_same_document(tmp_path, capsys, monkeypatch):
    """Invariant: ``--json -`` prints exactly the bytes ``--json FILE`` writes, and
    nothing else on stdout; no file named '-' appears."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "out.json"
    code, out, _ = cli(["run", "--router", "fixed", *SMALL, "--json", str(path)], capsys)
    assert code == 0 and "fixed" in out  # the table is still printed
    code, out, _ = cli(["run", "--router", "fixed", *SMALL, "--json", "-"], capsys)
    assert code == 0 and out == path.read_text()
    assert not (tmp_path / "-").exists()
    data = json.loads(out)
    assert data["mode"] == "sim" and data["runs"][0]["sent"]["request"] == 40


def test_run_json_shows_the_channels_redis_4_loss_and_none_for_fixed(capsys):
    """The headline through the CLI: responses misrouted with channels_redis-4 on 2
    shards, none with fixed (the exact count is pinned in tests/sim/test_world.py)."""
    code, out, _ = cli(["run", "--router", "channels_redis-4", *SMALL, "--json", "-"], capsys)
    run = json.loads(out)["runs"][0]
    assert run["fates_by_kind"]["response"]["misrouted"] > 0
    code, out, _ = cli(["run", "--router", "fixed", *SMALL, "--json", "-"], capsys)
    assert json.loads(out)["runs"][0]["fates_by_kind"]["response"]["misrouted"] == 0


def test_route_json_names_send_and_listen_shards(capsys):
    code, out, _ = cli(["route", "specific.AbCdEf!xyz", "--router", "channels_redis-4",
                        "--router", "fixed", "--hosts", "4", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["router"] for r in rows] == ["channels_redis-4", "fixed"]
    fixed = rows[1]
    assert fixed["meets"] is True and fixed["send_shard"] in fixed["listen_shards"]
    assert all(0 <= s < 4 for r in rows for s in r["listen_shards"])


def test_route_json_goes_to_stdout_or_to_a_file(tmp_path, capsys):
    """``route --json`` prints the rows; ``--json PATH`` writes the same bytes there."""
    code, out, _ = cli(["route", "http.request", "--router", "fixed", "--json"], capsys)
    assert code == 0 and json.loads(out)[0]["name"] == "http.request"
    path = tmp_path / "rows.json"
    code, printed, _ = cli(["route", "http.request", "--router", "fixed", "--json",
                            str(path)], capsys)
    assert code == 0 and printed == "" and path.read_text() == out
