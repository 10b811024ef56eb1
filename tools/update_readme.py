"""Paste a ``captum-cfx compare`` report into the README, between its compare markers.

::

    captum-cfx compare --out benchmarks/results/compare            # the README's tables (default size)
    python tools/update_readme.py                                   # paste its compare.md into README.md
    python tools/update_readme.py --readme README.md --results benchmarks/results/compare

The report's headings go one level down and its figure paths become relative to the README. The README must
hold a ``<!-- compare:start ... -->`` line and a later ``<!-- compare:end -->`` line; everything between
them is replaced, so running it twice gives the same file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["README_END", "README_START", "main", "update_readme"]

README_START, README_END = "<!-- compare:start", "<!-- compare:end -->"
ROOT = Path(__file__).resolve().parent.parent


def update_readme(readme: str | Path, out_dir: str | Path) -> Path:
    """Paste ``out_dir/compare.md`` into ``readme`` between its ``<!-- compare:start ... -->`` and
    ``<!-- compare:end -->`` lines: headings one level down, figure paths relative to the README.

    Raises:
        ValueError: when the README lacks either marker or ``out_dir`` has no ``compare.md``.
    """
    path, out = Path(readme), Path(out_dir)
    if not path.is_file():
        raise ValueError(f"`readme` must be an existing file; got {str(path)!r}")
    md_path = out / "compare.md"
    if not md_path.is_file():
        raise ValueError(f"`out_dir` must hold a compare.md written by run_compare; {str(out)!r} has none")
    lines = path.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(README_START)), None)
    end = next((i for i, ln in enumerate(lines) if ln.startswith(README_END)), None)
    if start is None or end is None or end < start:
        raise ValueError(f"`readme` must hold a '{README_START} ... -->' line and a later '{README_END}' line; "
                         f"{str(path)!r} does not")
    rel = Path(os.path.relpath(out.resolve(), path.resolve().parent)).as_posix()
    body = md_path.read_text().rstrip("\n").splitlines()
    body = ["#" + ln if ln.startswith("#") else ln for ln in body]
    body = [re.sub(r"!\[([^\]]*)\]\((?!https?:|/)([^)]+)\)", lambda m: f"![{m[1]}]({rel}/{m[2]})", ln) for ln in body]
    path.write_text("\n".join([*lines[:start + 1], *body, *lines[end:]]) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python tools/update_readme.py``: paste the report (see the module docstring); 2 on bad input."""
    p = argparse.ArgumentParser(prog="python tools/update_readme.py", description=__doc__.split("\n")[0])
    p.add_argument("--readme", default=str(ROOT / "README.md"), help="the README (default: the checkout's)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "compare"),
                   help="the compare output folder holding compare.md (default benchmarks/results/compare)")
    a = p.parse_args(argv)
    try:
        path = update_readme(a.readme, a.results)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pasted {Path(a.results) / 'compare.md'} into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
