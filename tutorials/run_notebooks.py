"""Execute every tutorial notebook with nbclient; fail loudly on the first error.

    CFX_TUTORIAL_N=20 python tutorials/run_notebooks.py
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = 0
    for path in sorted(HERE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        try:
            NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
            print(f"ok    {path.name} ({time.perf_counter() - t0:.1f}s)")
        except Exception as e:  # noqa: BLE001 - report every failing notebook
            failed += 1
            print(f"FAIL  {path.name}: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
