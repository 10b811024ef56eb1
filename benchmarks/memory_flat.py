"""Memory stays flat in the data-set size: the peak resident memory that a sharded run adds above the
process baseline, for 5,000 and 50,000 generated 64x64 squares images (about 60 and 600 MB as float32
if held at once). Each size runs in its own process; each shard is generated on demand, passed through
the shipped squares regressor and written as a shard. Results: benchmarks/results/memory_flat_cpu.json.

    python benchmarks/memory_flat.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, torch
from captum_cfx.runner import RunConfig, run_sharded
from captum_cfx.zoo import load_pretrained
reg = load_pretrained("squares-regressor")
def compute(x, y, seed):
    with torch.no_grad():
        return {"prediction": reg(torch.nn.functional.interpolate(x, size=32, mode="area")).flatten(), "target": y}
from captum_cfx.runner import open_data
n = int(sys.argv[1])
x, y, _ = open_data(f"squares-64:{n}").get(0, 500)  # warm: generator, allocator and kernels at shard size
compute(x, y, 0)
del x, y
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run_sharded(RunConfig(data=f"squares-64:{n}", shard_size=500, threads=2), sys.argv[2], compute, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "baseline_mb": base / 1024, "peak_mb": peak / 1024, "added_mb": (peak - base) / 1024}))
"""


def main() -> None:
    rows = []
    for n in (5000, 50000):
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), d], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratio = rows[1]["added_mb"] / max(rows[0]["added_mb"], 1e-9)
    result = {"benchmark": "memory_flat", "rows": rows, "added_ratio_50k_to_5k": ratio,
              "float32_size_if_held_mb": {str(r["n"]): r["n"] * 3 * 64 * 64 * 4 / 2**20 for r in rows}}
    path = Path(__file__).parent / "results" / "memory_flat_cpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print("\n| images | baseline MB | peak MB | added MB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | {r['added_mb']:.1f} |")
    print(f"\nadded memory, 50,000 vs 5,000 images: {ratio:.2f}x")


if __name__ == "__main__":
    main()
