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

Agreement and the documented claim
----------------------------------
Two separate verdicts. The simulation *agrees* with the model when every point with
a prediction has ``|value - prediction| <= tolerance``, the experiment's stated (and
justified) tolerance for that point. Whether the *documented claim* holds is a
second question, answered by each experiment's `Experiment.claim_verdict` from the
run's numbers: "holds", "does not hold" or "holds only ..." with the reason (a
simulation can agree with a prediction that says the documentation is wrong).
`write_summary` writes ``summary.md`` from the JSON results found in the output
directory.

Where points run
----------------
On ``workers`` local processes (`concurrent.futures.ProcessPoolExecutor`), in this
process (``workers=1``), or on a Dask distributed cluster (``client``, a
``distributed.Client``; its workers must be able to import ``experiments``, as a
``LocalCluster`` in the same environment can). Each point is the same task either
way and the results are put back in point order, so the bytes do not depend on it.

Result shape (one JSON object per experiment)::

    {"experiment": NAME, "quick": true | false, "seeds": r,
     "tolerance": "how agreement is judged (one sentence)",
     "points": [{"series": ..., "params": {...}, "value": ..., "low": ...,
                 "high": ..., "prediction": ... or null}, ...]}
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import signal
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["Experiment", "Point", "ExperimentError", "run_experiment", "point_seed",
           "t_interval", "write_result", "render_plot", "write_summary", "agreement",
           "atomic_write", "MAX_WORKERS", "HOLDS", "DOES_NOT_HOLD", "UNKNOWN", "by_series",
           "agrees_at"]

#: Local worker processes for a sweep (this machine has two cores).
MAX_WORKERS = 2


class ExperimentError(ValueError):
    """Bad input to an experiment command; the message is one line."""


#: The verdicts on a documented claim (a third kind starts with "holds only").
HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
#: The verdict when the result holds nothing to judge the claim by.
UNKNOWN = "unknown"


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

    def claim_verdict(self, result: dict[str, Any]) -> tuple[str, str]:
        """Whether the documented claim holds in ``result``: (verdict, why).

        ``verdict`` is ``HOLDS``, ``DOES_NOT_HOLD``, a phrase starting with "holds
        only", or ``UNKNOWN`` when nothing tests it; ``why`` gives the numbers it rests
        on. Computed from the result's
        values, never fixed text. Experiments override it; this default applies to a
        claim that *is* the prediction: it holds when every predicted point agrees.
        """
        ok, total, worst = agreement(self, result)
        if total == 0:
            return UNKNOWN, "no point has a prediction to test the claim against."
        if ok == total:
            return HOLDS, (f"all {total} predicted points agree (largest deviation "
                           f"{worst:.3g}).")
        return DOES_NOT_HOLD, f"{total - ok} of {total} predicted points disagree."

    def findings(self, result: dict[str, Any]) -> list[str]:
        """Further sentences for the summary, quoting the result's numbers."""
        return []


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


def _run_on_dask(client, exp: Experiment, points: list[Point],
                 progress: Callable[[int], None] | None) -> list[list[float]]:
    """Each point as one task on the Dask cluster behind ``client``, in point order."""
    from distributed import as_completed as dask_completed
    # pure=False: a fresh key per run, never a result cached from another mode
    futures = [client.submit(_measure_point, exp, p, pure=False) for p in points]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[list[float] | None] = [None] * len(points)
    try:
        for fut in dask_completed(futures, loop=client.loop):
            results[index[fut.key]] = fut.result()
            if progress:
                progress(1)
    except ImportError as e:  # the worker's environment lacks shardlab
        raise ExperimentError(
            f"a Dask worker cannot import what {exp.name} needs ({e}): install shardlab "
            "in the workers' environment (pip install 'shardlab[dask]')") from None
    finally:
        client.cancel([f for f in futures if not f.done()])
    return results  # type: ignore[return-value]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (they ignore SIGINT)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(5)


def run_experiment(exp: Experiment, workers: int = MAX_WORKERS,
                   progress: Callable[[int], None] | None = None,
                   client=None) -> dict[str, Any]:
    """Run every point of ``exp`` and return its result object.

    Points run on ``workers`` local processes (1: in this process), or as tasks on a
    Dask cluster when ``client`` (a ``distributed.Client``) is given; the result does
    not depend on where. ``progress`` is called with 1 as each point finishes.
    """
    points = exp.points()
    results: list[list[float] | None] = [None] * len(points)
    if client is not None:
        results = _run_on_dask(client, exp, points, progress)
    elif workers <= 1 or len(points) <= 1:
        for i, p in enumerate(points):
            results[i] = _measure_point(exp, p)
            if progress:
                progress(1)
    else:
        pool = ProcessPoolExecutor(max_workers=min(workers, MAX_WORKERS),
                                   initializer=_ignore_sigint)
        try:
            # Workers are started by submit(): with SIGINT ignored meanwhile, they are
            # born ignoring it, so Ctrl-C (sent to the whole process group) reaches
            # this process only, which then stops them.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                futures = {pool.submit(_measure_point, exp, p): i
                           for i, p in enumerate(points)}
            finally:
                signal.signal(signal.SIGINT, previous)
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress:
                    progress(1)
        except BaseException:
            _stop_pool(pool)
            raise
        pool.shutdown()
    result = {"experiment": exp.name, "quick": bool(exp.quick), "seeds": exp.replications,
              "tolerance": exp.tolerance_note(),
              "points": [_point_result(p, v) for p, v in zip(points, results)]}
    ok, total, _ = agreement(exp, result)
    claim, why = exp.claim_verdict(result)
    # the two verdicts summary.md gives, for a program reading the JSON alone
    result["verdicts"] = {
        "simulation": "no prediction" if total == 0 else "agrees" if ok == total
        else "disagrees", "points_agreeing": ok, "points_predicted": total,
        "claim": claim, "why": why}
    return result


def by_series(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The result's points grouped by series, in the order they appear."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pt in result["points"]:
        out.setdefault(pt["series"], []).append(pt)
    return out


def agreement(exp: Experiment, result: dict[str, Any]) -> tuple[int, int, float]:
    """(points that agree, points with a prediction, worst |value - prediction|)."""
    ok = total = 0
    worst = 0.0
    for pt in result["points"]:
        if pt["prediction"] is None:
            continue
        total += 1
        worst = max(worst, abs(pt["value"] - pt["prediction"]))
        ok += agrees_at(exp, pt)
    return ok, total, worst


def agrees_at(exp: Experiment, pt: dict[str, Any]) -> bool:
    """Whether result point ``pt`` (with a prediction) is within its tolerance."""
    point = Point(pt["series"], pt["params"], pt["prediction"])
    return abs(pt["value"] - pt["prediction"]) <= exp.tolerance(point) + 1e-9


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


def _json_bytes(result: dict[str, Any]) -> bytes:
    return (json.dumps(result, indent=2, sort_keys=False) + "\n").encode("utf8")


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "h")


def _dodges(exp: Experiment, result: dict[str, Any], names: list[str]) -> dict:
    """x offsets, per (series, x), that set series with coinciding values side by side.

    At each swept x the series whose simulated values (and predictions) lie within 2 %
    of the y range of one another form a group; a group of m > 1 is spread over 60 %
    of the closest spacing of the swept values (a ratio on a log axis), in series
    order. Series that stand apart keep their x.
    """
    def ty(y: float) -> float:  # compare on the axis' own scale
        if exp.yscale == "symlog":
            return math.copysign(math.log10(1 + abs(y) / exp.ylinthresh), y)
        if exp.yscale == "log":
            return math.log10(y) if y > 0 else -12.0
        return y

    grid = sorted({p["params"][exp.xparam] for p in result["points"]})
    log = exp.xscale == "log"
    if log:
        ratios = [b / a for a, b in zip(grid, grid[1:]) if a > 0]
        # narrower than on a linear axis: a wide ratio reads as another swept value
        spread = 0.3 * math.log(min(ratios)) if ratios else 0.1
    else:
        gaps = [b - a for a, b in zip(grid, grid[1:])]
        spread = 0.6 * min(gaps) if gaps else 0.2
    ys = [ty(v) for p in result["points"] for v in (p["value"], p["prediction"])
          if v is not None]
    eps = 0.02 * ((max(ys) - min(ys)) if ys else 1.0) or 1e-12
    order = {n: i for i, n in enumerate(names)}
    at: dict[Any, list[tuple[int, str, float, float | None]]] = {}
    for p in result["points"]:
        pred = p["prediction"]
        at.setdefault(p["params"][exp.xparam], []).append(
            (order[p["series"]], p["series"], ty(p["value"]),
             None if pred is None else ty(pred)))
    out: dict = {}
    for x, members in at.items():
        groups: list[list[tuple]] = []
        for m in sorted(members):
            for g in groups:
                if abs(g[0][2] - m[2]) <= eps and (g[0][3] is None or m[3] is None
                                                    or abs(g[0][3] - m[3]) <= eps):
                    g.append(m)
                    break
            else:
                groups.append([m])
        for g in groups:
            for k, m in enumerate(g):
                step = (k - (len(g) - 1) / 2) / max(len(g) - 1, 1) if len(g) > 1 else 0.0
                out[(m[1], x)] = x * math.exp(step * spread) if log else x + step * spread
    return out


def render_plot(exp: Experiment, result: dict[str, Any]) -> bytes:
    """One PNG (returned as bytes): each series' simulated mean with its 95 % interval (filled markers,
    solid line) and, drawn above it, its prediction (hollow markers, dashed line), so
    that both stay visible where they agree. Series whose values coincide at a swept
    x (several at 0, say) are set side by side in x, with a note saying so."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(12, 6), dpi=100)
    series = by_series(result)
    names = list(series)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_xs = [p["params"][exp.xparam] for p in result["points"]]
    log = exp.xscale == "log"
    dodge = _dodges(exp, result, names)
    handles = []
    for i, (name, pts) in enumerate(series.items()):
        color, marker = colors[i % len(colors)], _MARKERS[i % len(_MARKERS)]
        pts = sorted(pts, key=lambda p: p["params"][exp.xparam])
        xs = [dodge[(name, p["params"][exp.xparam])] for p in pts]
        ys = [p["value"] for p in pts]
        err = [[p["value"] - p["low"] for p in pts], [p["high"] - p["value"] for p in pts]]
        handles.append(ax.errorbar(xs, ys, yerr=err, color=color, marker=marker, ms=4.5,
                                   capsize=3, lw=1.4, zorder=2,
                                   label=f"{name}: simulated (mean, 95 % CI)"))
        pred = [(x, p["prediction"]) for x, p in zip(xs, pts) if p["prediction"] is not None]
        if pred:
            handles.append(ax.plot([x for x, _ in pred], [y for _, y in pred], color=color,
                                   ls=(0, (4, 3)), lw=1.2, marker=marker, ms=9, mfc="none",
                                   mew=1.5, alpha=0.9, zorder=3,
                                   label=f"{name}: predicted")[0])
    moved = any(abs(v - k[1]) > 1e-12 for k, v in dodge.items())
    ax.set_xscale(exp.xscale)
    if log:  # plain numbers at the swept values, not powers of ten
        ax.set_xticks(sorted(set(all_xs)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    elif len(set(all_xs)) <= 12:
        ax.set_xticks(sorted(set(all_xs)))
    if exp.yscale == "symlog":  # for non-negative figures: 0 near the bottom, and
        ax.set_yscale("symlog", linthresh=exp.ylinthresh)  # room for markers at 0
        top = max([v for p in result["points"] for v in (p["high"], p["prediction"])
                   if v is not None] + [exp.ylinthresh])
        ax.set_ylim(bottom=-0.4 * exp.ylinthresh, top=top * 1.6)  # no marker on the edge
    else:
        ax.set_yscale(exp.yscale)
    mode = "quick" if result.get("quick", exp.quick) else "full"
    seeds = result.get("seeds", exp.replications)
    ax.set_title(f"{exp.title or exp.name}\n{exp.name}: {mode} run, {seeds} seeds per point",
                 fontsize=11)
    ax.set_xlabel(exp.xlabel)
    ax.set_ylabel(exp.ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0, title="filled: simulated; hollow, dashed: predicted"
              + ("\nseries with equal values set side by side in x" if moved else ""),
              title_fontsize=7)
    note = ("Where series have equal values at a swept x (several at 0, say) they are set "
            "side by side around it, in legend order; the ticks mark the swept values."
            if moved else "")
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def write_result(exp: Experiment, result: dict[str, Any], out: Path) -> None:
    """``out/NAME.json`` and ``out/NAME.png``: both made in memory first, then each
    written whole; a file that cannot be written is named in an `ExperimentError`."""
    files = {out / f"{exp.name}.json": _json_bytes(result),
             out / f"{exp.name}.png": render_plot(exp, result)}
    for path, data in files.items():
        try:
            atomic_write(path, data)
        except OSError as e:
            raise ExperimentError(f"cannot write {str(path)!r}: "
                                  f"{e.strerror or e}") from None


def _disagreeing(exp: Experiment, result: dict[str, Any]) -> list[dict]:
    return [pt for pt in result["points"] if pt["prediction"] is not None
            and not agrees_at(exp, pt)]


def write_summary(experiments: Iterable[Experiment], out: Path) -> Path:
    """``out/summary.md``: for each experiment whose JSON is in ``out``, whether the
    simulation agrees with its prediction and whether the documented claim holds.

    Each result is judged with the tolerances of its own mode (its ``quick`` field);
    a result without that field, with those of the given instance.
    """
    sections: list[str] = []
    rows: list[str] = []
    for exp in experiments:
        path = out / f"{exp.name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text("utf8"))
        if "quick" in result and bool(result["quick"]) != exp.quick:
            exp = type(exp)(quick=bool(result["quick"]))
        ok, total, worst = agreement(exp, result)
        if total == 0:
            agrees = "no prediction"
        elif ok == total:
            agrees = "agrees"
        else:
            agrees = "disagrees"
        verdict, why = exp.claim_verdict(result)
        mode = "quick" if exp.quick else "full"
        rows.append(f"| `{exp.name}` | {agrees} | {verdict} |")
        lines = [f"## {exp.name}", "",
                 f"- Claim: {exp.claim}",
                 f"- Documented claim: **{verdict}**. Why: {why}",
                 f"- Simulation vs prediction: {agrees}: {ok} of {total} predicted points "
                 f"within tolerance (of {len(result['points'])} points); largest "
                 f"|value - prediction| {worst:.4g}",
                 f"- Tolerance: {exp.tolerance_note()}",
                 f"- Run: {mode}, {result.get('seeds', exp.replications)} seeds per point"]
        lines += [f"- {n}" for n in exp.findings(result)]
        for pt in _disagreeing(exp, result)[:5]:
            lines.append(f"- Disagrees at {pt['series']} {pt['params']}: simulated "
                         f"{pt['value']:.4g} [{pt['low']:.4g}, {pt['high']:.4g}], "
                         f"predicted {pt['prediction']:.4g}")
        lines += [f"- Files: `{exp.name}.json`, `{exp.name}.png`", ""]
        sections += lines
    head = ["# shardlab experiments: summary", "",
            "Two verdicts per experiment. *Simulation vs prediction*: every point with a "
            "derived prediction agrees when |value - prediction| is within the "
            "experiment's stated tolerance (values are means over seeds with two-sided "
            "95 % Student-t intervals). *Documented claim*: whether the claim as the "
            "documentation or the release states it holds in these numbers (holds, does "
            "not hold, or holds only under a stated condition), with the reason.", "",
            "| experiment | simulation vs prediction | documented claim |",
            "| --- | --- | --- |", *rows, ""]
    path = out / "summary.md"
    atomic_write(path, "\n".join(head + sections).encode("utf8"))
    return path
