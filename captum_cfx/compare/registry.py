"""The adapter contract of ``captum-cfx compare`` and the registry object that holds the adapters.

An adapter gets a :class:`~captum_cfx.compare.Task` and returns a :class:`CFResult` (counterfactual
methods) or an ``attribute(inputs, target=...)`` callable (attribution methods), or ``None`` when it
does not apply. A :class:`Registry` lists them in table order; :func:`~captum_cfx.compare.default_registry`
builds a fresh one holding the built-in rows, and :func:`~captum_cfx.compare.run_compare` takes any registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

from captum_cfx.compare.tasks import DATASETS, Task

__all__ = ["AttributionMethod", "CFResult", "Method", "Registry", "timed"]

T = TypeVar("T")
Requires = Sequence[str] | Mapping[str, Sequence[str]]
CFAdapter = Callable[[Task], "CFResult | None"]
AttributionBuilder = Callable[[Task], Any]


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn()`` and return its result and wall time in seconds (CUDA work included)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


@dataclass
class CFResult:
    """What a counterfactual adapter returns.

    Attributes:
        counterfactuals: ``(N, C, H, W)``, row ``i`` made from ``task.images[i]``.
        seconds: wall time of the method (fits it needs included; metrics excluded).
        n_steps: ``(N,)`` optimisation steps or model queries per counterfactual, if the method counts them.
        start: the image the method edits, ``(N, C, H, W)`` (the generator's reconstruction for latent
            methods); ground-truth changes are read against it. ``None``: the inputs.
        note: a short remark shown in the table.
    """

    counterfactuals: Tensor
    seconds: float
    _: KW_ONLY
    n_steps: Tensor | None = None
    start: Tensor | None = None
    note: str = ""

    @staticmethod
    def from_output(out: Any, seconds: float | None = None, note: str = "") -> CFResult:
        """From a :class:`~captum_cfx.CounterfactualOutput`."""
        return CFResult(out.counterfactuals.detach(), out.seconds if seconds is None else seconds,
                        n_steps=out.n_steps.detach(), start=out.reconstructions.detach(), note=note)


@dataclass(frozen=True)
class Method:
    """A registered counterfactual method (see :meth:`Registry.register`)."""

    name: str
    run: CFAdapter
    families: tuple[str, ...]
    _: KW_ONLY
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    slow: bool = False


@dataclass(frozen=True)
class AttributionMethod:
    """A registered attribution method (see :meth:`Registry.register_attribution`)."""

    name: str
    build: AttributionBuilder
    families: tuple[str, ...]
    _: KW_ONLY
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    slow: bool = False


def _requires_by_family(requires: Requires, families: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``requires`` as ``{family: zoo models}``: one list for every family, or a mapping per family."""
    if isinstance(requires, str):
        raise TypeError(f"`requires` must be a sequence of zoo model names or a mapping family -> names; "
                        f"got the str {requires!r}")
    if isinstance(requires, Mapping):
        bad = [f for f in requires if f not in families]
        if bad:
            raise ValueError(f"`requires` names families the method does not register for: {bad!r}")
        return {f: tuple(requires.get(f, ())) for f in families}
    return {f: tuple(requires) for f in families}


class Registry:
    """The rows of a compare run: counterfactual adapters and attribution builders, in table order.

    A registry is an ordinary object: build one (empty, or :func:`~captum_cfx.compare.default_registry`
    for the built-in rows), register adapters on it, and pass it to
    :func:`~captum_cfx.compare.run_compare`. Nothing is registered globally.

    Examples::

        >>> from captum_cfx.compare import CFResult, Registry
        >>> registry = Registry()
        >>> @registry.register("identity", families=("mnist",))
        ... def identity(task):
        ...     return CFResult(task.images.clone(), 0.0)
        >>> [m.name for m in registry.methods]
        ['identity']
    """

    def __init__(self) -> None:
        self._methods: list[Method] = []
        self._attributions: list[AttributionMethod] = []

    @property
    def methods(self) -> tuple[Method, ...]:
        """The counterfactual methods, in table order."""
        return tuple(self._methods)

    @property
    def attributions(self) -> tuple[AttributionMethod, ...]:
        """The attribution methods, in table order."""
        return tuple(self._attributions)

    def copy(self) -> Registry:
        """A new registry with the same rows (registering on it leaves this one unchanged)."""
        new = Registry()
        new._methods, new._attributions = list(self._methods), list(self._attributions)
        return new

    def register(self, name: str, families: Sequence[str], *, requires: Requires = (), slow: bool = False
                 ) -> Callable[[CFAdapter], CFAdapter]:
        """Register a counterfactual adapter ``Task -> CFResult | None`` (a decorator; returns the function).

        Args:
            name: the row name (new in this registry).
            families: data set families it runs on (``"mnist"``, ``"world"``, ``"squares"``).
            requires: zoo model names it needs, for every family or as a mapping ``{family: names}``; the row
                is absent when one is not shipped (and listed under "not run" with the missing names).
            slow: runs on only the first ``slow_n`` images of each task (see
                :class:`~captum_cfx.compare.RunSize`).
        """
        fams = self._check(name, families)
        req = _requires_by_family(requires, fams)

        def deco(fn: CFAdapter) -> CFAdapter:
            self._methods.append(Method(name, fn, fams, requires=req, slow=slow))
            return fn

        return deco

    def register_attribution(self, name: str, families: Sequence[str], *, requires: Requires = (),
                             slow: bool = False) -> Callable[[AttributionBuilder], AttributionBuilder]:
        """Register an attribution builder ``Task -> attribute(inputs, target=...) | None`` (a decorator).

        Arguments as in :meth:`register`.
        """
        fams = self._check(name, families)
        req = _requires_by_family(requires, fams)

        def deco(fn: AttributionBuilder) -> AttributionBuilder:
            self._attributions.append(AttributionMethod(name, fn, fams, requires=req, slow=slow))
            return fn

        return deco

    def _check(self, name: str, families: Sequence[str]) -> tuple[str, ...]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty str; got {name!r}")
        if any(m.name == name for m in (*self._methods, *self._attributions)):
            raise ValueError(f"`name` must be new; {name!r} is already registered")
        if isinstance(families, str):
            raise TypeError(f"`families` must be a sequence of family names; got the str {families!r}")
        fams = tuple(families)
        bad = [f for f in fams if f not in DATASETS]
        if not fams or bad:
            raise ValueError(f"`families` must be a non-empty subset of {DATASETS}; got {fams!r}")
        return fams

    def __repr__(self) -> str:
        return f"Registry(methods={[m.name for m in self._methods]}, " \
               f"attributions={[a.name for a in self._attributions]})"
