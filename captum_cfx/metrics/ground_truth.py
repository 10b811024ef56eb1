"""Ground-truth scoring in the synthetic worlds: which factors a counterfactual changed, and by how much.

Originals and counterfactuals are both *read* with the same instruments: pixel measurements where a
factor sits at a known place (every squares factor; the attribute world's background hue) and an attribute
oracle (passed in; the zoo ships ``world-oracle``) otherwise. A factor counts as changed when a binary reading
flips, a continuous reading moves by more than ``tolerance``, or a position moves by at least one pixel. MNAC
(mean number of attributes changed) counts the changed factors other than the ones the
counterfactual was asked to change. :func:`intervention_effects` gives the ground truth of what a classifier
depends on (its decision under single-factor interventions), and :func:`right_factor_rate` scores
counterfactuals against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from captum_cfx.datasets import AttributeWorld, Squares
from captum_cfx.metrics.basic import MetricResult

__all__ = ["FactorChanges", "factor_changes", "intervention_effects", "mnac", "right_factor_rate"]


@dataclass
class FactorChanges:
    """Factor readings of originals and counterfactuals.

    Attributes:
        names: factor names, one per column.
        before, after: ``(N, K)`` readings of the originals and of the counterfactuals.
        delta: ``(N, K)`` ``after - before`` (hue differences wrapped to ``[-0.5, 0.5)``).
        changed: ``(N, K)`` bool, the factors that changed.
    """

    names: tuple[str, ...]
    before: Tensor
    after: Tensor
    delta: Tensor
    changed: Tensor

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"factor names must be in {self.names}; got {name!r}")
        return self.names.index(name)

    def change_rate(self) -> dict[str, float]:
        """Fraction of samples that changed each factor."""
        rate = self.changed.float().mean(0)
        return {n: float(rate[i]) for i, n in enumerate(self.names)}

    def mean_abs_delta(self) -> dict[str, float]:
        """Mean absolute change of each factor's reading."""
        d = self.delta.abs().float().mean(0)
        return {n: float(d[i]) for i, n in enumerate(self.names)}

    def mnac(self, exclude: Sequence[str] | str = ()) -> MetricResult:
        """Number of changed factors per sample, not counting ``exclude`` (the targeted factors)."""
        return mnac(self, exclude)


def mnac(changes: FactorChanges, exclude: Sequence[str] | str = ()) -> MetricResult:
    """MNAC: per sample, how many factors other than ``exclude`` changed; aggregate = mean.

    Examples::

        >>> import torch
        >>> from captum_cfx.metrics import FactorChanges, mnac
        >>> ch = torch.tensor([[True, True, False], [False, False, False]])
        >>> fc = FactorChanges(("a", "b", "c"), ch.float(), ch.float(), ch.float(), ch)
        >>> mnac(fc, exclude="a").value
        0.5
    """
    if isinstance(exclude, str):
        exclude = (exclude,)
    keep = torch.ones(len(changes.names), dtype=torch.bool, device=changes.changed.device)
    for name in exclude:
        keep[changes.index(name)] = False
    return MetricResult.of(changes.changed[:, keep].float().sum(1))


def _check_pair(originals: Tensor, counterfactuals: Tensor) -> None:
    for name, t in (("originals", originals), ("counterfactuals", counterfactuals)):
        if not isinstance(t, Tensor):
            raise TypeError(f"`{name}` must be a Tensor; got {type(t).__name__}")
    if originals.shape != counterfactuals.shape:
        raise ValueError(f"`originals` and `counterfactuals` must have the same shape; got "
                         f"{tuple(originals.shape)} and {tuple(counterfactuals.shape)}")


@torch.no_grad()
def _read_world(world: AttributeWorld, x: Tensor, oracle: Callable[[Tensor], Tensor], analytic: bool,
                batch_size: int) -> Tensor:
    predict = getattr(oracle, "predict", None)
    if predict is None:  # a plain callable returning logits: same convention as WorldOracle.predict
        def predict(t: Tensor) -> Tensor:
            p = torch.sigmoid(oracle(t))
            return torch.where(world.is_binary.to(p.device), (p > 0.5).to(p.dtype), p)
    out = torch.cat([predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else \
        x.new_zeros(0, len(world.factor_names))
    if analytic and len(x):
        out[:, world.index("background")] = world.measure(x)["background"].to(out)
    return out


def factor_changes(world: AttributeWorld | Squares, originals: Tensor, counterfactuals: Tensor,
                   oracle: Callable[[Tensor], Tensor] | None = None, *, tolerance: float = 0.1,
                   analytic: bool = True, batch_size: int = 1000) -> FactorChanges:
    """Which factors of a world each counterfactual changed, and by how much.

    Args:
        world: an :class:`~captum_cfx.datasets.AttributeWorld` or :class:`~captum_cfx.datasets.Squares`.
        originals, counterfactuals: ``(N, 3, S, S)`` images in ``[0, 1]``.
        oracle: attribute oracle for the attribute world (a module with ``predict`` like
            :class:`~captum_cfx.zoo.world_models.WorldOracle`, or a callable returning one logit per
            factor), e.g. the zoo's ``"world-oracle"``; required for the attribute world, unused for
            squares, whose factors are all measured from pixels.
        tolerance: a continuous factor (in ``[0, 1]`` units) changed when it moved by more than this.
        analytic: read the attribute world's background hue from the corner pixel instead of the oracle.
        batch_size: oracle batch size.

    Returns:
        :class:`FactorChanges`. Squares columns: ``intensity, bg_r, bg_g, bg_b, x, y``; attribute-world
        columns: its nine factors.

    Examples::

        >>> import torch
        >>> from captum_cfx.datasets import Squares
        >>> from captum_cfx.metrics import factor_changes
        >>> world = Squares()
        >>> x, y, f = world.sample(4, generator=torch.Generator().manual_seed(0))
        >>> f2 = f.clone(); f2[:, 0] = 1 - f[:, 0]          # change only the target
        >>> ch = factor_changes(world, x, world.render(f2))
        >>> ch.mnac(exclude="intensity").value
        0.0
    """
    _check_pair(originals, counterfactuals)
    if not tolerance > 0:
        raise ValueError(f"`tolerance` must be > 0; got {tolerance}")
    if isinstance(world, Squares):
        before, after = world.measure(originals), world.measure(counterfactuals)
        names = world.measured_names
        delta = after - before
        is_pos = torch.tensor([n in ("x", "y") for n in names], device=delta.device)
        changed = torch.where(is_pos, delta.abs() >= 1, delta.abs() > tolerance)
        return FactorChanges(names, before, after, delta, changed)
    if isinstance(world, AttributeWorld):
        if oracle is None:
            raise ValueError("`oracle` is required for the attribute world: an attribute oracle such as the zoo's "
                             "load_pretrained('world-oracle'); got None")
        before = _read_world(world, originals, oracle, analytic, batch_size)
        after = _read_world(world, counterfactuals, oracle, analytic, batch_size)
        delta = after - before
        hue = world.index("background")
        delta[:, hue] = (delta[:, hue] + 0.5) % 1.0 - 0.5
        binary = world.is_binary.to(delta.device)
        changed = torch.where(binary, delta != 0, delta.abs() > tolerance)
        return FactorChanges(world.factor_names, before, after, delta, changed)
    raise TypeError(f"`world` must be an AttributeWorld or a Squares; got {type(world).__name__}")


def right_factor_rate(changes: FactorChanges, right: str, valid: Tensor | None = None,
                      only: bool = False) -> MetricResult:
    """Per sample: the counterfactual is valid and changed the ``right`` factor (and, with ``only``, no other).

    Invalid counterfactuals count as failures, so the aggregate (mean) is over all samples.

    Args:
        changes: :func:`factor_changes` of originals (or reconstructions) and counterfactuals.
        right: the factor the model truly depends on (e.g. the top factor of :func:`intervention_effects`).
        valid: optional ``(N,)`` bool, the counterfactuals that reach their target.
        only: also require that no other factor changed (MNAC excluding ``right`` is 0).

    Shape:
        - ``values``: ``(N,)`` in {0, 1}.

    Examples::

        >>> import torch
        >>> from captum_cfx.metrics import FactorChanges, right_factor_rate
        >>> ch = torch.tensor([[True, False], [True, True], [False, True]])
        >>> fc = FactorChanges(("smile", "hat"), ch.float(), ch.float(), ch.float(), ch)
        >>> round(right_factor_rate(fc, "smile").value, 3), round(right_factor_rate(fc, "smile", only=True).value, 3)
        (0.667, 0.333)
    """
    j = changes.index(right)
    ok = changes.changed[:, j].clone()
    if only:
        ok &= changes.changed.sum(1) == 1
    if valid is not None:
        if not isinstance(valid, Tensor) or valid.shape != ok.shape:
            raise ValueError(f"`valid` must be a ({ok.shape[0]},) bool tensor; got "
                             f"{getattr(valid, 'shape', type(valid).__name__)}")
        ok &= valid.to(ok.device).bool()
    return MetricResult.of(ok.float())


@torch.no_grad()
def intervention_effects(world: AttributeWorld, model: Callable[[Tensor], Tensor], factors: Tensor,
                         batch_size: int = 1000) -> dict[str, float]:
    """Ground truth of what a classifier depends on: its decision flip rate under each single-factor intervention.

    For every factor, ``do(factor := 1 - factor)`` on every row of the table (contrastive: nothing else
    moves; binary factors flip, continuous ones mirror in ``[0, 1]``), render, and count how often the
    classifier's argmax differs from its argmax on the unchanged rendering.

    Args:
        world: the :class:`~captum_cfx.datasets.AttributeWorld` the factors come from.
        model: a classifier returning ``(N, K)`` logits.
        factors: the factor table ``(N, 9)`` of the images.
        batch_size: model batch size.

    Returns:
        ``{factor: flip rate}``, in the world's factor order.
    """
    if not isinstance(world, AttributeWorld):
        raise TypeError(f"`world` must be an AttributeWorld; got {type(world).__name__}")

    def decide(f: Tensor) -> Tensor:
        x = world.render(f)
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])

    base = decide(factors)
    out = {}
    for name in world.factor_names:
        j = world.index(name)
        f2 = world.intervene(factors, {name: 1 - factors[:, j]}, causal=False)
        out[name] = float((decide(f2) != base).float().mean())
    return out
