"""Memory stays flat in the data-set size: the peak resident memory that a sharded run adds above the
process baseline, for 5,000 and 50,000 generated 64x64 squares images (about 234 and 2,344 MB as float32 if
held at once). Results: benchmarks/results/memory_flat_cpu.json.

    python benchmarks/memory_flat.py [--repeats 3] [--sizes 5000 50000] [--allocators default mmap64k]

How it is measured, each run in a fresh process (sizes interleaved, ``--repeats`` times each):

1. load the shipped squares regressor; the shard job resizes each shard to 32x32 and regresses it;
2. warm up with a full 2-shard run (1,000 images) through ``run_sharded``: generation, compute, the atomic
   write, the digest, the sidecar and the merge, so allocator pools and lazily built kernels exist;
3. ``gc.collect()`` and glibc ``malloc_trim(0)`` (free heap pages go back to the kernel), read the baseline
   ``VmRSS`` and reset the kernel's peak counter (``echo 5 > /proc/self/clear_refs`` resets ``VmHWM``);
4. run ``run_sharded`` over ``n`` images, reading ``VmRSS`` as each shard starts. The merge step is wrapped to
   read ``VmHWM`` (the streaming phase's peak) and reset it before merging, then read it again (the merge's
   peak); the run's peak is the larger of the two.

Reported per size: median and min-max of the added peak (``max(stream, merge) peak - baseline``), of the
streaming phase's, of what the merge adds above the RSS it starts from, and the slope of ``VmRSS`` at shard
starts against the shard index (MB per 100 shards; a leak shows here whatever the peak noise). The verdict
is the ratio of the medians, 50,000 to 5,000 (within 20 % is flat).

Everything runs twice, under two allocator settings:

- ``default``: glibc as users run it. Its mmap threshold adapts: once a 25 MB shard buffer has been freed,
  later ones come from the heap, whose freed pages glibc keeps for reuse. So RSS holds a cache, from a few
  tens of MB to over 100 MB, that varies from shard to shard at random (no trend), and a peak taken over 10 or
  100 shards lands anywhere in that range. This is the noise that made the old single-run ratio swing
  0.54-1.23x.
- ``mmap64k`` (``MALLOC_MMAP_THRESHOLD_=65536``): every buffer over 64 KiB is its own mapping, unmapped when
  freed, so RSS follows the live tensors. This isolates what the run really holds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = r"""
import ctypes, gc, json, sys, tempfile, time
import torch
from captum_cfx import runner
from captum_cfx.runner import RunConfig, run_sharded
from captum_cfx.zoo import load_pretrained

n, out, threads, shard = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
libc = ctypes.CDLL("libc.so.6")


def status():
    d = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                d[k] = int(v.split()[0]) / 1024
    return d


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


reg = load_pretrained("squares-regressor")
rss_at_shard = []


def compute(x, y, seed):
    rss_at_shard.append(status()["VmRSS"])
    with torch.no_grad():
        return {"prediction": reg(torch.nn.functional.interpolate(x, size=32, mode="area")).flatten(), "target": y}


phase = {}
real_merge = runner.merge


def merge(out_dir, n_shards):
    phase["stream_peak_mb"] = status()["VmHWM"]
    phase["rss_before_merge_mb"] = status()["VmRSS"]
    reset_peak()
    r = real_merge(out_dir, n_shards)
    phase["merge_peak_mb"] = status()["VmHWM"]
    return r


with tempfile.TemporaryDirectory() as warm:  # warm-up: the whole path, twice the shard size
    run_sharded(RunConfig(data=f"squares-64:{2 * shard}", shard_size=shard, threads=threads), warm, compute,
                progress=False)
rss_at_shard.clear()
gc.collect()
libc.malloc_trim(0)
base = status()["VmRSS"]
reset_peak()
runner.merge = merge
t0 = time.perf_counter()
run_sharded(RunConfig(data=f"squares-64:{n}", shard_size=shard, threads=threads), out, compute, progress=False)
seconds = time.perf_counter() - t0
k = len(rss_at_shard)
mk = (k - 1) / 2
slope = (sum((i - mk) * (r - sum(rss_at_shard) / k) for i, r in enumerate(rss_at_shard))
         / max(sum((i - mk) ** 2 for i in range(k)), 1e-9))
peak = max(phase["stream_peak_mb"], phase["merge_peak_mb"])
print(json.dumps({
    "n": n, "shards": k, "seconds": seconds, "baseline_rss_mb": base, "peak_mb": peak, "added_mb": peak - base,
    "stream_added_mb": phase["stream_peak_mb"] - base, "merge_added_mb": phase["merge_peak_mb"] - base,
    "merge_own_mb": phase["merge_peak_mb"] - phase["rss_before_merge_mb"],
    "rss_first_shard_mb": rss_at_shard[0], "rss_last_shard_mb": rss_at_shard[-1],
    "rss_before_merge_mb": phase["rss_before_merge_mb"], "rss_slope_mb_per_100_shards": 100 * slope,
}))
"""


def _stats(xs: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


#: allocator settings each size runs under (see the module docstring)
ALLOCATORS = {"default": {}, "mmap64k": {"MALLOC_MMAP_THRESHOLD_": "65536"}}
KEYS = ("added_mb", "stream_added_mb", "merge_own_mb", "baseline_rss_mb", "rss_slope_mb_per_100_shards", "seconds")


def _summarise(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Median and min-max of each measure per size, and the ratio of the added-peak medians."""
    per_size = {str(n): {k: _stats([r[k] for r in runs if r["n"] == n]) for k in KEYS} for n in sizes}
    small, large = str(min(sizes)), str(max(sizes))
    ratio = per_size[large]["added_mb"]["median"] / max(per_size[small]["added_mb"]["median"], 1e-9)
    return {"per_size": per_size, "added_ratio_large_to_small_medians": ratio,
            "within_20_percent": abs(ratio - 1) <= 0.2}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=list(ALLOCATORS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory_flat_cpu.json"))
    a = p.parse_args(argv)
    runs: list[dict[str, Any]] = []
    for alloc in a.allocators:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **ALLOCATORS[alloc]}
        for rep in range(a.repeats):
            for n in a.sizes:  # interleaved, so a change in machine load touches every size alike
                with tempfile.TemporaryDirectory() as d:
                    r = subprocess.run([sys.executable, "-c", CHILD, str(n), d, str(a.threads), str(a.shard_size)],
                                       check=True, capture_output=True, text=True, env=env)
                runs.append({"allocator": alloc, "repeat": rep, **json.loads(r.stdout.strip().splitlines()[-1])})
                print(json.dumps(runs[-1]), file=sys.stderr)
    small, large = min(a.sizes), max(a.sizes)
    by_alloc = {alloc: _summarise([r for r in runs if r["allocator"] == alloc], a.sizes) for alloc in a.allocators}
    result = {
        "benchmark": "memory_flat",
        "method": "fresh process per run; warm-up = a full 2-shard run_sharded; gc + malloc_trim(0); baseline = "
                  "VmRSS; VmHWM reset via /proc/self/clear_refs; peak = max(streaming VmHWM, merge VmHWM)",
        "sizes": a.sizes, "shard_size": a.shard_size, "threads": a.threads, "repeats": a.repeats,
        "allocators": {k: ALLOCATORS[k] for k in a.allocators},
        "by_allocator": by_alloc,
        "float32_size_if_held_mb": {str(n): n * 3 * 64 * 64 * 4 / 2**20 for n in a.sizes},
        "runs": runs,
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print("\n| allocator | images | added MB, median (min-max) | streaming | merge adds | RSS slope MB/100 shards "
          "| held MB |\n|---|---|---|---|---|---|---|")
    for alloc in a.allocators:
        for n in a.sizes:
            s = by_alloc[alloc]["per_size"][str(n)]

            def fmt(k: str, s: dict[str, Any] = s) -> str:
                return f"{s[k]['median']:.1f} ({s[k]['min']:.1f} to {s[k]['max']:.1f})"

            print(f"| {alloc} | {n} | {fmt('added_mb')} | {fmt('stream_added_mb')} | {fmt('merge_own_mb')} "
                  f"| {fmt('rss_slope_mb_per_100_shards')} | {n * 3 * 64 * 64 * 4 / 2**20:.0f} |")
    print()
    for alloc in a.allocators:
        ratio = by_alloc[alloc]["added_ratio_large_to_small_medians"]
        print(f"{alloc}: added peak memory, {large} vs {small} images (medians of {a.repeats}): {ratio:.2f}x")
    return result


if __name__ == "__main__":
    main()
