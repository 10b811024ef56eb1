"""Shared input checks with clear messages (never ``assert``)."""

from __future__ import annotations

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
                 value_range: Sequence[float] | None = None, tol: float = 0.5) -> Tensor:
    """Check an image batch: a floating tensor ``(N, C, H, W)``, finite, in range, right channels.

    Values more than ``tol`` times the range's width outside ``value_range`` raise: that catches
    0-255 images, or [-1, 1] images given to a [0, 1] model, while admitting small excursions such
    as the Gaussian noise that ``captum.attr.NoiseTunnel`` adds.
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
                             f"[{value_range[0]:g}, {value_range[1]:g}]; got values in [{lo:.4g}, {hi:.4g}]")
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


def check_positive(value: Any, argument: str, integer: bool = False, allow_zero: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"`{argument}` must be {'an int' if integer else 'a number'}; got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"`{argument}` must be {'>= 0' if allow_zero else '> 0'}; got {value}")
