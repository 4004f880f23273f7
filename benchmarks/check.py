"""Speed of the model checker (what `make bench` runs after the flow benchmark).

Time to exhaust the issue's configuration: 2 interface servers x 2 workers x 3 shards
x 2 requests per server with every fault switched on (one name draw, seed 1), per
router; states and transitions per wall second. Target: every router complete in
under 60 s on this 2-core machine. Also the reduction that canonical states give:
states with and without symmetry for ``fixed`` (the same verdicts either way).

usage: benchmarks/check.py [--router NAME ...] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from layer.routing import PROFILE_NAMES, live_available  # noqa: E402
from model.checker import explore  # noqa: E402
from model.protocol import FAULTS, Config, Model  # noqa: E402

TARGET_S = 60.0
CONFIG = Config(servers=2, workers=2, shards=3, requests_per_server=2, faults=FAULTS)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_one(router: str, symmetry: bool = True) -> dict:
    model = Model(CONFIG.replace(router=router))
    t = time.perf_counter()
    ex = explore(model, symmetry=symmetry)
    wall = time.perf_counter() - t
    return {"router": router, "symmetry": symmetry, "states": ex.states,
            "transitions": ex.transitions, "depth": ex.depth, "complete": ex.complete,
            "wall_s": round(wall, 3), "states_per_s": round(ex.states / wall),
            "transitions_per_s": round(ex.transitions / wall),
            "broken": sorted(ex.paths)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/check.py",
        description="Time to exhaust 2 servers x 2 workers x 3 shards x 2 requests per "
                    "server with every fault, per router (target < 60 s each), and the "
                    "state reduction of canonical states.")
    parser.add_argument("--router", action="append", metavar="NAME",
                        help="router to time (repeatable; default: every profile)")
    parser.add_argument("--quick", action="store_true",
                        help="only fixed and channels_redis-4, no reduction run")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    routers = args.router or (["fixed", "channels_redis-4"] if args.quick else
                              [r for r in PROFILE_NAMES
                               if not r.startswith("live:") or live_available()])
    for r in routers:
        if r not in PROFILE_NAMES:
            parser.error(f"--router {r!r} is unknown; allowed: {', '.join(PROFILE_NAMES)}")

    print(f"shardlab check benchmark: {CONFIG.servers} servers x {CONFIG.workers} workers "
          f"x {CONFIG.shards} shards x {CONFIG.requests_per_server} requests per server, "
          f"faults: all, Python {platform.python_version()}", flush=True)
    rows = []
    for r in routers:
        row = time_one(r)
        rows.append(row)
        ok = row["complete"] and row["wall_s"] < TARGET_S
        print(f"  {r:27s} {row['states']:>9,} states {row['transitions']:>10,} transitions "
              f"{row['wall_s']:7.2f} s  {row['states_per_s']:>7,} states/s  "
              f"{'met' if ok else 'MISSED'}", flush=True)
    worst = max(rows, key=lambda x: x["wall_s"])
    met = all(x["complete"] and x["wall_s"] < TARGET_S for x in rows)
    print(f"  slowest: {worst['router']} {worst['wall_s']:.2f} s; target < {TARGET_S:.0f} s "
          f"each: {'met' if met else 'MISSED'}")

    reduction = None
    if not args.quick:
        plain = time_one("fixed", symmetry=False)
        folded = next((x for x in rows if x["router"] == "fixed"), None) or time_one("fixed")
        reduction = {"router": "fixed", "states_without_symmetry": plain["states"],
                     "states_with_symmetry": folded["states"],
                     "factor": round(plain["states"] / folded["states"], 2),
                     "wall_s_without": plain["wall_s"], "wall_s_with": folded["wall_s"]}
        print(f"\nsymmetry (fixed): {plain['states']:,} states without, "
              f"{folded['states']:,} with: {reduction['factor']}x fewer "
              f"({plain['wall_s']:.1f} s vs {folded['wall_s']:.1f} s)")
    print(f"peak memory: {peak_mib():.0f} MiB")

    if args.json:
        report = {"config": CONFIG.to_dict(), "python": platform.python_version(),
                  "platform": platform.platform(), "target_s": TARGET_S, "met": met,
                  "runs": rows, "reduction": reduction, "peak_mib": round(peak_mib())}
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
