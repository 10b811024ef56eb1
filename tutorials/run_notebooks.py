"""Execute every tutorial notebook with nbclient; fail loudly on the first error.

    CFX_TUTORIAL_N=20 python tutorials/run_notebooks.py

Kernels run with one intra-op thread (``OMP_NUM_THREADS=1`` unless set): with two threads on a machine whose
other core is busy, torch's OpenMP barriers made notebook 04 ten times slower (230 s vs 22 s).
"""

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the kernels
    failed = 0
    for path in sorted(HERE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        try:
            client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(HERE)}})
            client.execute()
            print(f"ok    {path.name} ({time.perf_counter() - t0:.1f}s)")
        except Exception as e:  # noqa: BLE001 - report every failing notebook
            failed += 1
            print(f"FAIL  {path.name}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
