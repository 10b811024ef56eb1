"""What "counterfactual" means for a model output: a per-sample loss and a per-sample done flag.

Every objective is used in two steps: :meth:`Objective.prepare` turns the model's output on the
originals and the user's ``target`` into a per-sample goal tensor (one row per example, so that it
can be indexed when finished samples are compacted away), then :meth:`Objective.loss` and
:meth:`Objective.done` compare any later output with that goal.

Shape:
    - outputs: ``(N, K)`` logits (classifiers; ``K == 1`` is a binary model with one logit) or
      ``(N,)`` / ``(N, 1)`` values (regressors).
    - goal: ``(N,)``; loss and done: ``(N,)``.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_cfx._validation import check_float, parse_target

__all__ = [
    "Flip",
    "LogitMargin",
    "Objective",
    "ProbabilityThreshold",
    "RegressionTarget",
    "TargetClass",
    "choose_targets",
    "get_objective",
]


def _logits_2d(outputs: Tensor) -> Tensor:
    if outputs.dim() == 1:
        return outputs.unsqueeze(1)
    if outputs.dim() != 2:
        raise ValueError(f"the model's output must be (N, K) logits; got shape {tuple(outputs.shape)}")
    return outputs


def _target_vs_rest(logits: Tensor, goal: Tensor) -> tuple[Tensor, Tensor]:
    """(logit of the goal class, largest other logit), both (N,)."""
    t = logits.gather(1, goal.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, goal.view(-1, 1), float("-inf")).amax(1)
    return t, other


class Objective(ABC):
    """Base class: a goal per sample, a differentiable loss and a done flag."""

    #: whether the objective needs a ``target`` (``False``: it derives the goal from the original).
    needs_target: bool = True

    @abstractmethod
    def prepare(self, outputs: Tensor, target: Any) -> Tensor:
        """The per-sample goal ``(N,)`` from the model's outputs on the originals and ``target``."""

    @abstractmethod
    def loss(self, outputs: Tensor, goal: Tensor) -> Tensor:
        """Per-sample loss ``(N,)`` (lower is closer to the goal)."""

    @abstractmethod
    def done(self, outputs: Tensor, goal: Tensor) -> Tensor:
        """Per-sample bool ``(N,)``: the output has reached the goal."""

    def score(self, outputs: Tensor, goal: Tensor) -> Tensor:
        """Per-sample ``(N,)``: how far the output is from the goal, lower is better, never clamped (so it
        also ranks outputs that have all reached the goal by how far past it they are). Default: the loss;
        objectives whose loss is clamped at the goal override it."""
        return self.loss(outputs, goal)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class _Classification(Objective):
    def prepare(self, outputs: Tensor, target: Any) -> Tensor:
        logits = _logits_2d(outputs)
        if logits.shape[1] < 2:
            raise ValueError(f"{type(self).__name__} needs a multi-class model with (N, K >= 2) logits; "
                             f"got {tuple(outputs.shape)}; use ProbabilityThreshold for one-logit models")
        if target is None:
            raise ValueError(f"`target` is required by {type(self).__name__}: give the class to reach")
        return parse_target(target, logits.shape[0], logits.shape[1], logits.device)


class TargetClass(_Classification):
    """Reach class ``target`` with softmax probability ``>= threshold`` (cross-entropy loss).

    Args:
        threshold: probability of the target class at which a sample is done (0.5 in the MNIST
            digit-to-digit experiments of Goldwasser & Hooker).
    """

    def __init__(self, threshold: float = 0.5) -> None:
        check_float(threshold, "threshold", low=0, high=1, low_open=True, high_open=True)
        self.threshold = threshold

    def loss(self, outputs: Tensor, goal: Tensor) -> Tensor:
        return F.cross_entropy(_logits_2d(outputs), goal, reduction="none")

    def done(self, outputs: Tensor, goal: Tensor) -> Tensor:
        p = _logits_2d(outputs).softmax(1).gather(1, goal.view(-1, 1)).squeeze(1)
        return p >= self.threshold


class LogitMargin(_Classification):
    """Reach class ``target`` with ``logit_target - max_other >= margin`` (clamped margin loss).

    The loss is ``relu(max_other - logit_target + margin)``: it is zero exactly when done, so it
    never pushes past the margin (Carlini & Wagner's f6 with confidence ``margin``).

    Args:
        margin: required logit gap; ``0`` stops at the bare decision boundary.
    """

    def __init__(self, margin: float = 6.0) -> None:
        self.margin = float(check_float(margin, "margin", low=0))

    def loss(self, outputs: Tensor, goal: Tensor) -> Tensor:
        t, other = _target_vs_rest(_logits_2d(outputs), goal)
        return F.relu(other - t + self.margin)

    def score(self, outputs: Tensor, goal: Tensor) -> Tensor:
        """``max_other - logit_target``."""
        t, other = _target_vs_rest(_logits_2d(outputs), goal)
        return other - t

    def done(self, outputs: Tensor, goal: Tensor) -> Tensor:
        t, other = _target_vs_rest(_logits_2d(outputs), goal)
        return (t - other >= self.margin) & (t > other)


class Flip(Objective):
    """Untargeted: leave the original class ``c`` until ``max_other - logit_c >= margin``.

    The goal is the original predicted class (``target`` may name it instead).
    """

    needs_target = False

    def __init__(self, margin: float = 0.0) -> None:
        self.margin = float(check_float(margin, "margin", low=0))

    def prepare(self, outputs: Tensor, target: Any) -> Tensor:
        logits = _logits_2d(outputs)
        if logits.shape[1] < 2:
            raise ValueError("Flip needs (N, K >= 2) logits; use ProbabilityThreshold for one-logit models")
        if target is None:
            return logits.argmax(1)
        return parse_target(target, logits.shape[0], logits.shape[1], logits.device)

    def loss(self, outputs: Tensor, goal: Tensor) -> Tensor:
        c, other = _target_vs_rest(_logits_2d(outputs), goal)
        return F.relu(c - other + self.margin)

    def score(self, outputs: Tensor, goal: Tensor) -> Tensor:
        """``logit_c - max_other``."""
        c, other = _target_vs_rest(_logits_2d(outputs), goal)
        return c - other

    def done(self, outputs: Tensor, goal: Tensor) -> Tensor:
        c, other = _target_vs_rest(_logits_2d(outputs), goal)
        return (other - c >= self.margin) & (other > c)


class ProbabilityThreshold(Objective):
    """Binary models: push ``p(positive)`` up to ``up`` if it starts below 0.5, else down to ``down``.

    This is the paper's default (0.75 going up, 0.25 going down). The model may output one logit
    ``(N,)``/``(N, 1)`` (``p = sigmoid``) or two or more logits (``p = softmax[:, positive]``). The
    loss is the binary cross-entropy towards the goal side. ``target`` may be given as the class to
    reach (1 = up, 0 = down) per sample; by default the direction follows the original prediction.

    Args:
        up, down: thresholds; ``0 < down < 0.5 < up < 1``.
        positive: index of the positive class for multi-logit models.
    """

    needs_target = False

    def __init__(self, up: float = 0.75, down: float = 0.25, positive: int = 1) -> None:
        check_float(down, "down", low=0, high=0.5, low_open=True, high_open=True)
        check_float(up, "up", low=0.5, high=1, low_open=True, high_open=True)
        if not 0.0 < down < 0.5 < up < 1.0:
            raise ValueError(f"thresholds must satisfy 0 < down < 0.5 < up < 1; got down={down}, up={up}")
        self.up, self.down, self.positive = float(up), float(down), int(positive)

    def _logit(self, outputs: Tensor) -> Tensor:
        logits = _logits_2d(outputs)
        if logits.shape[1] == 1:
            return logits[:, 0]
        if not 0 <= self.positive < logits.shape[1]:
            raise ValueError(f"`positive` must index one of {logits.shape[1]} outputs; got {self.positive}")
        lp = logits.log_softmax(1)
        return lp[:, self.positive] - torch.log1p(-lp[:, self.positive].exp().clamp(max=1 - 1e-7))

    def prepare(self, outputs: Tensor, target: Any) -> Tensor:
        logit = self._logit(outputs)
        if target is None:
            return (logit < 0).to(logit.dtype)  # 1 = go up
        t = parse_target(target, logit.shape[0], 2, logit.device)
        return t.to(logit.dtype)

    def loss(self, outputs: Tensor, goal: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(self._logit(outputs), goal, reduction="none")

    def done(self, outputs: Tensor, goal: Tensor) -> Tensor:
        p = torch.sigmoid(self._logit(outputs))
        return torch.where(goal > 0.5, p >= self.up, p <= self.down)


class RegressionTarget(Objective):
    """Regressors: reach ``|r(x') - y~| <= tolerance`` with an MSE loss (Ha & Bender 2025).

    Targets as users think of them:

    - ``mode="absolute"``: ``target`` is the value ``y~`` to reach (a number, a list or a tensor, one
      value per example or one for all);
    - ``mode="relative"``: ``target`` is a change added to the original prediction (``+0.3``);
    - ``mode="mirror"``: the seed's experiment; ``target`` is ignored and the goal is the prediction
      moved by half the known range towards the other half, ``y + 0.5`` if ``y < 0.5`` else ``y - 0.5``
      on ``value_range = (0, 1)`` (in general ``y +/- (hi - lo) / 2`` around the midpoint).

    Non-finite targets raise a ``ValueError``; goals outside ``value_range`` (the regressor's known
    output range) warn, since the model was never trained to produce them.

    Args:
        tolerance: success radius ``tau`` (0.05 on targets scaled to ``[0, 1]``).
        mode: ``"absolute"``, ``"relative"`` or ``"mirror"``.
        value_range: the regressor's known output range ``(lo, hi)``, or ``None`` (no range check;
            ``"mirror"`` then mirrors around 0.5 by 0.5).

    Shape:
        - outputs: ``(N,)`` or ``(N, 1)``; target: a number, or ``N`` values; goal: ``(N,)``.

    Examples::

        >>> import torch
        >>> from captum_cfx import RegressionTarget
        >>> RegressionTarget(mode="mirror").prepare(torch.tensor([0.2, 0.9]), None)
        tensor([0.7000, 0.4000])
        >>> RegressionTarget(mode="relative").prepare(torch.tensor([0.2, 0.5]), 0.3)
        tensor([0.5000, 0.8000])
    """

    def __init__(self, tolerance: float = 0.05, mode: str = "absolute",
                 value_range: tuple[float, float] | None = (0.0, 1.0)) -> None:
        check_float(tolerance, "tolerance", low=0, low_open=True)
        if mode not in ("absolute", "relative", "mirror"):
            raise ValueError(f"`mode` must be 'absolute', 'relative' or 'mirror'; got {mode!r}")
        if value_range is not None:
            ok = (isinstance(value_range, (tuple, list)) and len(value_range) == 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range)
                  and float(value_range[0]) < float(value_range[1]))
            if not ok:
                raise ValueError(f"`value_range` must be (lo, hi) with lo < hi, or None; got {value_range!r}")
            value_range = (float(value_range[0]), float(value_range[1]))
        self.tolerance, self.mode, self.value_range = float(tolerance), mode, value_range
        self.needs_target = mode != "mirror"

    @staticmethod
    def _values(outputs: Tensor) -> Tensor:
        if outputs.dim() == 2 and outputs.shape[1] == 1:
            return outputs[:, 0]
        if outputs.dim() != 1:
            raise ValueError(f"a regressor's output must be (N,) or (N, 1); got {tuple(outputs.shape)}")
        return outputs

    def _parse(self, target: Any, y: Tensor) -> Tensor:
        what = "change" if self.mode == "relative" else "value"
        if target is None:
            raise ValueError(f"`target` is required: the target {what} per example (mode={self.mode!r})")
        if isinstance(target, bool) or (isinstance(target, (list, tuple)) and any(isinstance(v, bool) for v in target)):
            raise TypeError(f"`target` must hold numbers (target {what}s); got bool")
        if isinstance(target, (list, tuple)):
            if not all(isinstance(v, (int, float)) for v in target):
                raise TypeError(f"`target` as a list must hold numbers; got {[type(v).__name__ for v in target][:5]}")
            target = torch.tensor([float(v) for v in target], dtype=y.dtype, device=y.device)
        if isinstance(target, (int, float)):
            t = torch.full_like(y, float(target))
        elif isinstance(target, Tensor):
            if target.dtype == torch.bool or target.is_complex():
                raise TypeError(f"`target` must be a real-valued tensor; got dtype {target.dtype}")
            t = target.to(device=y.device, dtype=y.dtype).reshape(-1)
            if t.numel() == 1:
                t = t.expand_as(y)
        else:
            raise TypeError(f"`target` must be a number, a list or a tensor of target {what}s; "
                            f"got {type(target).__name__}")
        if t.shape != y.shape:
            raise ValueError(f"`target` must have one value per example ({y.shape[0]}) or one for all; "
                             f"got {t.numel()}")
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).nonzero().flatten().tolist()
            raise ValueError(f"`target` contains NaN or Inf values (examples {bad[:10]}); "
                             f"expected finite target {what}s")
        return t

    def prepare(self, outputs: Tensor, target: Any) -> Tensor:
        y = self._values(outputs).detach()
        if not torch.isfinite(y).all():
            raise ValueError("the regressor's output on the inputs contains NaN or Inf values; "
                             "expected finite predictions")
        if self.mode == "mirror":
            lo, hi = self.value_range if self.value_range is not None else (0.0, 1.0)
            half = (hi - lo) / 2
            goal = torch.where(y < lo + half, y + half, y - half)
        else:
            t = self._parse(target, y)
            goal = y + t if self.mode == "relative" else t.clone()
        if self.value_range is not None and goal.numel():
            lo, hi = self.value_range
            if float(goal.min()) < lo or float(goal.max()) > hi:
                n_out = int(((goal < lo) | (goal > hi)).sum())
                warnings.warn(f"`target`: {n_out} goal value(s) in [{float(goal.min()):.3g}, {float(goal.max()):.3g}] "
                              f"lie outside the regressor's known range [{lo:g}, {hi:g}] (`value_range`); "
                              "the model was not trained to output them", UserWarning, stacklevel=3)
        return goal

    def loss(self, outputs: Tensor, goal: Tensor) -> Tensor:
        return (self._values(outputs) - goal) ** 2

    def done(self, outputs: Tensor, goal: Tensor) -> Tensor:
        return (self._values(outputs) - goal).abs() <= self.tolerance


_NAMES = {"margin": LogitMargin, "target": TargetClass, "flip": Flip, "threshold": ProbabilityThreshold,
          "regression": RegressionTarget}


def get_objective(objective: Objective | str) -> Objective:
    """An :class:`Objective` from an instance or a name (``margin``, ``target``, ``flip``, ``threshold``,
    ``regression``), with default settings."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str) and objective in _NAMES:
        return _NAMES[objective]()
    raise ValueError(f"`objective` must be an Objective or one of {sorted(_NAMES)}; got {objective!r}")



def choose_targets(labels: Tensor, spec: str, seed: int, num_classes: int) -> Tensor:
    """Target classes for a batch of ``labels`` of a ``num_classes``-way classifier.

    Args:
        labels: ``(N,)`` int64 class indices (the true labels or the model's predictions).
        spec: ``"random"`` (seeded, uniform over the other ``num_classes - 1`` classes, never the label),
            ``"next"`` (``label + 1`` modulo ``num_classes``) or a class index as a string (``"3"``).
        seed: seed of the random targets.
        num_classes: ``K``, read from the model's output (``model(x).shape[1]``).

    Shape:
        - labels: ``(N,)``; returns ``(N,)`` int64 in ``0..K-1``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2 (a classifier's output width); got {num_classes!r}")
    if spec == "random":
        g = torch.Generator().manual_seed(seed)
        return (labels + torch.randint(1, num_classes, labels.shape, generator=g)) % num_classes
    if spec == "next":
        return (labels + 1) % num_classes
    try:
        t = int(spec)
    except (TypeError, ValueError):
        raise ValueError(f"`target` must be 'random', 'next' or a class 0-{num_classes - 1}; got {spec!r}") from None
    if not 0 <= t < num_classes:
        raise ValueError(f"`target` must be a class in 0-{num_classes - 1} (the model has {num_classes} classes); "
                         f"got {t}")
    return torch.full_like(labels, t)
