"""What every benchmark script does at its end: write its JSON atomically, print it, print its table.

Imported by the scripts as ``from _common import emit`` (``python benchmarks/<name>.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


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
