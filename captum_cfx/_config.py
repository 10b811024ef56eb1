"""Hyperparameters as data: frozen config dataclasses with declared constraints, checked once.

A method's settings are a frozen dataclass (``LatentAttackConfig``, ``PixelCounterfactualConfig``,
``GANInversionConfig``): the defaults the CLI, the benchmarks and the docs read, and the one place their
values are validated. Each config declares ``_parameter_constraints`` (scikit-learn's convention): for every
field, a list of the constraints a value may satisfy, ``None`` admitting ``None``. Building the dataclass
checks every field and raises a ``TypeError``/``ValueError`` that names the argument, what was expected and
what came.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo(Config):
    ...     steps: int = 10
    ...     mode: str = "a"
    ...     _parameter_constraints = {"steps": [Interval(int, 0, None)], "mode": [Options("a", "b")]}
    >>> Demo(steps=-1)
    Traceback (most recent call last):
    ...
    ValueError: `steps` must be >= 0; got -1
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from captum_cfx._validation import check_float

__all__ = ["Config", "Interval", "Options", "Satisfies"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A finite number of type ``kind`` (``int`` or ``float``; a float field takes ints too, never bools)
    between ``low`` and ``high`` (``None``: unbounded), the ends included unless ``low_open``/``high_open``
    (checked by :func:`~captum_cfx._validation.check_float`)."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any, name: str) -> None:
        check_float(value, name, low=self.low, high=self.high, low_open=self.low_open, high_open=self.high_open,
                    integer=self.kind is int)


class Options:
    """One of the given values (strings, usually)."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def check(self, value: Any, name: str) -> None:
        if not any(type(value) is type(v) and value == v for v in self.values):
            listed = [repr(v) for v in self.values]
            choices = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " or " + listed[-1]
            raise ValueError(f"`{name}` must be {choices}; got {value!r}")


class Satisfies:
    """An instance of ``kind`` for which ``test`` holds, described by ``what`` in the error."""

    def __init__(self, kind: type | tuple[type, ...], what: str, test: Any = None) -> None:
        self.kind, self.what, self.test = kind, what, test

    def check(self, value: Any, name: str) -> None:
        if isinstance(value, bool) and self.kind is not bool or not isinstance(value, self.kind):
            raise TypeError(f"`{name}` must be {self.what}; got {type(value).__name__}")
        if self.test is not None and not self.test(value):
            raise ValueError(f"`{name}` must be {self.what}; got {value!r}")


def validate_params(values: dict[str, Any], constraints: dict[str, list[Any]]) -> None:
    """Check ``values`` against ``constraints`` (``{name: [constraint or None, ...]}``): a value passes when it
    is ``None`` and ``None`` is listed, or when one constraint accepts it; otherwise the first constraint's
    error is raised."""
    for name, allowed in constraints.items():
        value = values[name]
        if value is None and None in allowed:
            continue
        checks = [c for c in allowed if c is not None]
        errors: list[Exception] = []
        for c in checks:
            try:
                c.check(value, name)
                break
            except (TypeError, ValueError) as e:
                errors.append(e)
        else:
            if errors:
                raise errors[0]


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of the frozen config dataclasses: validates every field against ``_parameter_constraints``."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def __post_init__(self) -> None:
        validate_params({f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                        self._parameter_constraints)

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for JSON reports)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
