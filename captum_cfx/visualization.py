"""Figures: counterfactual grids and difference maps (drawn with Captum's ``visualize_image_attr``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

__all__ = ["counterfactual_grid", "direction_grid", "plot_attribution"]


def _hwc(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().permute(1, 2, 0).numpy()


def plot_attribution(attribution: Tensor, image: Tensor | None = None, title: str | None = None,
                     ax: plt.Axes | None = None, *, sign: str = "all") -> Figure:
    """Draw one ``(C, H, W)`` attribution map as a heat map with Captum's ``visualize_image_attr``.

    Captum raises on an all-zero map (nothing to normalise); that case (no change was needed) is
    drawn as a blank panel with a note instead.

    Shape:
        - attribution, image: ``(C, H, W)``.
    """
    import matplotlib.pyplot as plt
    from captum.attr._utils.visualization import visualize_image_attr

    if attribution.dim() != 3:
        raise ValueError(f"`attribution` must be (C, H, W); got {tuple(attribution.shape)}")
    fig = ax.figure if ax is not None else plt.figure(figsize=(2.2, 2.2))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    if float(attribution.abs().max()) == 0.0:
        ax.imshow(np.zeros(attribution.shape[1:]), cmap="gray", vmin=-1, vmax=1)
        ax.text(0.5, 0.5, "no change", ha="center", va="center", transform=ax.transAxes, color="w", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        visualize_image_attr(_hwc(attribution), _hwc(image) if image is not None else None, method="heat_map",
                             sign=sign, plt_fig_axis=(fig, ax), use_pyplot=False, title=title)
    if title:
        ax.set_title(title, fontsize=8)
    return fig


def counterfactual_grid(originals: Tensor, reconstructions: Tensor, counterfactuals: Tensor, maps: Tensor,
                        *, row_labels: Sequence[str] | None = None, max_rows: int = 8) -> Figure:
    """A grid: original | reconstruction | counterfactual | difference map (one row per image).

    Shape:
        - every tensor: ``(N, C, H, W)`` with images in ``[0, 1]``; ``maps`` signed.
    """
    import matplotlib.pyplot as plt

    n = min(len(originals), max_rows)
    if n == 0:
        raise ValueError("`originals` must hold at least one image")
    fig, axes = plt.subplots(n, 4, figsize=(6.4, 1.6 * n), squeeze=False)
    cols = ["original", "reconstruction", "counterfactual", "difference"]
    for i in range(n):
        for j, img in enumerate((originals[i], reconstructions[i], counterfactuals[i])):
            ax = axes[i, j]
            arr = _hwc(img)
            ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr.clip(0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        plot_attribution(maps[i], None, ax=axes[i, 3])
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    for j, c in enumerate(cols):
        axes[0, j].set_title(c, fontsize=8)
    fig.tight_layout()
    return fig



def direction_grid(gcd: object, model: torch.nn.Module, images: Tensor, alphas: Sequence[float], *,
                   classes: tuple[int, int] | None = None) -> Figure:
    """A fitted global direction applied to several images (rows) at several steps (columns).

    Each panel is titled with the model's probabilities of the two classes of the question.

    Args:
        gcd: a fitted :class:`~captum_cfx.GlobalCounterfactualDirections`.
        model: the classifier (logits ``(N, K)``).
        images: grey images, one row each.
        alphas: the steps, one column each (0 shows the reconstruction).
        classes: ``(negative, positive)`` classes whose probabilities head each panel (default: the
            question's, ``gcd.classes``).

    Shape:
        - images: ``(N, 1, H, W)`` in ``[0, 1]``.
    """
    import matplotlib.pyplot as plt

    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"`images` must be (N, 1, H, W) grey images; got {tuple(images.shape)}")
    classes = classes if classes is not None else getattr(gcd, "classes", None)
    if classes is None:
        raise ValueError("`classes` must be (negative, positive) when the direction's question has none")
    neg, pos = classes
    fig, axes = plt.subplots(len(images), len(alphas), figsize=(1.3 * len(alphas), 1.3 * len(images)),
                             squeeze=False)
    with torch.no_grad():
        for j, al in enumerate(alphas):
            out = gcd.transfer(images, [float(al)])  # type: ignore[attr-defined]
            probs = torch.softmax(model(out.counterfactuals), 1)
            for i in range(len(images)):
                ax = axes[i, j]
                ax.imshow(out.counterfactuals[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"p{neg}={probs[i, neg]:.2f} p{pos}={probs[i, pos]:.2f}", fontsize=5)
                if i == len(images) - 1:
                    ax.set_xlabel(f"alpha={al:.2f}", fontsize=6)
    kind = gcd.direction_kinds_[gcd.best_index_]  # type: ignore[attr-defined]
    fig.suptitle(f"GCD {kind} from one {pos}, applied to other {pos}s", fontsize=7)
    fig.tight_layout()
    return fig
