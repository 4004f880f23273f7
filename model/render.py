"""The terminal face of a check: verdict tables, numbered steps, sequence diagrams.

Everything here reads the plain result of `model.checker.check` (the JSON shape), so
what the terminal shows and what the JSON holds cannot drift apart. The sequence
diagram has one column per process and shard (interface servers, then shards, then
workers, as in Maelstrom's diagrams) and one row per step: the acting process's cell
names the step, an arrow runs to the shard it touched, and that shard's cell says what
happened there.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from model.checker import LOSS_WITH_FAULTS

__all__ = ["verdict_table", "property_table", "steps_lines", "sequence_diagram",
           "verdict_cell", "config_line"]


def verdict_cell(entry: dict) -> Text:
    """✓ / ✗ with the counterexample's length and draw / ? for one property."""
    holds = entry["holds"]
    if holds is True:
        return Text("✓ holds", style="green")
    if holds is False:
        return Text(f"✗ {entry['length']} steps (draw {entry['draw']})", style="red")
    return Text("? unknown", style="yellow")


def _loss_cell(entry: dict | None) -> Text:
    if entry is None:
        return Text("-")
    if entry["possible"] is True:
        return Text(f"possible, {entry['length']} steps", style="yellow")
    if entry["possible"] is False:
        return Text("never", style="green")
    return Text("? unknown", style="yellow")


def config_line(result: dict) -> str:
    c = result["config"]
    faults = ", ".join(c["faults"]) or "none"
    cap = f" (capacity {c['capacity']})" if "capacity" in c["faults"] else ""
    first = c["draw"]
    draws = f"draw {first}" if c["draws"] == 1 else f"draws {first}..{first + c['draws'] - 1}"
    return (f"{c['servers']} interface servers x {c['workers']} workers x {c['shards']} "
            f"shards x {c['requests_per_server']} requests per server; faults: {faults}"
            f"{cap}; seed {c['seed']}, {draws}")


def verdict_table(results: list[dict], title: str) -> Table:
    """One row per router: states, complete, one column per property, loss once
    faults are counted."""
    props = list(results[0]["properties"]) if results else []
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("router", no_wrap=True)
    t.add_column("states", justify="right")
    t.add_column("complete")
    for p in props:
        t.add_column(p)
    show_loss = any(LOSS_WITH_FAULTS in r for r in results)
    if show_loss:
        t.add_column("loss with faults")
    for r in results:
        row = [Text(r["router"]), Text(f"{r['states']:,}"),
               Text("yes" if r["complete"] else "no",
                    style="" if r["complete"] else "yellow")]
        row += [verdict_cell(r["properties"][p]) for p in props]
        if show_loss:
            row.append(_loss_cell(r.get(LOSS_WITH_FAULTS)))
        t.add_row(*row)
    return t


def property_table(result: dict) -> Table:
    """One router's verdicts, one row per property."""
    t = Table(box=box.SIMPLE_HEAD, title_justify="left",
              title=f"{result['router']}: {config_line(result)}")
    t.add_column("property", no_wrap=True)
    t.add_column("kind")
    t.add_column("verdict")
    t.add_column("what it says")
    for name, e in result["properties"].items():
        t.add_row(name, e["kind"], verdict_cell(e), e["description"])
    loss = result.get(LOSS_WITH_FAULTS)
    if loss is not None:
        t.add_row(LOSS_WITH_FAULTS, "report", _loss_cell(loss),
                  "can a request end neither answered nor refused once crashes, expiries "
                  "and worker crashes are counted?")
    return t


def steps_lines(steps: list[dict]) -> list[str]:
    """The numbered steps of a counterexample, one line each."""
    width = len(str(len(steps)))
    return [f"{s['step']:>{width}}. {s['text']}" for s in steps]


def _count(n: int, one: str, many: str) -> str:
    return "" if n == 0 else f"{n} {one if n == 1 else many}"


#: Up to this many shards, the diagram shows every shard (where a message was not
#: written is part of the story); beyond, only the shards a step touches.
ALL_SHARDS_UP_TO = 6


def sequence_diagram(steps: list[dict], servers: int, shards: int, workers: int) -> Table:
    """Processes and shards as columns, steps as rows.

    Only the processes that take part in ``steps`` get a column, and the shards too
    when there are more than `ALL_SHARDS_UP_TO` of them, so a counterexample in a large
    configuration stays readable; the caption counts the columns left out."""
    used = set()
    for s in steps:
        used.update(x for x in (s["actor"], s["target"], s.get("shard")) if x)
    every = ([f"iface{i}" for i in range(servers)] + [f"shard{i}" for i in range(shards)]
             + [f"worker{i}" for i in range(workers)])
    cols = [c for c in every if c in used
            or (c.startswith("shard") and shards <= ALL_SHARDS_UP_TO)]
    left_out = [c for c in every if c not in cols]
    if len(left_out) <= 6:
        caption = ", ".join(left_out)
    else:
        n_shards = sum(c.startswith("shard") for c in left_out)
        caption = ", ".join(part for part in (
            _count(len(left_out) - n_shards, "process", "processes"),
            _count(n_shards, "shard", "shards")) if part)
    at = {c: k for k, c in enumerate(cols)}
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              caption=f"not drawn (they take no step): {caption}" if left_out else None,
              caption_justify="left")
    t.add_column("#", justify="right", no_wrap=True, min_width=2)
    for c in cols:
        t.add_column(c, overflow="fold")
    for s in steps:
        cells = [Text("") for _ in cols]
        style = "red" if s["broke"] else ""
        what = s["verb"] + (f" {s['request']}" if s["request"] else "")
        actor = s["actor"]
        target = s["target"]
        if actor is None:                       # expiry, shard crash: at the shard
            cells[at[s["shard"]]] = Text(f"✗ {s['effect']}", style=style or "yellow")
        elif s["verb"] == "request":            # a client request enters its server
            cells[at[actor]] = Text(f"● {what}", style=style)
        elif target is None:                    # a process's own step
            cells[at[actor]] = Text(f"● {what}: {s['effect']}", style=style)
        else:
            a, b = at[actor], at[target]
            right = b > a
            cells[a] = Text(f"{what} ──" if right else f"── {what}", style=style)
            for k in range(min(a, b) + 1, max(a, b)):
                cells[k] = Text("─" * 8, style="dim")
            cells[b] = Text(f"▶ {s['effect']}" if right else f"{s['effect']} ◀",
                            style=style)
        t.add_row(str(s["step"]), *cells)
    return t
