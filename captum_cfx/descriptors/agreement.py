"""How well latent-probe descriptor changes agree with changes measured on the images."""

from __future__ import annotations

import torch
from torch import Tensor

from captum_cfx.metrics import MetricResult

__all__ = ["sign_agreement"]


def sign_agreement(latent_delta: Tensor, image_delta: Tensor, quantile: float = 0.75,
                   mask: Tensor | None = None) -> MetricResult:
    """Fraction of (counterfactual, descriptor) pairs where the probe change has the sign of the image change.

    Only pairs whose image-measured ``|delta|`` is at or above the ``quantile`` of its descriptor column are
    counted (small image changes have no reliable sign). Columns are compared separately, so put both
    deltas in the same units (e.g. standardised by the descriptor's training standard deviation).

    Args:
        latent_delta: probe changes, e.g. from ``CounterfactualDescriptorAttribution.attribute``.
        image_delta: changes measured on decoded images (counterfactual minus reconstruction).
        quantile: per-column quantile of ``|image_delta|`` that selects the pairs (0 keeps all).
        mask: optional ``(N,)`` bool selecting rows (e.g. successful counterfactuals).

    Shape:
        - latent_delta, image_delta: ``(N, k)``; returns a :class:`~captum_cfx.metrics.MetricResult` whose
          ``values`` is the per-descriptor agreement ``(k,)`` and ``value`` the agreement over all
          selected pairs.
    """
    if not isinstance(latent_delta, Tensor) or not isinstance(image_delta, Tensor):
        raise TypeError("`latent_delta` and `image_delta` must be torch.Tensors")
    if latent_delta.dim() != 2 or latent_delta.shape != image_delta.shape:
        raise ValueError(f"`latent_delta` and `image_delta` must both be (N, k) with the same shape; got "
                         f"{tuple(latent_delta.shape)} and {tuple(image_delta.shape)}")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"`quantile` must be in [0, 1); got {quantile!r}")
    a, b = latent_delta.detach().double().cpu(), image_delta.detach().double().cpu()
    if mask is not None:
        a, b = a[mask.cpu()], b[mask.cpu()]
    if a.shape[0] == 0:
        raise ValueError("no rows to compare (empty inputs or an all-False `mask`)")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("`latent_delta` and `image_delta` must be finite")
    thr = b.abs().quantile(quantile, dim=0, keepdim=True)
    sel = (b.abs() >= thr) & (b != 0)
    agree = (torch.sign(a) == torch.sign(b)) & sel
    per_col = agree.sum(0).double() / sel.sum(0).clamp_min(1).double()
    value = float(agree.sum()) / max(int(sel.sum()), 1)
    return MetricResult(values=per_col.float(), value=value)
