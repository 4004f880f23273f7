"""The experiment framework: a sweep of points, replications over seeds, a verdict.

An `Experiment` answers one documented claim. It names the claim, builds its points
(a *series*, such as a router or a ring, and *params*, a mapping of factors applied
to a base scenario), measures one number per point and seed, and derives an analytic
``prediction`` per point (or None where no formula is derived). Its docstring says
Question, Scenario, Expected (with the formula) and How to read.

Replications and intervals
--------------------------
Each point is measured ``replications`` times, with seeds derived from the
experiment, the series, the params and the replication number (BLAKE2b of their
canonical JSON), never from the order points are run in: a parallel run gives the
same bytes as a serial one. ``value`` is the mean over seeds; ``low`` and ``high``
are the two-sided 95 % Student-t interval of that mean, ``mean +- t(0.975, r-1) *
s / sqrt(r)`` with ``s`` the sample standard deviation over the ``r`` seeds (the
interval is the mean itself when r = 1 or every seed gave the same value).

Agreement
---------
A point with a prediction *agrees* when ``|value - prediction| <= tolerance``, the
experiment's stated (and justified) tolerance for that point; a claim agrees when
all its predicted points do. `write_summary` writes ``summary.md`` from the JSON
results found in the output directory.

Result shape (one JSON object per experiment)::

    {"experiment": NAME,
     "points": [{"series": ..., "params": {...}, "value": ..., "low": ...,
                 "high": ..., "prediction": ... or null}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["Experiment", "Point", "ExperimentError", "run_experiment", "point_seed",
           "t_interval", "write_json", "write_plot", "write_summary", "agreement",
           "atomic_write", "MAX_WORKERS"]

#: Local worker processes for a sweep (this machine has two cores).
MAX_WORKERS = 2


class ExperimentError(ValueError):
    """Bad input to an experiment command; the message is one line."""


@dataclass(frozen=True)
class Point:
    """One point of a sweep: a series name and the factors that define it."""

    series: str
    params: dict[str, Any]
    prediction: float | None = None


class Experiment:
    """A claim, a sweep and the way to measure and predict each point.

    Subclasses (one per file in `experiments/`) set the class attributes and
    implement `points` and `measure`; `tolerance` may depend on the point.
    """

    name = ""
    claim = ""
    title = ""
    xparam = ""            # the params key drawn on the x axis
    xlabel = ""
    ylabel = ""
    xscale = "linear"      # matplotlib axis scales for the plot; "symlog" on y uses
    yscale = "linear"      # ylinthresh as its linear range around 0
    ylinthresh = 0.01
    replications_quick = 5
    replications_full = 10
    _tol = 0.0

    def __init__(self, quick: bool = False):
        self.quick = quick

    @property
    def replications(self) -> int:
        return self.replications_quick if self.quick else self.replications_full

    def points(self) -> list[Point]:  # pragma: no cover - abstract
        raise NotImplementedError

    def measure(self, point: Point, seed: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def seed_point(self, point: Point) -> Point:
        """The point whose identity seeds ``point``'s replications (itself by default).

        An experiment whose series are several counts of one run returns a point
        without the series, so every series of a replication reads the same run.
        """
        return point

    def tolerance(self, point: Point) -> float:
        """Largest ``|value - prediction|`` that still counts as agreement."""
        return self._tol

    def tolerance_note(self) -> str:
        """One sentence: how the tolerance was chosen (for the summary)."""
        return f"|value - prediction| <= {self._tol:g}"


# -- seeds and statistics -----------------------------------------------------------

def point_seed(experiment: str, point: Point, replication: int) -> int:
    """A seed from the point's identity alone (never from the order of the sweep)."""
    key = json.dumps([experiment, point.series, point.params, replication],
                     sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(key.encode("utf8"), digest_size=6).digest(), "big")


# Two-sided 95 % quantiles of Student's t, t(0.975, df), df = 1..30 (standard table).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95 % Student-t interval of the mean of ``values``.

    Beyond 30 degrees of freedom the normal quantile 1.96 is used.
    """
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, mean, mean
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * math.sqrt(var / n)
    return mean, mean - half, mean + half


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


# -- running ------------------------------------------------------------------------

def _measure_point(exp: Experiment, point: Point) -> list[float]:
    key = exp.seed_point(point)
    return [float(exp.measure(point, point_seed(exp.name, key, r)))
            for r in range(exp.replications)]


def _point_result(point: Point, values: list[float]) -> dict[str, Any]:
    mean, low, high = t_interval(values)
    return {"series": point.series, "params": dict(point.params), "value": _round(mean),
            "low": _round(low), "high": _round(high), "prediction": _round(point.prediction)}


def run_experiment(exp: Experiment, workers: int = MAX_WORKERS,
                   progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run every point of ``exp`` and return its result object.

    Points run on ``workers`` local processes (1: in this process); the result does
    not depend on ``workers``. ``progress`` is called with 1 as each point finishes.
    """
    points = exp.points()
    results: list[list[float] | None] = [None] * len(points)
    if workers <= 1 or len(points) <= 1:
        for i, p in enumerate(points):
            results[i] = _measure_point(exp, p)
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=min(workers, MAX_WORKERS)) as pool:
            futures = {pool.submit(_measure_point, exp, p): i for i, p in enumerate(points)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress:
                    progress(1)
    return {"experiment": exp.name,
            "points": [_point_result(p, v) for p, v in zip(points, results)]}


def agreement(exp: Experiment, result: dict[str, Any]) -> tuple[int, int, float]:
    """(points that agree, points with a prediction, worst |value - prediction|)."""
    ok = total = 0
    worst = 0.0
    for pt in result["points"]:
        if pt["prediction"] is None:
            continue
        total += 1
        dev = abs(pt["value"] - pt["prediction"])
        worst = max(worst, dev)
        point = Point(pt["series"], pt["params"], pt["prediction"])
        if dev <= exp.tolerance(point) + 1e-9:
            ok += 1
    return ok, total, worst


# -- output -------------------------------------------------------------------------

def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for reading
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(result: dict[str, Any], path: Path) -> None:
    atomic_write(path, (json.dumps(result, indent=2, sort_keys=False) + "\n").encode("utf8"))


def write_plot(exp: Experiment, result: dict[str, Any], path: Path) -> None:
    """One PNG: each series with its 95 % interval, its prediction dashed beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    series: dict[str, list[dict]] = {}
    for pt in result["points"]:
        series.setdefault(pt["series"], []).append(pt)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, pts) in enumerate(series.items()):
        color = colors[i % len(colors)]
        pts = sorted(pts, key=lambda p: p["params"][exp.xparam])
        xs = [p["params"][exp.xparam] for p in pts]
        ys = [p["value"] for p in pts]
        err = [[p["value"] - p["low"] for p in pts], [p["high"] - p["value"] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, color=color, marker="o", ms=4, capsize=3,
                    label=f"{name}: simulated (95% CI)")
        pred = [(x, p["prediction"]) for x, p in zip(xs, pts) if p["prediction"] is not None]
        if pred:
            ax.plot([x for x, _ in pred], [y for _, y in pred], color=color, ls="--",
                    marker="x", ms=6, alpha=0.8, label=f"{name}: predicted")
    ax.set_xscale(exp.xscale)
    if exp.xscale == "log":  # plain numbers at the swept values, not powers of ten
        ax.set_xticks(sorted({p["params"][exp.xparam] for p in result["points"]}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if exp.yscale == "symlog":  # for non-negative figures: 0 at the bottom
        ax.set_yscale("symlog", linthresh=exp.ylinthresh)
        ax.set_ylim(bottom=0)
    else:
        ax.set_yscale(exp.yscale)
    ax.set_title(exp.title or exp.name)
    ax.set_xlabel(exp.xlabel)
    ax.set_ylabel(exp.ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


def write_summary(experiments: Iterable[Experiment], out: Path) -> Path:
    """``out/summary.md``: each claim whose JSON is in ``out``, agrees or disagrees.

    Tolerances are those of the given instances (quick or full), so a directory
    should hold the results of one mode.
    """
    lines = ["# shardlab experiments: summary", "",
             "Each claim, the simulated result against its derived prediction. Intervals "
             "are two-sided 95 % Student-t intervals over seeds; a point agrees when "
             "|value - prediction| is within the experiment's stated tolerance.", ""]
    for exp in experiments:
        path = out / f"{exp.name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text("utf8"))
        ok, total, worst = agreement(exp, result)
        if total == 0:
            verdict = "no prediction"
        elif ok == total:
            verdict = "agrees"
        else:
            verdict = "disagrees"
        lines += [f"## {exp.name}: {verdict}", "",
                  f"Verdict compares the simulation with the derived prediction; "
                  "whether the documented claim itself holds is said below.", "",
                  f"- Claim: {exp.claim}",
                  f"- Points: {len(result['points'])}; with a prediction: {total}; "
                  f"within tolerance: {ok}; largest |value - prediction|: {worst:.4g}",
                  f"- Tolerance: {exp.tolerance_note()}"]
        notes = exp.findings(result) if hasattr(exp, "findings") else []
        lines += [f"- {n}" for n in notes]
        if total and ok < total:
            bad = [pt for pt in result["points"] if pt["prediction"] is not None
                   and abs(pt["value"] - pt["prediction"])
                   > exp.tolerance(Point(pt["series"], pt["params"], pt["prediction"])) + 1e-9]
            for pt in bad[:5]:
                lines.append(f"- Disagrees at {pt['series']} {pt['params']}: simulated "
                             f"{pt['value']:.4g} [{pt['low']:.4g}, {pt['high']:.4g}], "
                             f"predicted {pt['prediction']:.4g}")
        lines += [f"- Files: `{exp.name}.json`, `{exp.name}.png`", ""]
    path = out / "summary.md"
    atomic_write(path, "\n".join(lines).encode("utf8"))
    return path
