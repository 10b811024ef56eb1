"""Are `--data` tensor files streamed? Peak resident memory of opening a 188 MB file (60,000 x 1 x 28 x 28
float32 images, random) and reading two 50-image shards from it, per format, each in a fresh process.
Results: benchmarks/results/data_memory_cpu.json.

    python benchmarks/data_memory.py [--n 60000] [--work /tmp/cfx_data_memory]

The peak (``VmHWM``, reset through ``/proc/self/clear_refs`` after the imports) is compared with the resident
memory right after the imports: a streamed format adds about one shard; a format read whole adds the file's size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import emit

_CHILD = """
import json, sys
from captum_cfx.runner import open_data

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

base = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM, the peak, to the current RSS
src = open_data(sys.argv[1])
src.get(0, 50)
src.get(len(src) // 2, len(src) // 2 + 50)
print(json.dumps({"after_imports_mb": base, "peak_mb": status("VmHWM:")}))
"""

def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--work", default="/tmp/cfx_data_memory")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    from safetensors.torch import save_file

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).random((a.n, 1, 28, 28), dtype=np.float32)
    y = np.arange(a.n) % 10
    files = {
        ".npy": work / "d.npy", ".npz (np.savez)": work / "d.npz", ".npz (np.savez_compressed)": work / "dc.npz",
        ".safetensors": work / "d.safetensors", ".pt (torch.save)": work / "d.pt",
    }
    np.save(files[".npy"], x)
    np.savez(files[".npz (np.savez)"], images=x, labels=y)
    np.savez_compressed(files[".npz (np.savez_compressed)"], images=x, labels=y)
    save_file({"images": torch.from_numpy(x), "labels": torch.from_numpy(y)}, str(files[".safetensors"]))
    torch.save({"images": torch.from_numpy(x), "labels": torch.from_numpy(y)}, files[".pt (torch.save)"])
    del x
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rows = []
    for fmt, path in files.items():
        r = subprocess.run([sys.executable, "-c", _CHILD, str(path)], env=env, capture_output=True, text=True,
                           check=True)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        added = m["peak_mb"] - m["after_imports_mb"]
        rows.append({"format": fmt, "file_mb": round(path.stat().st_size / 2**20, 1),
                     "peak_mb": round(m["peak_mb"], 1), "added_mb": round(added, 1),
                     "streamed": added < 0.25 * path.stat().st_size / 2**20})
    for path in files.values():
        path.unlink()
    result = {"n_images": a.n, "shard_rows": 50, "rows": rows}

    def table(res: dict) -> str:
        lines = ["| format | file MB | peak MB | added above imports, MB | streamed |", "|---|---|---|---|---|"]
        lines += [f"| {r['format']} | {r['file_mb']} | {r['peak_mb']} | {r['added_mb']} | {r['streamed']} |"
                  for r in res["rows"]]
        return "\n".join(lines)

    emit(result, Path(__file__).resolve().parent / "results" / "data_memory_cpu.json", table)
    return result


if __name__ == "__main__":
    main()
