"""Checks and Captum front-end steps shared by the attribution classes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from captum_cfx._validation import format_inputs
from captum_cfx.generators.base import LatentGenerator


def check_model_and_generator(forward_func: Any, generator: Any) -> None:
    """``forward_func`` must be callable and ``generator`` a :class:`LatentGenerator`."""
    if not callable(forward_func):
        raise TypeError(f"`forward_func` must be callable; got {type(forward_func).__name__}")
    if not isinstance(generator, LatentGenerator):
        raise TypeError("`generator` must be a captum_cfx.generators.LatentGenerator (wrap your model with "
                        f"AutoencoderGenerator, VAEGenerator, ...); got {type(generator).__name__}")


def generate_on(method: Any, inputs: Any, target: Any, additional_forward_args: Any,
                **kwargs: Any) -> tuple[Any, tuple[Tensor, ...], bool]:
    """Captum's front half of ``attribute``/``perturb``: format ``inputs`` and run ``method.generate`` with
    gradients enabled. Returns ``(output, formatted inputs, whether inputs was a tuple)``."""
    tup, is_tuple = format_inputs(inputs)
    with torch.enable_grad():
        out = method.generate(tup, target=target, additional_forward_args=additional_forward_args, **kwargs)
    return out, tup, is_tuple


def like_inputs(first: Tensor, tup: tuple[Tensor, ...], is_tuple: bool) -> Tensor | tuple[Tensor, ...]:
    """A map for the image shaped like ``inputs``: a tensor, or a tuple with zeros for the extra members."""
    return (first, *(torch.zeros_like(t) for t in tup[1:])) if is_tuple else first
