"""Throughput of `captum-cfx explain --data` in one process vs two CPU ranks (gloo) under `torchrun` and under
`accelerate launch`, and whether each multi-rank run's shards are byte-identical to one process's.
Results: benchmarks/results/distributed_cpu.json.

    python benchmarks/distributed.py [--n 1000] [--shard-size 100] [--repeats 2]

Launchers (all with --threads 1 per rank, except the optional last row):

- one process: `python -m captum_cfx.cli explain ...`
- torchrun: `torchrun --nproc_per_node 2 -m captum_cfx.cli explain ...`
- accelerate: `accelerate launch --multi_gpu --num_processes 2 ...` (accelerate runs torchrun's launcher; with no
  GPU the ranks use gloo on CPU)
- accelerate + mpirun: `accelerate launch --cpu --num_processes 2 --mpirun_hostfile F ...` (accelerate's own
  multi-CPU launch; only when `mpirun` is on PATH, e.g. `pip install mpich`)
- with --threads-row, one process with 2 threads: the same two cores used by intra-op threads instead of ranks
  (another `--threads` is another run, so its bits are not compared)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]


def launcher(name: str, port: int, hostfile: Path) -> list[str]:
    """The command prefix that starts ``-m captum_cfx.cli`` under launcher ``name``."""
    if name == "one process":
        return [sys.executable]
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    if name == "accelerate":
        return [*ACCELERATE, "--multi_gpu", "--num_processes", "2", "--main_process_port", str(port)]
    if name == "accelerate + mpirun":
        return [*ACCELERATE, "--cpu", "--num_processes", "2", "--mpirun_hostfile", str(hostfile),
                "--main_process_port", str(port)]
    raise ValueError(f"unknown launcher {name!r}")


def run(name: str, threads: int, out: Path, port: int, a: argparse.Namespace) -> tuple[float, float]:
    """Run one explain job into ``out``; return its wall time and the CPU time of all its processes, in seconds
    (process start-up included)."""
    shutil.rmtree(out, ignore_errors=True)
    cli = ["-m", "captum_cfx.cli", "explain", "--data", "mnist-test", "--limit", str(a.n), "--shard-size",
           str(a.shard_size), "--threads", str(threads), "--out", str(out), "--no-progress"]
    hostfile = out.parent / "hostfile"
    hostfile.write_text("localhost\n")
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([*launcher(name, port, hostfile), *cli], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def ranks_used(out: Path) -> list[int]:
    """The distinct ranks that wrote the run's shards (from its manifest)."""
    return sorted({s["rank"] for s in json.loads((out / "manifest.json").read_text())["shards"]})


def identical(a: Path, b: Path) -> bool:
    """Whether both runs hold the same shard files with the same bytes."""
    fa, fb = (sorted(p.name for p in d.glob("shard_*.safetensors")) for d in (a, b))
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--work", default="/tmp/cfx_distributed")
    p.add_argument("--threads-row", action="store_true",
                   help="also run one process with 2 threads (slow and erratic when other jobs share the cores)")
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    plan = [("one process", 1, 1), ("torchrun", 2, 1), ("accelerate", 2, 1)]
    if shutil.which("mpirun"):
        plan.append(("accelerate + mpirun", 2, 1))
    if a.threads_row:
        plan.append(("one process", 1, 2))
    load_before = os.getloadavg()
    ref = work / "one_process_t1"
    runs: dict[int, list[dict[str, float | bool | None | list[int]]]] = {i: [] for i in range(len(plan))}
    for rep in range(a.repeats):  # interleaved, so a change in the machine's load touches every launcher alike
        for i, (name, _, threads) in enumerate(plan):
            out = work / f"{name.replace(' + ', '_').replace(' ', '_')}_t{threads}"
            wall, cpu = run(name, threads, out, 29770 + 10 * rep + i, a)
            runs[i].append({"seconds": wall, "cpu_seconds": cpu, "ranks_that_wrote_shards": ranks_used(out),
                            "identical_to_one_process": identical(ref, out) if threads == 1 else None})
    rows = []
    for i, (name, nproc, threads) in enumerate(plan):
        secs = [r["seconds"] for r in runs[i]]
        same = [r["identical_to_one_process"] for r in runs[i]]
        med = statistics.median(secs)
        rows.append({"launcher": name, "processes": nproc, "threads_per_process": threads,
                     "ranks_that_wrote_shards": runs[i][-1]["ranks_that_wrote_shards"],
                     "seconds_median": med, "seconds_min": min(secs), "seconds_max": max(secs),
                     "images_per_second": a.n / med,
                     "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in runs[i]),
                     "identical_to_one_process": None if threads != 1 else all(same), "runs": runs[i]})
    one = rows[0]["seconds_median"]
    result = {"benchmark": "distributed", "n": a.n, "shard_size": a.shard_size, "repeats": a.repeats,
              "cpu_count": os.cpu_count(),
              "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
              "rows": rows,
              "two_ranks_identical_to_one_process": {r["launcher"]: r["identical_to_one_process"] for r in rows
                                                     if r["processes"] == 2},
              "speedup_vs_one_process": {r["launcher"]: one / r["seconds_median"] for r in rows
                                         if r["processes"] == 2},
              "note": "wall time includes process start-up and model loading (~5-10 s per process, of which ~5 s "
                      "parse mnist-test); the machine's cores are shared with other jobs, so a load average near "
                      "cpu_count leaves the second rank little to gain. cpu_seconds: user + system time of every "
                      "process of the run."}
    path = Path(__file__).parent / "results" / "distributed_cpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\n| launcher | processes | threads each | seconds, median of {a.repeats} (min-max) | images/s | CPU s "
          "| byte-identical to one process |\n|---|---|---|---|---|---|---|")
    for r in rows:
        same = {True: "yes", False: "no", None: "n/a (other --threads)"}[r["identical_to_one_process"]]
        print(f"| {r['launcher']} | {r['processes']} | {r['threads_per_process']} | {r['seconds_median']:.1f} "
              f"({r['seconds_min']:.1f}-{r['seconds_max']:.1f}) | {r['images_per_second']:.1f} "
              f"| {r['cpu_seconds_median']:.0f} | {same} |")
    print(f"\nload average before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
