"""The generator protocol: one latent space, ``encode(x) -> Latent`` and a differentiable ``decode``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from captum_cfx._validation import check_float, check_images, check_range

__all__ = ["Latent", "LatentGenerator"]


@dataclass
class Latent:
    """A batch of latent codes: a **free** part that methods optimise and a **fixed** part carried along.

    Methods only ever touch :attr:`free`. Indexing a ``Latent`` by a batch index selects the same rows
    of every part, so per-sample early stopping works for every generator.

    Args:
        free: the optimised tensor, batch first, e.g. a VAE mean ``(N, d)`` or a diffusion
            autoencoder's semantic code.
        fixed: named tensors, batch first, that are decoded with the free part but never optimised
            (a diffusion autoencoder's ``x_T``, a GAN's noise inputs): exactly what ``decode`` needs
            besides ``free``.
        diagnostics: named per-sample reports of the encoding, batch first, carried along but never decoded
            (a :class:`~captum_cfx.generators.GANGenerator`'s ``projection_error`` and ``projection_ok``).

    Shape:
        - free: ``(N, *)``; every tensor of ``fixed`` and ``diagnostics``: ``(N, *)``.
    """

    free: Tensor
    fixed: dict[str, Tensor] = field(default_factory=dict)
    diagnostics: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.free, Tensor):
            raise TypeError(f"`free` must be a torch.Tensor; got {type(self.free).__name__}")
        if self.free.dim() < 1:
            raise ValueError("`free` must have a batch dimension; got a 0-d tensor")
        for part in ("fixed", "diagnostics"):
            for k, v in getattr(self, part).items():
                if not isinstance(v, Tensor) or v.dim() < 1 or v.shape[0] != self.free.shape[0]:
                    raise ValueError(f"`{part}[{k!r}]` must be a tensor with batch size {self.free.shape[0]}; "
                                     f"got {getattr(v, 'shape', type(v).__name__)}")

    def __len__(self) -> int:
        return self.free.shape[0]

    def _map(self, fn: Any) -> Latent:
        """``fn`` applied to every tensor (free, fixed and diagnostics)."""
        return Latent(fn(self.free), {k: fn(v) for k, v in self.fixed.items()},
                      {k: fn(v) for k, v in self.diagnostics.items()})

    def __getitem__(self, index: Any) -> Latent:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda v: v[index])

    def replace(self, free: Tensor) -> Latent:
        """The same fixed part and diagnostics with a new free part (same batch size)."""
        return Latent(free, self.fixed, self.diagnostics)

    def detach(self) -> Latent:
        return self._map(lambda v: v.detach())

    def to(self, *args: Any, **kwargs: Any) -> Latent:
        return self._map(lambda v: v.to(*args, **kwargs))

    def repeat_interleave(self, repeats: int) -> Latent:
        """Each sample repeated ``repeats`` times in a row (rows ``i * repeats`` to ``(i + 1) * repeats - 1``
        are copies of sample ``i``), every part alike."""
        return self._map(lambda v: v.repeat_interleave(repeats, 0))

    @staticmethod
    def cat(latents: Sequence[Latent]) -> Latent:
        """Concatenate along the batch dimension (diagnostics that every latent has)."""
        if not latents:
            raise ValueError("`latents` must hold at least one Latent; got an empty sequence")
        keys = latents[0].fixed.keys()
        diag = set.intersection(*(set(lat.diagnostics) for lat in latents))
        return Latent(torch.cat([lat.free for lat in latents]),
                      {k: torch.cat([lat.fixed[k] for lat in latents]) for k in keys},
                      {k: torch.cat([lat.diagnostics[k] for lat in latents]) for k in latents[0].diagnostics
                       if k in diag})


def require_range(input_range: Any, who: str) -> None:
    """Generators that convert images to another range (diffusers' ``[-1, 1]``) need ``input_range``."""
    if input_range is None:
        raise ValueError(f"`input_range` must be a (low, high) pair: {who} converts images to diffusers' [-1, 1] "
                         "range; got None")


class LatentGenerator(nn.Module, ABC):
    """Base class of every latent space captum_cfx can search.

    Subclasses implement :meth:`encode` and a differentiable :meth:`decode`. Images are in the
    explained model's own input range (:attr:`input_range`); adapters convert internally.

    Args:
        input_range: ``(low, high)`` of the images, e.g. ``(0, 1)``; ``None`` skips range checks.
        image_shape: ``(C, H, W)`` of the images, or ``None`` to accept any 4-D batch.
    """

    def __init__(self, input_range: tuple[float, float] | None = (0.0, 1.0),
                 image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.input_range = check_range(input_range, "input_range")
        self.image_shape = self._check_image_shape(image_shape)

    @staticmethod
    def _check_image_shape(image_shape: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if image_shape is None:
            return None
        if len(image_shape) != 3 or not all(isinstance(v, int) and v > 0 for v in image_shape):
            raise ValueError(f"`image_shape` must be (C, H, W) with positive ints; got {image_shape!r}")
        return tuple(image_shape)

    @abstractmethod
    def encode(self, x: Tensor) -> Latent:
        """Map images ``(N, C, H, W)`` to latents."""

    @abstractmethod
    def decode(self, latent: Latent | Tensor) -> Tensor:
        """Map latents to images ``(N, C, H, W)``, differentiably in ``latent.free``."""

    def decode_chunked(self, latent: Latent | Tensor, batch_size: int | None = None) -> Tensor:
        """:meth:`decode` in chunks of at most ``batch_size`` latents, concatenated (``None``: one call).

        What the methods use for their many-render decodes (walks, paths, transfers, metrics), so that
        ``internal_batch_size`` bounds the decoder's activations whatever the number of renders. Each sample is
        decoded exactly as in one call (the decoders are per-sample computations); gradients flow as through
        :meth:`decode`.

        Shape:
            - latent: ``(N, *)`` (every part batch first); returns ``(N, C, H, W)``.
        """
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive int or None; got {batch_size!r}")
        lat = self._as_latent(latent)
        n = len(lat)
        if batch_size is None or batch_size >= n:
            return self.decode(lat)
        return torch.cat([self.decode(lat[lo:lo + batch_size]) for lo in range(0, n, batch_size)])

    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``."""
        return self.decode(self.encode(x))

    #: how far images may stray outside :attr:`input_range`, as a fraction of its width, before they are refused
    #: (0.1: the Gaussian noise of ``captum.attr.NoiseTunnel`` with ``stdevs`` up to about 0.02 of the width).
    #: Set it on the instance for noisier inputs; 0 demands the range exactly.
    range_tolerance: float = 0.1

    def check_images(self, x: Any, argument: str = "inputs") -> Tensor:
        """Validate a batch of images against this generator (rank, dtype, channels, range, finite)."""
        tol = check_float(self.range_tolerance, "range_tolerance", low=0)
        return check_images(x, argument, image_shape=self.image_shape, value_range=self.input_range, tol=tol)

    def _as_latent(self, latent: Latent | Tensor, argument: str = "latent") -> Latent:
        if isinstance(latent, Latent):
            return latent
        if isinstance(latent, Tensor):
            return Latent(latent)
        raise TypeError(f"`{argument}` must be a Latent or a torch.Tensor; got {type(latent).__name__}")

    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for parameter-free generators)."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the first floating parameter (the default dtype otherwise)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()
