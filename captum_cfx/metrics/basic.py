"""Validity, oracle agreement, proximity, sparsity and cost: per-sample values plus an aggregate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["MetricResult", "latent_proximity", "oracle_agreement", "proximity", "seconds_per_counterfactual",
           "sparsity", "steps_per_counterfactual", "validity"]


@dataclass
class MetricResult:
    """``values``: one number per sample; ``value``: the aggregate (mean unless stated).

    Set-level metrics (FID, sFID) have no per-sample value: there ``values`` holds one number per
    set (the single FID, or the FID of each split).
    """

    values: Tensor
    value: float

    @staticmethod
    def of(values: Tensor, agg: str = "mean") -> MetricResult:
        v = values.detach().float().cpu()
        if v.numel() == 0:
            return MetricResult(v, float("nan"))
        return MetricResult(v, float(v.median() if agg == "median" else v.mean()))


def _check_tensor(t: Any, argument: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"`{argument}` must be a torch.Tensor; got {type(t).__name__}")
    return t


def _check_pair(a: Any, b: Any, names: tuple[str, str] = ("a", "b")) -> None:
    _check_tensor(a, names[0])
    _check_tensor(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same shape; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.dim() < 1:
        raise ValueError(f"`{names[0]}` and `{names[1]}` must be batches (N, ...); got a scalar")


def validity(success: Tensor) -> MetricResult:
    """Validity (flip / success rate): the fraction of samples whose search reached its objective.

    Shape:
        - success: ``(N,)`` bool (or 0/1); ``values`` is ``success`` as floats, ``value`` their mean.
    """
    _check_tensor(success, "success")
    return MetricResult.of(success.float())


@torch.no_grad()
def oracle_agreement(oracle: Callable[[Tensor], Tensor], counterfactuals: Tensor, targets: Tensor,
                     success: Tensor | None = None, *, batch_size: int = 1000,
                     tolerance: float | None = None) -> MetricResult:
    """Fraction of counterfactuals that an independent ``oracle`` assigns to the target.

    A classifier oracle agrees when its argmax is the target class; a regression oracle (give
    ``tolerance``) agrees when its output lies within ``tolerance`` of the target value. Failed
    searches (``success == False``) count as disagreement, so the figure is over all samples. With the
    explained model itself as the ``oracle`` this is the validity of the counterfactuals as judged by
    that model.

    Source: the "oracle score" of Hvilshøj et al., *On Quantitative Evaluations of Counterfactuals*
    (2021): a second classifier, trained independently, must agree with the counterfactual class.

    Args:
        oracle: a callable ``(N, C, H, W) -> (N, K)`` logits, or ``(N,)`` / ``(N, 1)`` values with ``tolerance``.
        counterfactuals: the images to judge.
        targets: the class (or value, with ``tolerance``) each counterfactual should show.
        success: optional bool mask of searches that reached their objective.
        batch_size: oracle batch size.
        tolerance: regression: the largest ``|oracle(x') - target|`` that counts as agreement.

    Shape:
        - counterfactuals: ``(N, C, H, W)``; targets, success: ``(N,)``; ``values``: ``(N,)`` in {0, 1}.
    """
    _check_tensor(counterfactuals, "counterfactuals")
    _check_tensor(targets, "targets")
    if targets.shape[:1] != counterfactuals.shape[:1]:
        raise ValueError(f"`targets` must hold one entry per counterfactual ({counterfactuals.shape[0]}); "
                         f"got shape {tuple(targets.shape)}")
    if tolerance is not None and not tolerance > 0:
        raise ValueError(f"`tolerance` must be > 0; got {tolerance}")
    if not len(counterfactuals):
        return MetricResult.of(torch.zeros(0))
    outs = torch.cat([oracle(counterfactuals[i : i + batch_size]) for i in range(0, len(counterfactuals), batch_size)])
    if tolerance is None:
        if outs.dim() != 2:
            raise ValueError(f"a classifier `oracle` must return (N, K) logits; got shape {tuple(outs.shape)} "
                             "(give `tolerance` for a regression oracle)")
        agree = outs.argmax(1) == targets.to(outs.device)
    else:
        vals = outs.reshape(len(outs), -1)
        if vals.shape[1] != 1:
            raise ValueError(f"a regression `oracle` must return (N,) or (N, 1) values; got {tuple(outs.shape)}")
        agree = (vals[:, 0] - targets.to(vals)).abs() <= tolerance
    if success is not None:
        agree = agree & success.to(agree.device).bool()
    return MetricResult.of(agree.float())


def proximity(a: Tensor, b: Tensor, p: int = 2) -> MetricResult:
    """Per-sample ``L_p`` distance between two batches (pixels or latents), aggregated by the median.

    Shape:
        - a, b: ``(N, ...)``, the same shape; ``values``: ``(N,)``.

    Examples::

        >>> import torch
        >>> from captum_cfx.metrics import proximity
        >>> proximity(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2), p=1).value
        4.0
    """
    _check_pair(a, b)
    return MetricResult.of((a - b).flatten(1).norm(p=p, dim=1), agg="median")


@torch.no_grad()
def latent_proximity(generator: Any, originals: Tensor, counterfactuals: Tensor, p: int = 2,
                     *, batch_size: int = 1000) -> MetricResult:
    """Per-sample ``L_p`` distance between the latents of originals and counterfactuals; median aggregate.

    Both batches are encoded with the same ``generator`` (its free latent part), so methods that never
    touch a latent space (pixel attacks) are measured in the same units as latent methods.

    Args:
        generator: a :class:`~captum_cfx.generators.LatentGenerator`.
        originals, counterfactuals: image batches in the generator's input range.
        p: the norm.
        batch_size: encoder batch size.

    Shape:
        - originals, counterfactuals: ``(N, C, H, W)``; ``values``: ``(N,)``.
    """
    _check_pair(originals, counterfactuals, ("originals", "counterfactuals"))
    if not hasattr(generator, "encode"):
        raise TypeError(f"`generator` must be a LatentGenerator with `encode`; got {type(generator).__name__}")
    lo, hi = getattr(generator, "input_range", None) or (-float("inf"), float("inf"))

    def enc(x: Tensor) -> Tensor:
        return torch.cat([generator.encode(x[i : i + batch_size].clamp(lo, hi)).free.flatten(1)
                          for i in range(0, len(x), batch_size)])

    if not len(originals):
        return MetricResult.of(torch.zeros(0), agg="median")
    return proximity(enc(originals), enc(counterfactuals), p=p)


def sparsity(a: Tensor, b: Tensor, threshold: float = 0.1) -> MetricResult:
    """Fraction of pixels (over channels: any) that changed by more than ``threshold``; lower is sparser.

    Shape:
        - a, b: ``(N, C, H, W)``; ``values``: ``(N,)`` in ``[0, 1]``.
    """
    _check_pair(a, b)
    if a.dim() != 4:
        raise ValueError(f"`a` and `b` must be image batches (N, C, H, W); got shape {tuple(a.shape)}")
    if not threshold >= 0:
        raise ValueError(f"`threshold` must be >= 0; got {threshold}")
    changed = ((a - b).abs() > threshold).any(1)
    return MetricResult.of(changed.flatten(1).float().mean(1))


def steps_per_counterfactual(n_steps: Tensor) -> MetricResult:
    """Optimisation steps (or model queries) each counterfactual took; aggregate: mean.

    Shape:
        - n_steps: ``(N,)`` integers, e.g. :attr:`~captum_cfx.CounterfactualOutput.n_steps`.
    """
    _check_tensor(n_steps, "n_steps")
    if n_steps.dim() != 1:
        raise ValueError(f"`n_steps` must be (N,); got shape {tuple(n_steps.shape)}")
    return MetricResult.of(n_steps.float())


def seconds_per_counterfactual(seconds: float, n: int) -> float:
    """Wall time per counterfactual of a batched search: ``seconds / n``.

    A batched search does not time its samples one by one, so there is no per-sample value.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"`n` must be a positive int; got {n!r}")
    if not seconds >= 0:
        raise ValueError(f"`seconds` must be >= 0; got {seconds}")
    return float(seconds) / n
