"""Breadth-first exploration of a `model.protocol.Model`, and the result of a check.

`explore` visits every state reachable from the initial ones, in breadth-first order,
each state once (after `Model.canonical`), keeping for each a parent pointer and the
position of the action that reached it. So the first state found that breaks a
property ends a shortest path: the counterexample. The safety properties
(``always``) are read off each new state; ``no_silent_loss`` (``eventually``) is read
at the states where a run can end, those with no protocol step enabled (the model has
no cycles: every action moves a token on, removes one, or changes a host list once,
so these are where every run ends up; the optional networkx graph shows it, since its
attracting components are exactly such states).

Limits on states and depth stop the search cleanly; the result then says what was
covered and a property without a counterexample is ``"unknown"``, not true.

Counterexamples are found on canonical states and replayed on the model's own
states (`raw_path`), so the steps name the processes and channels of one concrete run
that `Model.next_state` reproduces exactly.

`check` runs one exploration per name draw and folds them into one result (the JSON
shape of ``shardlab check``).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable

from model import CheckError
from model.properties import MODEL_PROPERTIES, PROPERTIES, no_silent_loss
from model.protocol import BITS, Action, Config, Model, State
from model.steps import explain_path, unsettled

__all__ = ["Exploration", "explore", "check", "raw_path", "replay", "coverage_line",
           "LOSS_WITH_FAULTS"]

#: The separate report: can a request be lost once the excusing faults are counted?
LOSS_WITH_FAULTS = "loss_with_faults"

Progress = Callable[[int, int, int], None]


@dataclass
class Exploration:
    """What one breadth-first search found."""

    model: Model
    states: int = 0
    transitions: int = 0
    depth: int = 0
    complete: bool = False
    stopped_by: str = ""                       # "", "max_states" or "max_depth"
    paths: dict[str, list[Action]] = field(default_factory=dict)
    graph: object = None                       # networkx.DiGraph when asked for


def explore(model: Model, *, properties: Iterable[str] = MODEL_PROPERTIES,
            max_states: int | None = None, max_depth: int | None = None,
            symmetry: bool = True, graph: bool = False,
            progress: Progress | None = None) -> Exploration:
    """Explore ``model`` breadth first and return what was found.

    Parameters
    ----------
    properties : names from `model.properties.MODEL_PROPERTIES` to evaluate; the
        separate ``loss_with_faults`` report comes with ``no_silent_loss``.
    max_states, max_depth : stop (cleanly, not complete) at this many states, or do
        not go past this many actions from an initial state.
    symmetry : fold states that differ only by renaming (`Model.canonical`).
    graph : also build the state graph as a ``networkx.DiGraph`` (nodes are state
        numbers with the state as ``state``; edges carry ``action``). It costs memory.
    progress : called now and then with (states, transitions, depth).

    Returns
    -------
    Exploration
        ``paths`` maps each property found broken (and ``loss_with_faults``) to the
        actions of a shortest run, from `Model.init_states` on the model's states.
    """
    props = tuple(properties)
    canon = model.canonical if symmetry else None
    keep = 0                            # safety bits still to look for
    for name in props:
        keep |= BITS.get(name, 0)
    want_loss = "no_silent_loss" in props
    want_faulted_loss = want_loss
    succ = model.successor_actions
    nxt = model.next_state

    index: dict[State, int] = {}
    states: list[State] = []
    parent = array("q")
    via = array("l")                  # position of the action in its parent's list
    depth_of = array("l")
    found: dict[str, int] = {}        # property -> state number
    edges: list[tuple[int, int, int]] | None = [] if graph else None
    ex = Exploration(model)

    def add(t: State, par: int, pos: int, d: int) -> int:
        j = len(states)
        index[t] = j
        states.append(t)
        parent.append(par)
        via.append(pos)
        depth_of.append(d)
        return j

    for s in model.init_states():
        t = canon(s) if canon else s
        if t not in index:
            add(t, -1, -1, 0)
    frontier = list(range(len(states)))
    depth = 0
    transitions = 0
    expanded = 0
    stopped = ""
    while frontier:
        at_limit = max_depth is not None and depth >= max_depth
        nxt_frontier: list[int] = []
        for i in frontier:
            s = states[i]
            acts, n_protocol = succ(s)
            expanded += 1
            if n_protocol == 0 and (want_loss or want_faulted_loss):
                lost = model.silent_losses(s)
                if lost:
                    outcomes = model.outcomes(s)
                    if want_loss and not no_silent_loss(outcomes, s.faulted):
                        found["no_silent_loss"] = i
                        want_loss = False
                    if want_faulted_loss:
                        found[LOSS_WITH_FAULTS] = i
                        want_faulted_loss = False
            if at_limit:
                if acts:
                    stopped = "max_depth"
                continue
            for pos, a in enumerate(acts):
                t = nxt(s, a)
                if canon:
                    t = canon(t)
                transitions += 1
                b = t.broken
                if b & ~keep:
                    b &= keep
                    t = t._replace(broken=b)
                j = index.get(t)
                if j is None:
                    if max_states is not None and len(states) >= max_states:
                        stopped = "max_states"
                        break
                    j = add(t, i, pos, depth + 1)
                    nxt_frontier.append(j)
                    if b:
                        for name, bit in BITS.items():
                            if b & bit:
                                found[name] = j
                        keep &= ~b
                if edges is not None:
                    edges.append((i, j, pos))
            if stopped == "max_states":
                break
            if progress is not None and expanded % 2048 == 0:
                progress(len(states), transitions, depth)
        if stopped == "max_states":
            break
        if at_limit:
            break
        frontier = nxt_frontier
        if frontier:
            depth += 1
    ex.states = len(states)
    ex.transitions = transitions
    ex.depth = max(depth_of) if len(depth_of) else 0
    ex.stopped_by = stopped
    ex.complete = not stopped
    if progress is not None:
        progress(len(states), transitions, ex.depth)
    for name, j in found.items():
        ex.paths[name] = raw_path(model, _canonical_path(model, states, parent, via, j),
                                  symmetry)
    if edges is not None:
        import networkx as nx
        g = nx.DiGraph()
        for k, st in enumerate(states):
            g.add_node(k, state=st)
        for i, j, pos in edges:
            g.add_edge(i, j, action=pos)
        ex.graph = g
    return ex


def _canonical_path(model: Model, states, parent, via, j: int) -> list[State]:
    chain = []
    while j >= 0:
        chain.append(states[j])
        j = parent[j]
    chain.reverse()
    return chain


def raw_path(model: Model, chain: list[State], symmetry: bool = True) -> list[Action]:
    """The actions of a run on the model's own states that passes through ``chain``
    (states as the search stored them: canonical, or raw when ``symmetry`` is off)."""
    init = model.init_states()
    s = next(x for x in init if (model.canonical(x) if symmetry else x) == chain[0])
    out: list[Action] = []
    for target in chain[1:]:
        for a in model.actions(s):
            t = model.next_state(s, a)
            u = model.canonical(t) if symmetry else t
            # the search may have dropped the bits of properties already found
            if u == target or u._replace(broken=u.broken & target.broken) == target:
                out.append(a)
                s = t
                break
        else:  # pragma: no cover - a broken symmetry would land here
            raise AssertionError(f"no action from {s!r} reaches {target!r}")
    return out


def replay(model: Model, actions: Iterable[Action]) -> list[State]:
    """The states a run passes through, from the first initial state; each action
    must be enabled where it is taken."""
    s = model.init_states()[0]
    out = [s]
    for a in actions:
        if a not in model.actions(s):
            raise ValueError(f"{a!r} is not enabled in {s!r}")
        s = model.next_state(s, a)
        out.append(s)
    return out


def coverage_line(states: int, transitions: int, depth: int, complete: bool,
                  stopped_by: str = "") -> str:
    """"5,758 states, 20,134 transitions, to depth 19; complete" style wording."""
    n = f"{states:,}"
    t = f"{transitions:,}"
    tail = "complete" if complete else f"not complete (stopped at {stopped_by.replace('_', ' ')})"
    return f"{n} states, {t} transitions, to depth {depth}; {tail}"


def check(config: Config, *, draws: int = 1, properties: Iterable[str] = MODEL_PROPERTIES,
          max_states: int | None = None, max_depth: int | None = None,
          symmetry: bool = True,
          progress: Callable[[int, int, int, int], None] | None = None) -> dict:
    """Check ``config`` on ``draws`` name draws (``config.draw`` on) and return the
    result as plain data (the JSON of ``shardlab check``), with no wall-clock figure.

    A property ``holds`` is ``true`` when every draw was explored completely without a
    counterexample, ``false`` when a draw found one (the shortest over the draws is
    kept, the first draw on a tie), else ``"unknown"``.
    """
    props = tuple(properties)
    for name in props:
        if name not in MODEL_PROPERTIES:
            raise CheckError(f"--property {name!r} is unknown; allowed: "
                             f"{', '.join(MODEL_PROPERTIES)}")
    if not isinstance(draws, int) or not 1 <= draws <= 100:
        raise CheckError(f"--draws {draws!r}: must be an integer from 1 to 100")
    runs = []
    best: dict[str, tuple[int, int, Model, list[Action]]] = {}
    for k in range(draws):
        model = Model(config.replace(draw=config.draw + k))
        cb = None if progress is None else (
            lambda n, t, d, k=k: progress(k, n, t, d))
        ex = explore(model, properties=props, max_states=max_states, max_depth=max_depth,
                     symmetry=symmetry, progress=cb)
        runs.append({"draw": model.config.draw,
                     "names": dict(zip(model.iface_names, model.prefixes)),
                     "hash_seeds": dict(zip(model.proc_names, model.hash_seeds)),
                     "states": ex.states, "transitions": ex.transitions,
                     "depth": ex.depth, "complete": ex.complete,
                     "stopped_by": ex.stopped_by or None})
        for name, path in ex.paths.items():
            if name not in best or len(path) < best[name][0]:
                best[name] = (len(path), model.config.draw, model, path)
    complete = all(r["complete"] for r in runs)
    out_props = {}
    for name in props:
        p = PROPERTIES[name]
        entry = {"kind": p.kind, "description": p.description}
        if name in best:
            _, draw, model, path = best[name]
            entry.update(holds=False, draw=draw, length=len(path),
                         counterexample=explain_path(model, path))
            if p.kind == "eventually":
                entry["ending"] = unsettled(model, path)
        else:
            entry.update(holds=True if complete else "unknown", draw=None, length=None,
                         counterexample=None)
        out_props[name] = entry
    result = {
        "router": config.router,
        "config": {**config.to_dict(), "draws": draws, "max_states": max_states,
                   "max_depth": max_depth, "symmetry": symmetry},
        "states": sum(r["states"] for r in runs),
        "transitions": sum(r["transitions"] for r in runs),
        "depth": max(r["depth"] for r in runs),
        "complete": complete,
        "draws": runs,
        "properties": out_props,
    }
    if "no_silent_loss" in props:
        if LOSS_WITH_FAULTS in best:
            _, draw, model, path = best[LOSS_WITH_FAULTS]
            result[LOSS_WITH_FAULTS] = {"possible": True, "draw": draw, "length": len(path),
                                        "example": explain_path(model, path),
                                        "ending": unsettled(model, path)}
        else:
            result[LOSS_WITH_FAULTS] = {"possible": False if complete else "unknown",
                                        "draw": None, "length": None, "example": None}
    m = Model(config)
    result["symmetry"] = {
        "on": symmetry,
        "interchangeable_workers": [[m.worker_names[w] for w in g] for g in m.worker_groups],
        "interchangeable_requests": [[m.request_label(q) for q in g] for g in m.req_groups],
        "renamings_per_state": m.symmetry_order if symmetry else 1,
    }
    result["coverage"] = coverage_line(result["states"], result["transitions"],
                                       result["depth"], complete,
                                       next((r["stopped_by"] for r in runs
                                             if r["stopped_by"]), ""))
    return result
