"""Throughput of `captum-cfx explain --data` in one process vs two ranks under torchrun (gloo, CPU),
and whether the shards are byte-identical. Results: benchmarks/results/distributed_cpu.json.

    python benchmarks/distributed.py [--n 1000] [--shard-size 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(nproc: int, threads: int, out: Path, a: argparse.Namespace) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cli = ["-m", "captum_cfx.cli", "explain", "--data", "mnist-test", "--limit", str(a.n), "--shard-size",
           str(a.shard_size), "--threads", str(threads), "--out", str(out), "--no-progress"]
    cmd = [sys.executable, *cli] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                      "--nproc_per_node", str(nproc), "--master_port", "29777", *cli]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--work", default="/tmp/cfx_distributed")
    a = p.parse_args()
    work = Path(a.work)
    rows = []
    for nproc, threads in [(1, 1), (2, 1), (1, 2)]:
        out = work / f"p{nproc}_t{threads}"
        sec = run(nproc, threads, out, a)
        rows.append({"processes": nproc, "threads_per_process": threads, "seconds": sec,
                     "images_per_second": a.n / sec})
    ref = sorted((work / "p1_t1").glob("shard_*.safetensors"))
    same = all((work / "p2_t1" / f.name).read_bytes() == f.read_bytes() for f in ref)
    result = {"benchmark": "distributed", "n": a.n, "shard_size": a.shard_size, "rows": rows,
              "two_ranks_identical_to_one_process": same,
              "speedup_two_ranks_vs_one_process": rows[0]["seconds"] / rows[1]["seconds"],
              "note": "wall time includes process start-up and model loading (~5-10 s per run)"}
    out = Path(__file__).parent / "results" / "distributed_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print("\n| processes | threads each | seconds | images/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} | {r['threads_per_process']} | {r['seconds']:.1f} | {r['images_per_second']:.1f} |")
    print(f"\ntwo ranks byte-identical to one process: {same}")


if __name__ == "__main__":
    main()
