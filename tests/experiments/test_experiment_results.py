"""Quick runs of every experiment: result shape, agreement, summary, plots, and the
verdicts on the documented claims."""

from __future__ import annotations

import copy
import io
import json

import pytest

from experiments import registry
from experiments.base import DOES_NOT_HOLD, HOLDS, Point, agreement
from experiments.cli import run_all

POINT_KEYS = ["series", "params", "value", "low", "high", "prediction"]


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    run_all(list(registry().values()), out, quick=True, workers=2, show_progress=False,
            stream=io.StringIO())
    return out


@pytest.mark.parametrize("name", list(registry()))
def test_json_has_the_exact_shape(quick_dir, name):
    """Every result is one object: `experiment`, the run's mode (`quick`), the seeds per
    point, the tolerance statement, `points`, and the summary's two `verdicts`; every point has exactly series,
    params, value, low, high, prediction, with low <= value <= high."""
    data = json.loads((quick_dir / f"{name}.json").read_text())
    assert list(data) == ["experiment", "quick", "seeds", "tolerance", "points", "verdicts"]
    assert set(data["verdicts"]) == {"simulation", "points_agreeing", "points_predicted",
                                     "claim", "why"}
    assert data["experiment"] == name
    exp = registry()[name](quick=True)
    assert data["quick"] is True and data["seeds"] == exp.replications
    assert data["tolerance"] == exp.tolerance_note()
    assert data["points"]
    for pt in data["points"]:
        assert list(pt) == POINT_KEYS
        assert isinstance(pt["series"], str) and isinstance(pt["params"], dict)
        assert all(isinstance(pt[k], float) for k in ("value", "low", "high"))
        assert pt["prediction"] is None or isinstance(pt["prediction"], float)
        assert pt["low"] <= pt["value"] <= pt["high"]


@pytest.mark.parametrize("name", list(registry()))
def test_every_prediction_agrees_within_tolerance(quick_dir, name):
    """Each point with a derived prediction is within the experiment's stated tolerance."""
    exp = registry()[name](quick=True)
    data = json.loads((quick_dir / f"{name}.json").read_text())
    bad = [(p["series"], p["params"], p["value"], p["prediction"],
            exp.tolerance(Point(p["series"], p["params"], p["prediction"])))
           for p in data["points"] if p["prediction"] is not None
           and abs(p["value"] - p["prediction"])
           > exp.tolerance(Point(p["series"], p["params"], p["prediction"])) + 1e-9]
    assert bad == []
    ok, total, _ = agreement(exp, data)
    assert total > 0 and ok == total


@pytest.mark.parametrize("name", list(registry()))
def test_plot_is_a_png(quick_dir, name):
    """Every experiment writes a non-trivial PNG beside its JSON."""
    data = (quick_dir / f"{name}.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_summary_lists_each_claim(quick_dir):
    """summary.md has one section per experiment with its claim, one line on whether
    the documented claim holds and a separate one on simulation vs prediction."""
    text = (quick_dir / "summary.md").read_text()
    for name, cls in registry().items():
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert cls.claim in section
        assert "- Simulation vs prediction: agrees:" in section
        claim = [ln for ln in section.splitlines() if ln.startswith("- Documented claim: ")]
        assert len(claim) == 1 and "Why: " in claim[0]
        verdict = claim[0].split("**")[1]
        assert verdict in (HOLDS, DOES_NOT_HOLD) or verdict.startswith("holds only")
        assert f"| `{name}` | agrees | {verdict} |" in text
    assert ("**holds only for asgi_redis-1.0, asgi_redis-1, channels_redis-2.0, fixed**"
            in text)


def _doctored(quick_dir, name, change):
    """The quick result of ``name`` with ``change(point)`` applied to every point."""
    data = copy.deepcopy(json.loads((quick_dir / f"{name}.json").read_text()))
    for pt in data["points"]:
        change(pt)
    return registry()[name](quick=True).claim_verdict(data)[0]


def _set(pt, value):
    pt["value"] = pt["low"] = pt["high"] = value


def test_rendezvous_verdict_follows_the_numbers(quick_dir):
    """Rendezvous holds only for the profiles that misroute nothing; with the two
    misrouting profiles' values set to 0 it holds; with every profile misrouting, not."""
    assert _doctored(quick_dir, "rendezvous", lambda p: None).startswith("holds only for")
    assert _doctored(quick_dir, "rendezvous", lambda p: _set(p, 0.0)) == HOLDS
    assert _doctored(quick_dir, "rendezvous", lambda p: p["params"]["shards"] > 1
                     and _set(p, 0.5)) == DOES_NOT_HOLD


def test_shard_failure_verdict_follows_the_numbers(quick_dir):
    """Shard failure: holds only for the losses while the healthy shards starve; a
    duplicate breaks at most once; every spared request answered makes it hold."""
    assert _doctored(quick_dir, "shard-failure", lambda p: None) == \
        "holds only for what the failed shard holds"
    assert _doctored(quick_dir, "shard-failure", lambda p: p["series"] == "duplicates"
                     and _set(p, 2.0)) == DOES_NOT_HOLD

    def all_answered(p):
        if p["series"] == "delivered":
            _set(p, 200.0 * (2.0 + p["params"]["down_s"] + 3.0))
    assert _doctored(quick_dir, "shard-failure", all_answered) == HOLDS


def test_receive_latency_verdict_follows_the_numbers(quick_dir):
    """Receive latency: one shard per receive costs latency at every W swept; with its
    means set to those of the wait-on-all receiver the claim does not hold."""
    assert _doctored(quick_dir, "receive-latency", lambda p: None) == HOLDS
    data = json.loads((quick_dir / "receive-latency.json").read_text())
    every = {p["params"]["workers"]: p for p in data["points"]
             if p["series"] == "mean latency, 3 shards, wait on all"}

    def no_cost(p):
        if p["series"] == "mean latency, 3 shards, one per receive":
            ref = every[p["params"]["workers"]]
            p["value"], p["low"], p["high"] = ref["value"], ref["low"], ref["high"]
    assert _doctored(quick_dir, "receive-latency", no_cost) == DOES_NOT_HOLD


def test_peaky_traffic_verdict_follows_the_numbers(quick_dir):
    """Peaky traffic holds only with a long expiry while requests expire in the queue;
    with no expiry loss it holds; a ChannelFull count off by one breaks it."""
    assert _doctored(quick_dir, "peaky-traffic", lambda p: None).startswith("holds only")
    assert _doctored(quick_dir, "peaky-traffic", lambda p: p["series"].startswith("expired")
                     and _set(p, 0.0)) == HOLDS
    assert _doctored(quick_dir, "peaky-traffic", lambda p: p["prediction"] is not None
                     and _set(p, p["prediction"] + 1.0)) == DOES_NOT_HOLD


def test_no_temp_files_left(quick_dir):
    """Outputs are written whole (temp file, then rename): no temp file remains."""
    assert sorted(p.name for p in quick_dir.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_full_run_agrees(tmp_path):
    """The full (non-quick) sweeps agree with every prediction too (about 3 min on 2 cores)."""
    results = run_all(list(registry().values()), tmp_path, quick=False, workers=2,
                      show_progress=False, stream=io.StringIO())
    for result in results:
        exp = registry()[result["experiment"]](quick=False)
        ok, total, _ = agreement(exp, result)
        assert ok == total > 0, result["experiment"]
