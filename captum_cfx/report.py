"""Turn a counterfactual run into a report folder: grid PNG, metrics.json and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from captum_cfx._io import write_json_atomic
from captum_cfx.attr.output import CounterfactualOutput
from captum_cfx.visualization import counterfactual_grid

if TYPE_CHECKING:
    pass

__all__ = ["append_descriptor_report", "write_json_atomic", "write_report"]


def write_report(out_dir: Path, inputs: Tensor, labels: Tensor, targets: Tensor, *, result: CounterfactualOutput,
                 metrics: dict[str, Any], title: str = "captum-cfx explain", max_rows: int = 8) -> dict[str, Path]:
    """Write ``grid.png``, ``metrics.json`` and ``report.md`` into ``out_dir``; return their paths."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    maps = result.counterfactuals - result.reconstructions
    # a class-diverse selection of rows: the first sample of each source label, then the rest
    order: list[int] = []
    seen: set[int] = set()
    for i, lab in enumerate(labels.tolist()):
        if lab not in seen:
            order.append(i)
            seen.add(lab)
    order += [i for i in range(len(labels)) if i not in order]
    idx = torch.tensor(order[:max_rows], dtype=torch.long)
    pred = result.predictions.argmax(1) if result.predictions.dim() == 2 else result.predictions
    rows = [f"{int(labels[i])}→{int(targets[i])} ({'ok' if result.success[i] else 'fail'}, pred {int(pred[i])})"
            for i in idx]
    fig = counterfactual_grid(inputs[idx].cpu(), result.reconstructions[idx].cpu(),
                              result.counterfactuals[idx].cpu(), maps[idx].cpu(), row_labels=rows, max_rows=max_rows)
    grid = out_dir / "grid.png"
    fig.savefig(grid, dpi=110)
    plt.close(fig)
    mpath = out_dir / "metrics.json"
    write_json_atomic(mpath, metrics)
    lines = [f"# {title}", "", "![counterfactual grid](grid.png)", "", "| metric | value |", "|---|---|"]
    for k, v in metrics.items():
        if isinstance(v, (int, float, str, bool)):
            lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    lines += ["", "Columns of the grid: original, reconstruction G(E(x)), counterfactual, and the difference",
              "map (counterfactual − reconstruction) drawn with Captum's `visualize_image_attr`.", ""]
    rpath = out_dir / "report.md"
    rpath.write_text("\n".join(lines))
    return {"grid": grid, "metrics": mpath, "report": rpath}


def append_descriptor_report(out_dir: Path, explanation: Any, global_attr: Any, row_labels: list[str],
                             *, max_rows: int = 6) -> dict[str, Path]:
    """Add descriptor bars (per counterfactual) and a global chart (per class transition) to ``report.md``.

    Args:
        out_dir: a report folder written by :func:`write_report`.
        explanation: a ``DescriptorAttributionOutput`` (``CounterfactualDescriptorAttribution.explain``).
        global_attr: a ``GlobalDescriptorAttribution`` (``global_attribution``).
        row_labels: one title per counterfactual, e.g. ``"3→8 (ok)"``.
    """
    import matplotlib.pyplot as plt

    from captum_cfx.descriptors.plotting import plot_descriptor_bars, plot_global_descriptors

    cf = explanation.counterfactuals
    n = min(len(cf), max_rows)
    pairs = torch.cat([cf.reconstructions[:n, :1], cf.counterfactuals[:n, :1]], 1).cpu()
    fig = plot_descriptor_bars(explanation.deltas[:n].cpu(), explanation.descriptor_names, row_labels[:n],
                               images=pairs, max_rows=n)
    bars = out_dir / "descriptor_bars.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)
    fig = plot_global_descriptors(global_attr.values, global_attr.descriptor_names, global_attr.transitions,
                                  global_attr.counts, stderr=global_attr.stderr)
    glob = out_dir / "descriptor_global.png"
    fig.savefig(glob, dpi=110)
    plt.close(fig)
    rpath = out_dir / "report.md"
    lines = ["## What changed, in descriptors", "",
             "Latent-probe descriptor changes Δ = probe(z_cf) − probe(z0) (Goldwasser & Hooker 2025), in standard",
             "deviations of each Morpho-MNIST measurement; red = increased, blue = decreased.", "",
             "![descriptor bars](descriptor_bars.png)", "",
             "Global explanation: mean Δ per class transition (the transitions with the most counterfactuals,",
             "error bars = standard error).", "", "![global descriptors](descriptor_global.png)", ""]
    with rpath.open("a") as f:
        f.write("\n" + "\n".join(lines))
    return {"descriptor_bars": bars, "descriptor_global": glob}
