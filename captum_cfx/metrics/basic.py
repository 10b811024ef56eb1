"""Validity, oracle agreement and proximity: per-sample values plus an aggregate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MetricResult", "oracle_agreement", "proximity", "sparsity", "validity"]


@dataclass
class MetricResult:
    """``values``: one number per sample; ``value``: the aggregate (mean unless stated)."""

    values: Tensor
    value: float

    @staticmethod
    def of(values: Tensor, agg: str = "mean") -> MetricResult:
        v = values.detach().float().cpu()
        if v.numel() == 0:
            return MetricResult(v, float("nan"))
        return MetricResult(v, float(v.median() if agg == "median" else v.mean()))


def validity(success: Tensor) -> MetricResult:
    """Validity (flip / success rate): the fraction of samples whose search reached its objective."""
    return MetricResult.of(success.float())


@torch.no_grad()
def oracle_agreement(oracle: Callable[[Tensor], Tensor], counterfactuals: Tensor, targets: Tensor,
                     success: Tensor | None = None, batch_size: int = 1000) -> MetricResult:
    """Fraction of counterfactuals that an independent ``oracle`` classifies as the target class.

    Failed searches (``success == False``) count as disagreement, so the figure is over all samples.
    """
    preds = torch.cat([oracle(counterfactuals[i : i + batch_size]).argmax(1)
                       for i in range(0, len(counterfactuals), batch_size)]) if len(counterfactuals) else targets
    agree = preds == targets.to(preds.device)
    if success is not None:
        agree = agree & success.to(agree.device)
    return MetricResult.of(agree.float())


def proximity(a: Tensor, b: Tensor, p: int = 2) -> MetricResult:
    """Per-sample ``L_p`` distance between two batches (pixels or latents), aggregated by the median."""
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    return MetricResult.of((a - b).flatten(1).norm(p=p, dim=1), agg="median")


def sparsity(a: Tensor, b: Tensor, threshold: float = 0.1) -> MetricResult:
    """Fraction of pixels (over channels: any) that changed by more than ``threshold``; lower is sparser."""
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    changed = ((a - b).abs() > threshold).any(1)
    return MetricResult.of(changed.flatten(1).float().mean(1))
