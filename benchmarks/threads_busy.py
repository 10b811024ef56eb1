"""The default thread policy of `captum-cfx explain`: 1 vs 2 intra-op threads on a machine where another job
keeps a core busy. Results: benchmarks/results/threads_busy_cpu.json.

    python benchmarks/threads_busy.py [--n 20] [--repeats 2] [--hogs 1]

Each run is a fresh `captum-cfx explain --n N --no-descriptors --threads T` process; the thread counts are
interleaved, ``--repeats`` times, first with ``--hogs`` busy-looping processes running beside them (a busy
machine), then with none. Reported per setting: the attack's seconds (``metrics.json``'s ``seconds``) and the
whole command's wall seconds, median and min-max. OpenMP threads spin-wait for each other at every parallel
region: when another process holds one of two cores, a second intra-op thread is descheduled while its sibling
waits for it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit


def _run(n: int, threads: int, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "captum_cfx.cli", "explain", "--n", str(n), "--no-descriptors",
                    "--no-progress", "--threads", str(threads), "--out", str(out)], env=env, check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    return {"attack_seconds": json.loads((out / "metrics.json").read_text())["seconds"], "wall_seconds": wall}


def _stats(v: list[float]) -> dict:
    return {"median": round(statistics.median(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--hogs", type=int, default=1)
    a = p.parse_args(argv)
    settings = []
    with tempfile.TemporaryDirectory() as tmp:
        for busy in (True, False):
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.hogs if busy else 0)]
            try:
                runs: dict[int, list[dict]] = {1: [], 2: []}
                for r in range(a.repeats):
                    for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
                        runs[threads].append(_run(a.n, threads, Path(tmp) / f"{busy}-{threads}-{r}"))
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
            for threads, rs in runs.items():
                settings.append({"busy_processes": a.hogs if busy else 0, "threads": threads,
                                 "attack_seconds": _stats([x["attack_seconds"] for x in rs]),
                                 "wall_seconds": _stats([x["wall_seconds"] for x in rs])})
    result = {"n_digits": a.n, "repeats": a.repeats, "cpu_count": os.cpu_count(), "settings": settings,
              "note": "other engineers' jobs shared this machine too; see the min-max spread"}

    def table(res: dict) -> str:
        lines = ["| busy processes beside it | --threads | attack s, median (min-max) | command s, median (min-max) |",
                 "|---|---|---|---|"]
        for s in res["settings"]:
            at, wt = s["attack_seconds"], s["wall_seconds"]
            lines.append(f"| {s['busy_processes']} | {s['threads']} | {at['median']} ({at['min']}-{at['max']}) | "
                         f"{wt['median']} ({wt['min']}-{wt['max']}) |")
        return "\n".join(lines)

    emit(result, Path(__file__).resolve().parent / "results" / "threads_busy_cpu.json", table)
    return result


if __name__ == "__main__":
    main()
