"""The README's Python snippets run, as a user would copy them (every fenced ``python`` block, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_readme_has_python_snippets() -> None:
    assert BLOCKS, "README.md has no fenced python block: this test would check nothing"
    assert "from captum.attr import visualization as viz" in BLOCKS[0]  # the Quickstart's first line


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive:UserWarning")  # plt.show() under Agg
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # whatever a snippet writes lands in a temporary folder
    namespace: dict[str, object] = {"__name__": "__readme__"}
    try:
        exec(compile(BLOCKS[index], f"README.md (python block {index + 1})", "exec"), namespace)
    finally:
        plt.close("all")
    if index == 0:  # the Quickstart: maps shaped like the inputs, a counterfactual per digit
        x, maps, out = namespace["x"], namespace["maps"], namespace["out"]
        assert maps.shape == x.shape and bool(out.success.all())
