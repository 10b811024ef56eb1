"""Import time of ``captum_cfx`` against ``captum.attr``, each in fresh interpreters, in one run.

Every statement runs in its own new ``python -c`` process (so nothing is cached in ``sys.modules``), the
statements interleaved round by round so that machine load hits them alike; the figure is the median of
``--repeats`` wall times measured inside the process around the statement alone (interpreter start-up
excluded). Also recorded: which heavy modules each statement leaves in ``sys.modules``.

Bytecode is cached as in an installed package (``pip`` compiles it; torch and captum ship compiled): the
processes write and reuse ``.pyc`` files under a temporary ``PYTHONPYCACHEPREFIX`` (even where
``PYTHONDONTWRITEBYTECODE`` is set), after one unrecorded warm-up round. ``--no-bytecode-cache`` measures the
uncached case, where every import of our sources also compiles them.

    python benchmarks/import_time.py             # 9 repeats, writes benchmarks/results/import_time_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import emit

ROOT = Path(__file__).resolve().parent.parent
STATEMENTS = {
    "import torch": "import torch",
    "import captum.attr": "import captum.attr",
    "import captum_cfx": "import captum_cfx",
    "from captum_cfx import LatentCounterfactualAttack": "from captum_cfx import LatentCounterfactualAttack",
}
HEAVY = ("torch", "captum.attr", "captum.concept", "matplotlib.pyplot", "scipy.ndimage", "sklearn", "diffusers")
PROBE = """
import json, sys, time
t0 = time.perf_counter()
{stmt}
t1 = time.perf_counter()
print(json.dumps({{"seconds": t1 - t0, "loaded": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def measure(stmt: str, pycache: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    out = subprocess.run([sys.executable, "-c", PROBE.format(stmt=stmt, heavy=HEAVY)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(r: dict) -> str:
    base = r["median_seconds"]["import captum.attr"]
    lines = ["| statement | median s | min s | x `import captum.attr` | heavy modules loaded |",
             "|---|---|---|---|---|"]
    for name in STATEMENTS:
        med, lo = r["median_seconds"][name], min(r["seconds"][name])
        lines.append(f"| `{name}` | {med:.3f} | {lo:.3f} | {med / base:.2f} | {', '.join(r['loaded'][name]) or '-'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "import_time_cpu.json")
    p.add_argument("--no-bytecode-cache", action="store_true", help="compile every source on every import")
    a = p.parse_args()
    seconds: dict[str, list[float]] = {k: [] for k in STATEMENTS}
    loaded: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pycache = None if a.no_bytecode_cache else tmp
        for stmt in STATEMENTS.values():  # warm the file system (and bytecode) caches once, unrecorded
            measure(stmt, pycache)
        for _ in range(a.repeats):
            for name, stmt in STATEMENTS.items():
                res = measure(stmt, pycache)
                seconds[name].append(round(res["seconds"], 4))
                loaded[name] = res["loaded"]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "repeats": a.repeats,
        "bytecode_cache": not a.no_bytecode_cache,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seconds": seconds,
        "median_seconds": med,
        "loaded": loaded,
        "ratio_import_captum_cfx_to_captum_attr": med["import captum_cfx"] / med["import captum.attr"],
        "ratio_public_api_to_captum_attr":
            med["from captum_cfx import LatentCounterfactualAttack"] / med["import captum.attr"],
    }
    emit(result, a.out, table)


if __name__ == "__main__":
    main()
