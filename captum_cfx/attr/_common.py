"""Checks and Captum front-end steps shared by the attribution classes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_cfx._utils import as_tuple
from captum_cfx._validation import format_inputs
from captum_cfx.generators.base import Latent, LatentGenerator


def check_model_and_generator(forward_func: Any, generator: Any) -> None:
    """``forward_func`` must be callable and ``generator`` a :class:`LatentGenerator`."""
    if not callable(forward_func):
        raise TypeError(f"`forward_func` must be callable; got {type(forward_func).__name__}")
    if not isinstance(generator, LatentGenerator):
        raise TypeError("`generator` must be a captum_cfx.generators.LatentGenerator (wrap your model with "
                        f"AutoencoderGenerator, VAEGenerator, ...); got {type(generator).__name__}")


@dataclass(frozen=True)
class CaptumInputs:
    """Captum's tensor-or-tuple ``inputs``, split for a method that changes only the image.

    The image is ``inputs`` (or its first member); the later tuple members are model inputs that the
    method does not change. :meth:`forward_args` puts them in front of ``additional_forward_args``, so a
    method that calls ``forward_func(image, *forward_args)`` passes every member, and :meth:`like_inputs`
    returns a result in the container the user gave (a tuple with zeros for the later members).
    """

    image: Tensor
    others: tuple[Tensor, ...]
    is_tuple: bool

    @classmethod
    def parse(cls, inputs: Any, argument: str = "inputs") -> CaptumInputs:
        tup, is_tuple = format_inputs(inputs, argument)
        return cls(tup[0], tuple(tup[1:]), is_tuple)

    @property
    def members(self) -> tuple[Tensor, ...]:
        return (self.image, *self.others)

    def forward_args(self, additional_forward_args: Any) -> tuple[Any, ...]:
        """``forward_func``'s arguments after the image: the later members, then ``additional_forward_args``."""
        return (*self.others, *as_tuple(additional_forward_args))

    def like_inputs(self, first: Tensor) -> Tensor | tuple[Tensor, ...]:
        """``first`` in the container of ``inputs``: a tensor, or a tuple with zeros for the later members."""
        return (first, *(torch.zeros_like(t) for t in self.others)) if self.is_tuple else first


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
    return CaptumInputs(tup[0], tuple(tup[1:]), is_tuple).like_inputs(first)


def iter_decoded(generator: LatentGenerator, latent: Latent, free: Tensor, repeats: int,
                 batch_size: int | None) -> Iterator[tuple[slice, Tensor]]:
    """Decode many renders of a few latents, ``batch_size`` renders per decoder call.

    Row ``r`` of ``free`` is decoded with the fixed parts of sample ``r // repeats`` of ``latent``; the fixed
    parts are gathered per chunk, never copied ``repeats`` times, so memory is one chunk's renders plus the
    inputs. Yields ``(rows, images)`` per chunk.

    Shape:
        - latent: ``(N, *)``; free: ``(N * repeats, *latent.free.shape[1:])``; images: ``(rows, C, H, W)``.
    """
    m = free.shape[0]
    bs = batch_size or m
    for lo in range(0, m, bs):
        rows = slice(lo, min(lo + bs, m))
        idx = torch.arange(rows.start, rows.stop, device=free.device) // repeats
        yield rows, generator.decode(latent[idx].replace(free[rows]))


def decode_repeated(generator: LatentGenerator, latent: Latent, free: Tensor, repeats: int,
                    batch_size: int | None) -> Tensor:
    """All the renders of :func:`iter_decoded`, concatenated ``(N * repeats, C, H, W)``."""
    return torch.cat([img for _, img in iter_decoded(generator, latent, free, repeats, batch_size)])
