"""Shared input checks with clear messages (never ``assert``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

TensorOrTuple = Tensor | tuple[Tensor, ...]


def format_inputs(inputs: Any, argument: str = "inputs") -> tuple[tuple[Tensor, ...], bool]:
    """Return ``(tuple_of_tensors, was_tuple)`` for Captum's tensor-or-tuple convention."""
    if isinstance(inputs, Tensor):
        return (inputs,), False
    if isinstance(inputs, tuple) and len(inputs) > 0 and all(isinstance(t, Tensor) for t in inputs):
        n = inputs[0].shape[0] if inputs[0].dim() else None
        for i, t in enumerate(inputs):
            if t.dim() == 0 or t.shape[0] != n:
                raise ValueError(f"`{argument}[{i}]` must have the batch size {n} of `{argument}[0]`; "
                                 f"got shape {tuple(t.shape)}")
        return inputs, True
    raise TypeError(f"`{argument}` must be a torch.Tensor or a non-empty tuple of tensors; "
                    f"got {type(inputs).__name__}")


def check_images(x: Any, argument: str = "inputs", image_shape: Sequence[int] | None = None,
                 value_range: Sequence[float] | None = None, tol: float = 0.1) -> Tensor:
    """Check an image batch: a floating tensor ``(N, C, H, W)``, finite, in range, right channels.

    Values more than ``tol`` times the range's width outside ``value_range`` raise: that catches
    0-255 images, or [-1, 1] images given to a [0, 1] model, while admitting small excursions such
    as the Gaussian noise that ``captum.attr.NoiseTunnel`` adds (generators pass their explicit
    ``range_tolerance``).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"`{argument}` must be a torch.Tensor of images (N, C, H, W); got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"`{argument}` must be a floating-point tensor; got dtype {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"`{argument}` must be a batch of images of shape (N, C, H, W); got shape {tuple(x.shape)}")
    if image_shape is not None and x.shape[0] > 0 and tuple(x.shape[1:]) != tuple(image_shape):
        c = image_shape[0]
        if x.shape[1] != c:
            raise ValueError(f"`{argument}` must be (N, C, H, W) with C == {c}; got {tuple(x.shape)}")
        raise ValueError(f"`{argument}` must be (N, {', '.join(map(str, image_shape))}); got {tuple(x.shape)}")
    if x.numel() and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"`{argument}` contains NaN or Inf values (samples {bad[:10]})")
    if value_range is not None and x.numel():
        lo, hi = float(x.detach().min()), float(x.detach().max())
        slack = tol * (value_range[1] - value_range[0])
        if lo < value_range[0] - slack or hi > value_range[1] + slack:
            raise ValueError(f"`{argument}` must lie in the generator's input range "
                             f"[{value_range[0]:g}, {value_range[1]:g}] (give or take {tol:g} of its width: "
                             f"`generator.range_tolerance`); got values in [{lo:.4g}, {hi:.4g}]")
    return x


def parse_target(target: Any, n: int, num_outputs: int | None, device: torch.device,
                 argument: str = "target") -> Tensor | None:
    """Turn Captum's ``TargetType`` into a ``(n,)`` long tensor of classes, one per example.

    As in Captum, an int, a 0-d tensor, a one-element tensor of any shape (``tensor([c])``, a ``(1, 1)``
    tensor) and a one-element tuple ``(c,)`` name one class for every example; a list of ints or a 1-D
    tensor gives one class per example. The one-element forms matter because ``NoiseTunnel`` and
    ``sensitivity_max`` expand the inputs but leave such a target as it is.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise TypeError(f"`{argument}` must be an int, a list of ints or a 1-D integer tensor; got bool")
    if isinstance(target, tuple) and len(target) == 1:  # Captum: a one-element output index, one class for all
        target = target[0]
        if isinstance(target, bool) or not isinstance(target, int):
            raise TypeError(f"`{argument}` as a one-element tuple must hold an int; got {type(target).__name__}")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"`{argument}` must hold integer class indices; got dtype {target.dtype}")
        if target.numel() == 1:  # a scalar, tensor([c]) or a (1, 1) tensor: one class for every example
            t = target.reshape(1).expand(n).to(device=device, dtype=torch.long)
        elif target.dim() == 1:
            t = target.to(device=device, dtype=torch.long)
        else:
            raise ValueError(f"`{argument}` must be a scalar, a one-element tensor or a 1-D tensor with one class "
                             f"per example; got shape {tuple(target.shape)}")
    elif isinstance(target, (list, tuple)):
        if isinstance(target, tuple) and n != len(target):
            raise ValueError(f"`{argument}` as a tuple (a multi-dimensional output index) is not supported; "
                             "give an int or one class per example")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in target):
            raise TypeError(f"`{argument}` as a list must hold ints; got {[type(v).__name__ for v in target][:5]}")
        t = torch.tensor(list(target), dtype=torch.long, device=device)
    else:
        raise TypeError(f"`{argument}` must be an int, a list of ints or a 1-D integer tensor; "
                        f"got {type(target).__name__}")
    if t.shape[0] != n:
        raise ValueError(f"`{argument}` must have one entry per example ({n}) or be a single class; got {t.shape[0]}")
    if num_outputs is not None and t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_outputs):
        raise ValueError(f"`{argument}` must be class indices in [0, {num_outputs - 1}]; "
                         f"got values in [{int(t.min())}, {int(t.max())}]")
    return t


def check_float(value: Any, argument: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, integer: bool = False) -> float:
    """Check one scalar hyperparameter and return it: a real number (not a bool or a string), finite (never NaN
    or inf), within ``[low, high]`` (``low_open``/``high_open`` exclude the ends); ``integer`` demands an int.

    The one place where numbers given by a user are checked, so that every method names the argument, what was
    expected and what came: ``check_float(lr, "lr", low=0, low_open=True)``.
    """
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an int" if integer else "a real number"
        raise TypeError(f"`{argument}` must be {what}; got {type(value).__name__} {value!r}"[:300])
    if not math.isfinite(value):
        raise ValueError(f"`{argument}` must be a finite number; got {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        if high is None:
            want = f"{'>' if low_open else '>='} {low:g}"
        elif low is None:
            want = f"{'<' if high_open else '<='} {high:g}"
        else:
            want = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"`{argument}` must be {want}; got {value}")
    return value


def check_positive(value: Any, argument: str, integer: bool = False, allow_zero: bool = False) -> None:
    """``value`` must be a finite number ``> 0`` (``>= 0`` with ``allow_zero``); an int with ``integer``."""
    check_float(value, argument, low=0, low_open=not allow_zero, integer=integer)


def check_range(value: Any, argument: str) -> tuple[float, float] | None:
    """``None`` or a ``(low, high)`` pair of finite numbers with ``low < high`` (an image value range)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"`{argument}` must be a (low, high) pair of numbers; got {value!r}"[:300])
    lo = check_float(value[0], f"{argument}[0]")
    hi = check_float(value[1], f"{argument}[1]")
    if not lo < hi:
        raise ValueError(f"`{argument}` must satisfy low < high; got ({lo}, {hi})")
    return float(lo), float(hi)


def check_model_output(out: Any, n: int, argument: str = "forward_func") -> Tensor:
    """The model's output must be a tensor with one row per input (batch size ``n``)."""
    if not isinstance(out, Tensor):
        raise TypeError(f"`{argument}` must return a tensor; got {type(out).__name__}")
    if out.dim() == 0 or out.shape[0] != n:
        raise ValueError(f"`{argument}` must return one row per input, shape ({n}, ...); got {tuple(out.shape)}")
    return out


def check_dtypes(x: Tensor, argument: str = "inputs", **models: Any) -> None:
    """Each ``nn.Module`` among ``models`` must hold floating parameters of ``x``'s dtype."""
    from torch import nn

    for name, model in models.items():
        mod = model if isinstance(model, nn.Module) else getattr(model, "__self__", None)
        if not isinstance(mod, nn.Module):
            continue
        dt = next((p.dtype for p in mod.parameters() if p.is_floating_point()), None)
        if dt is not None and dt != x.dtype:
            raise TypeError(f"`{argument}` must have the dtype of `{name}`'s parameters ({dt}); got {x.dtype} "
                            f"(convert one of them, e.g. `{argument}.to({dt})`)")


def check_decoded(images: Any, x: Tensor, argument: str = "generator.decode") -> Tensor:
    """A generator's decoded images must be shaped like the inputs they came from."""
    if not isinstance(images, Tensor):
        raise TypeError(f"`{argument}` must return a tensor of images; got {type(images).__name__}")
    if images.shape != x.shape:
        raise ValueError(f"`{argument}` must return images shaped like `inputs` {tuple(x.shape)}; "
                         f"got {tuple(images.shape)} (does the generator match the model's image size?)")
    return images


class NotFittedError(ValueError, AttributeError):
    """Raised when an estimator is used before ``fit`` (like scikit-learn's ``NotFittedError``)."""


def check_fitted(estimator: Any, attribute: str, how: str) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has the learned ``attribute`` (set by ``fit``).

    Args:
        estimator: the object whose learned state is checked.
        attribute: a learned attribute (trailing underscore, scikit-learn style), e.g. ``"weight_"``.
        how: how to fit it, e.g. ``"`fit(latents, descriptors)` or `from_pretrained(dir)`"``.
    """
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"This {type(estimator).__name__} is not fitted yet; call {how} first")
