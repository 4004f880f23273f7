"""Quick runs of every experiment: result shape, agreement, summary, plots."""

from __future__ import annotations

import io
import json

import pytest

from experiments import registry
from experiments.base import Point, agreement
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
    """Every result is one object with exactly `experiment` and `points`; every point
    has exactly series, params, value, low, high, prediction, with low <= value <= high."""
    data = json.loads((quick_dir / f"{name}.json").read_text())
    assert list(data) == ["experiment", "points"]
    assert data["experiment"] == name
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
    """summary.md has one section per experiment, its claim and its verdict."""
    text = (quick_dir / "summary.md").read_text()
    for name, cls in registry().items():
        assert f"## {name}: agrees" in text
        assert cls.claim in text
    assert "does not hold for channels-2015, channels_redis-4" in text


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
