"""Speed and memory of the simulator's request/response flow (what `make bench` runs).

Speed: simulated request/response round trips per wall second (delivered responses
divided by the wall seconds of `run_scenario`) on the default scenario with
``load.requests`` set, for the ``fixed`` router and for ``channels_redis-4``, as a
ratio to ``../shared/bench/ref_flow.py``: the leanest bare-SimPy program of the same
flow, run in a subprocess with the same request count, shards, interface servers and
workers. Target: ours / ref >= 0.5 (``fixed``). ``channels_redis-4`` delivers only
about 1/N of its responses, so its row also shows requests offered per wall second.
Each figure is the best of ``--repeat`` runs.

Memory: peak resident set size (VmHWM) of a fresh interpreter that runs the default
scenario (``fixed``) at 1 000 000 requests, divided by the same at 100 000. A
simulator whose memory does not grow with the run's length gives about 1.
Target: <= 1.5.

usage: benchmarks/flow.py [--quick] [--repeat K] [--json PATH] [--ref PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.runner import run_scenario  # noqa: E402
from sim.scenario import default_scenario  # noqa: E402

DEFAULT_REF = ROOT.parent / "shared" / "bench" / "ref_flow.py"
SPEED_ROUTERS = ("fixed", "channels_redis-4")
MEMORY_ROUTER = "fixed"
SPEED_TARGET = 0.5    # ours / ref, at least
MEMORY_TARGET = 1.5   # peak RSS at 10x the requests / peak RSS, at most

# The child that measures memory: run one scenario, report its own peak RSS (KiB).
_MEMORY_CHILD = r"""
import dataclasses, json, resource, sys
from sim.runner import run_scenario
from sim.scenario import default_scenario

def peak_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib // 1024 if sys.platform == "darwin" else kib   # macOS reports bytes

requests, router = int(sys.argv[1]), sys.argv[2]
sc = default_scenario()
sc = dataclasses.replace(sc, router=router,
                         load=dataclasses.replace(sc.load, requests=requests))
before = peak_kib()
result = run_scenario(sc)
print(json.dumps({"requests": result["sent"]["request"],
                  "delivered": result["fates_by_kind"]["response"]["delivered"],
                  "peak_kib_before_run": before, "peak_kib": peak_kib()}))
"""


def scenario(requests: int, router: str):
    """The default scenario with ``router`` and a fixed number of requests."""
    sc = default_scenario()
    return dataclasses.replace(sc, router=router,
                               load=dataclasses.replace(sc.load, requests=requests))


def time_ours(requests: int, router: str, repeat: int) -> dict:
    """Best of ``repeat`` timed `run_scenario` calls."""
    sc = scenario(requests, router)
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = run_scenario(sc)
        wall = time.perf_counter() - t
        if best is None or wall < best[0]:
            best = (wall, result)
    wall, result = best
    delivered = result["fates_by_kind"]["response"]["delivered"]
    sent = result["sent"]["request"]
    return {"router": router, "requests": sent, "delivered": delivered,
            "wall_s": round(wall, 4), "round_trips_per_s": delivered / wall,
            "requests_per_s": sent / wall}


_REF_LINE = re.compile(r"([\d.]+) requests/s wall; delivered (\d+)")


def time_ref(ref: Path, requests: int, shards: int, servers: int, workers: int,
             repeat: int) -> dict:
    """Best of ``repeat`` runs of the bare-SimPy reference, each in a fresh process."""
    best = None
    for _ in range(repeat):
        out = subprocess.run([sys.executable, str(ref), str(requests), str(shards),
                              str(servers), str(workers)],
                             capture_output=True, text=True, check=True)
        m = _REF_LINE.search(out.stdout)
        if m is None:
            raise SystemExit(f"flow.py: cannot read the reference's output: {out.stdout!r}")
        rps, delivered = float(m.group(1)), int(m.group(2))
        if best is None or rps > best[0]:
            best = (rps, delivered)
    rps, delivered = best
    return {"requests": requests, "delivered": delivered, "requests_per_s": rps,
            "round_trips_per_s": rps * delivered / requests,
            "wall_s": round(requests / rps, 4)}


def measure_memory(requests: int, router: str) -> dict:
    """Peak RSS of a fresh interpreter running the default scenario at ``requests``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(requests), router],
                         capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["wall_s"] = round(time.perf_counter() - t, 2)
    return data


def _rate(x: float) -> str:
    return f"{x:,.0f}/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/flow.py",
        description="Speed of the simulator's request/response flow against the "
                    "bare-SimPy reference (ours/ref, target >= 0.5), and growth of "
                    "its peak memory with the run's length (target <= 1.5).")
    parser.add_argument("--quick", action="store_true",
                        help="fast check: 20 000 requests for speed and 20 000 vs "
                             "200 000 for memory (default: 100 000, and 100 000 vs "
                             "1 000 000)")
    parser.add_argument("--repeat", type=int, default=3, metavar="K",
                        help="speed: best of K runs of ours and of the reference "
                             "(default: 3)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the figures as JSON to PATH")
    parser.add_argument("--ref", metavar="PATH", type=Path, default=DEFAULT_REF,
                        help=f"the reference program (default: {DEFAULT_REF})")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not args.ref.is_file():
        parser.error(f"reference {str(args.ref)!r} does not exist (give --ref PATH)")
    if args.json:
        parent = Path(args.json).resolve().parent
        if not parent.is_dir():
            parser.error(f"--json {args.json!r}: directory {str(parent)!r} does not exist")

    speed_n = 20_000 if args.quick else 100_000
    mem_small, mem_large = (20_000, 200_000) if args.quick else (100_000, 1_000_000)
    base = default_scenario()
    print(f"shardlab flow benchmark ({'quick' if args.quick else 'full'}): "
          f"default scenario ({base.shards} shards, {base.interface_servers} interface "
          f"servers, {base.workers} workers), Python {platform.python_version()}",
          flush=True)

    # -- speed --------------------------------------------------------------------
    print(f"\nspeed: {speed_n:,} requests, best of {args.repeat}", flush=True)
    ref = time_ref(args.ref, speed_n, base.shards, base.interface_servers, base.workers,
                   args.repeat)
    print(f"  {'ref_flow.py (bare SimPy)':26s} {ref['wall_s']:8.2f} s  "
          f"{_rate(ref['round_trips_per_s']):>12s} round trips", flush=True)
    ours = {}
    for router in SPEED_ROUTERS:
        r = ours[router] = time_ours(speed_n, router, args.repeat)
        r["ratio_to_ref"] = r["round_trips_per_s"] / ref["round_trips_per_s"]
        r["requests_ratio_to_ref"] = r["requests_per_s"] / ref["requests_per_s"]
        print(f"  {router:26s} {r['wall_s']:8.2f} s  {_rate(r['round_trips_per_s']):>12s} "
              f"round trips  ({r['delivered']:,} of {r['requests']:,} delivered; "
              f"{_rate(r['requests_per_s'])} requests)", flush=True)
    speed_ratio = ours["fixed"]["ratio_to_ref"]
    print(f"  ratio ours/ref (fixed, round trips): {speed_ratio:.2f}  "
          f"target >= {SPEED_TARGET}: {'met' if speed_ratio >= SPEED_TARGET else 'MISSED'}")
    cr4 = ours["channels_redis-4"]
    print(f"  ratio ours/ref (channels_redis-4): {cr4['ratio_to_ref']:.2f} in round trips "
          f"(most responses are misrouted), {cr4['requests_ratio_to_ref']:.2f} in requests",
          flush=True)

    # -- memory -------------------------------------------------------------------
    print(f"\nmemory: peak RSS of a fresh process, router {MEMORY_ROUTER}", flush=True)
    mem = {}
    for n in (mem_small, mem_large):
        m = mem[n] = measure_memory(n, MEMORY_ROUTER)
        print(f"  {n:>9,} requests: peak {m['peak_kib'] / 1024:7.1f} MiB "
              f"(after imports {m['peak_kib_before_run'] / 1024:.1f} MiB; "
              f"{m['delivered']:,} delivered; {m['wall_s']:.1f} s)", flush=True)
    mem_ratio = mem[mem_large]["peak_kib"] / mem[mem_small]["peak_kib"]
    print(f"  ratio {mem_large:,} / {mem_small:,}: {mem_ratio:.2f}  "
          f"target <= {MEMORY_TARGET}: {'met' if mem_ratio <= MEMORY_TARGET else 'MISSED'}")

    if args.json:
        report = {
            "mode": "quick" if args.quick else "full",
            "python": platform.python_version(),
            "platform": platform.platform(),
            "scenario": {"shards": base.shards, "interface_servers": base.interface_servers,
                         "workers": base.workers, "rate": base.load.rate,
                         "service_time": base.service_time},
            "speed": {"requests": speed_n, "repeat": args.repeat, "ref": ref,
                      "ours": ours, "ratio": speed_ratio, "target": SPEED_TARGET,
                      "met": speed_ratio >= SPEED_TARGET},
            "memory": {"router": MEMORY_ROUTER, "small": mem_small, "large": mem_large,
                       "runs": {str(n): m for n, m in mem.items()},
                       "ratio": mem_ratio, "target": MEMORY_TARGET,
                       "met": mem_ratio <= MEMORY_TARGET},
        }
        tmp = Path(args.json + ".tmp")
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        tmp.replace(args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
