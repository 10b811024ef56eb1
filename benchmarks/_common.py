"""What every benchmark script does at its end: write its JSON atomically, print it, print its table; and
the gallery figure some of them redraw.

Imported by the scripts as ``from _common import emit`` (``python benchmarks/<name>.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def emit(result: dict, path: Path, table: Callable[[dict], str]) -> None:
    """Write ``result`` to ``path`` (temp file + rename, so a killed run leaves the old file whole), then
    print the JSON and the markdown table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    print(json.dumps(result, indent=2))
    print()
    print(table(result))


def make_gallery(only: list[str]) -> list[Path]:
    """Redraw gallery figures into ``docs/images`` with the repository's ``tools/gallery.py`` (as
    ``python tools/gallery.py --only ...`` does)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.gallery import make_gallery as make

    return make(only=only)
