"""Figures for descriptor attributions: signed top-k bars per counterfactual and global charts per transition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

__all__ = ["plot_descriptor_bars", "plot_global_descriptors"]

_POS, _NEG = "#d62728", "#1f77b4"


def _bars(ax: plt.Axes, values: np.ndarray, names: Sequence[str], k: int, err: np.ndarray | None = None) -> None:
    order = np.argsort(-np.abs(values))[:k][::-1]
    vals = values[order]
    ax.barh(range(len(order)), vals, color=[_POS if v >= 0 else _NEG for v in vals],
            xerr=None if err is None else err[order], ecolor="0.4", capsize=2)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([names[i] for i in order], fontsize=8)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.tick_params(axis="x", labelsize=7)


def plot_descriptor_bars(deltas: Tensor, names: Sequence[str], titles: Sequence[str] | None = None, k: int = 6,
                         *, images: Tensor | None = None, max_rows: int = 6) -> Figure:
    """Signed top-``k`` descriptor changes for each of the first ``max_rows`` counterfactuals.

    Args:
        deltas: ``(N, n_descriptors)`` from ``CounterfactualDescriptorAttribution.attribute``.
        names: the descriptor names.
        titles: one title per row (e.g. ``"3→8"``).
        k: bars per row, the largest ``|delta|`` first.
        images: optional ``(N, 2, H, W)`` pairs (original, counterfactual) drawn left of the bars.
        max_rows: rows drawn.

    Shape:
        - deltas: ``(N, k_total)``; images: ``(N, 2, H, W)`` in ``[0, 1]``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(deltas, Tensor) or deltas.dim() != 2 or deltas.shape[1] != len(names):
        raise ValueError(f"`deltas` must be (N, {len(names)}) to match `names`; got "
                         f"{getattr(deltas, 'shape', type(deltas).__name__)}")
    n = min(len(deltas), max_rows)
    if n == 0:
        raise ValueError("`deltas` must hold at least one row")
    d = deltas[:n].detach().float().cpu().numpy()
    ncol = 3 if images is not None else 1
    widths = [1, 1, 3] if images is not None else [1]
    fig, axes = plt.subplots(n, ncol, figsize=(5.0 if images is not None else 3.6, 1.5 * n), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for i in range(n):
        if images is not None:
            for j in range(2):
                axes[i, j].imshow(images[i, j].detach().float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
                axes[i, j].set_xticks([])
                axes[i, j].set_yticks([])
            if i == 0:
                axes[0, 0].set_title("reconstruction", fontsize=7)
                axes[0, 1].set_title("counterfactual", fontsize=7)
        ax = axes[i, -1]
        _bars(ax, d[i], names, k)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    axes[-1, -1].set_xlabel("Δ descriptor (probability / standard deviations)", fontsize=7)
    fig.tight_layout()
    return fig


def plot_global_descriptors(values: Tensor, names: Sequence[str], transitions: Sequence[tuple[int, int]],
                            counts: Tensor | None = None, *, stderr: Tensor | None = None,
                            max_panels: int = 6, k: int = 6) -> Figure:
    """One signed bar chart per class transition (a ``GlobalDescriptorAttribution``'s rows).

    Args:
        values: ``(T, n_descriptors)`` mean descriptor changes.
        names: descriptor names.
        transitions: ``T`` pairs ``(source, target)``; ``-1`` reads "any class".
        counts: ``(T,)`` counterfactuals per transition (shown in the titles; panels sorted by it).
        stderr: ``(T, n_descriptors)`` error bars.
        max_panels: panels drawn (the transitions with the most counterfactuals).
        k: bars per panel.
    """
    import matplotlib.pyplot as plt

    if not isinstance(values, Tensor) or values.dim() != 2 or values.shape[1] != len(names):
        raise ValueError(f"`values` must be (T, {len(names)}); got {getattr(values, 'shape', type(values).__name__)}")
    if len(transitions) != values.shape[0] or values.shape[0] == 0:
        raise ValueError(f"`transitions` must name each of the {values.shape[0]} rows (at least one); "
                         f"got {len(transitions)}")
    order = list(range(len(transitions)))
    if counts is not None:
        order.sort(key=lambda t: -int(counts[t]))
    order = order[:max_panels]
    cols = min(3, len(order))
    rows = (len(order) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.0 * rows), squeeze=False)
    v = values.detach().float().cpu().numpy()
    e = stderr.detach().float().cpu().numpy() if stderr is not None else None
    for p, t in enumerate(order):
        ax = axes[p // cols, p % cols]
        _bars(ax, v[t], names, k, None if e is None else e[t])
        s, g = transitions[t]
        label = f"{'any' if s == -1 else s} → {'any' if g == -1 else g}"
        if counts is not None:
            label += f"  (n={int(counts[t])})"
        ax.set_title(label, fontsize=8)
    for p in range(len(order), rows * cols):
        axes[p // cols, p % cols].axis("off")
    fig.tight_layout()
    return fig
