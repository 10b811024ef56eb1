"""Checks shared by the attribution classes' constructors."""

from __future__ import annotations

from typing import Any

from captum_cfx.generators.base import LatentGenerator


def check_model_and_generator(forward_func: Any, generator: Any) -> None:
    """``forward_func`` must be callable and ``generator`` a :class:`LatentGenerator`."""
    if not callable(forward_func):
        raise TypeError(f"`forward_func` must be callable; got {type(forward_func).__name__}")
    if not isinstance(generator, LatentGenerator):
        raise TypeError("`generator` must be a captum_cfx.generators.LatentGenerator (wrap your model with "
                        f"AutoencoderGenerator, VAEGenerator, ...); got {type(generator).__name__}")
