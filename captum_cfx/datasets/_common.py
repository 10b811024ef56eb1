"""Helpers shared by the procedural worlds."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def render_in_chunks(render: Callable[[Tensor], Tensor], factors: Tensor, image_shape: tuple[int, ...],
                     chunk: int) -> Tensor:
    """``render(factors)`` in chunks of ``chunk`` rows: the temporaries stay in cache (about 2x faster)."""
    if factors.shape[0] <= chunk:
        return render(factors)
    out = torch.empty(factors.shape[0], *image_shape, device=factors.device)
    for i in range(0, factors.shape[0], chunk):
        out[i : i + chunk] = render(factors[i : i + chunk])
    return out
