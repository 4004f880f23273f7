"""The scenario a command runs: a SCENARIO file (or the built-in one) with the
``--shards``, ``--requests`` and ``--seed`` overrides that ``run`` and ``replay`` share.
"""

from __future__ import annotations

import argparse
from typing import Any

from shardlab.output import UsageError, int_arg
from sim.scenario import MAX_REQUESTS, Scenario, load_scenario, read_scenario_data

__all__ = ["add_override_args", "load_with_overrides"]


def add_override_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--shards``, ``--requests`` and ``--seed`` to ``parser``."""
    parser.add_argument("--shards", type=int_arg(1, 64), metavar="N",
                        help="number of Redis shards (overrides the scenario)")
    parser.add_argument("--requests", type=int_arg(1, MAX_REQUESTS), metavar="N",
                        help=f"stop the load after N client requests, 1 to {MAX_REQUESTS} "
                             "(overrides the duration)")
    parser.add_argument("--seed", type=int_arg(0, 2**63 - 1), metavar="N",
                        help="seed of every random stream (overrides the scenario)")


def load_with_overrides(args: argparse.Namespace,
                        shards: int | None = None) -> tuple[Scenario, dict[str, Any]]:
    """The scenario of ``args.scenario`` with the flags applied, and the overrides (to
    load it again per router). ``shards`` is the shard count when ``--shards`` is not
    given (replay: one per server). ``--requests`` keeps the file's other load keys,
    and is refused for a scenario without interface servers (no client load)."""
    overrides: dict[str, Any] = {}
    if args.shards is not None or shards is not None:
        overrides["shards"] = args.shards if args.shards is not None else shards
    if args.seed is not None:
        overrides["seed"] = args.seed
    base = load_scenario(args.scenario, overrides)
    if args.requests is None:
        return base, overrides
    if base.interface_servers == 0:
        raise UsageError(f"--requests {args.requests}: scenario {base.name!r} has no "
                         "client load (interface_servers = 0: a scripted story alone); "
                         "allowed only with interface servers")
    data, _ = read_scenario_data(args.scenario)
    load = data.get("load", {})
    overrides["load"] = {**(dict(load) if isinstance(load, dict) else {}),
                         "requests": args.requests}
    return load_scenario(args.scenario, overrides), overrides
