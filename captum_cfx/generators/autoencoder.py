"""Adapters for any encoder/decoder pair and for VAE modules (the posterior mean is the latent)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from captum_cfx.generators.base import Latent, LatentGenerator

__all__ = ["AutoencoderGenerator", "VAEGenerator"]


def _first(out: object, who: str) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    for attr in ("mean", "loc", "latents", "sample"):
        if isinstance(getattr(out, attr, None), Tensor):
            return getattr(out, attr)
    raise TypeError(f"{who} must return a tensor, a (mean, ...) tuple or an object with `.mean`; "
                    f"got {type(out).__name__}")


class AutoencoderGenerator(LatentGenerator):
    """Wrap an encoder and a decoder (modules or callables) as a latent space.

    ``encoder(x)`` may return a tensor, a ``(mean, logvar)`` tuple or a distribution-like object with
    ``.mean``; the mean is the latent. ``decoder(z)`` must return images in ``input_range``.

    Args:
        encoder: maps ``(N, C, H, W)`` images to ``(N, *latent_shape)``.
        decoder: maps latents back to images; must be differentiable.
        input_range: value range of the images.
        image_shape: ``(C, H, W)``. When given, the pair is probed once with a zero image and a
            mismatch between ``decoder(encoder(x))`` and ``image_shape`` raises ``ValueError``.

    Shape:
        - encode: ``(N, C, H, W) -> Latent(free=(N, *latent_shape))``
        - decode: ``Latent -> (N, C, H, W)``

    Examples::

        >>> import torch
        >>> enc, dec = torch.nn.Linear(4, 2), torch.nn.Linear(2, 4)
        >>> gen = AutoencoderGenerator(lambda x: enc(x.flatten(1)), lambda z: dec(z).view(-1, 1, 2, 2),
        ...                            input_range=None, image_shape=(1, 2, 2))
        >>> gen.encode(torch.rand(3, 1, 2, 2)).free.shape
        torch.Size([3, 2])
    """

    def __init__(self, encoder: Callable[[Tensor], object], decoder: Callable[[Tensor], Tensor],
                 input_range: tuple[float, float] | None = (0.0, 1.0),
                 *, image_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__(input_range, image_shape)
        for name, fn in (("encoder", encoder), ("decoder", decoder)):
            if not callable(fn):
                raise TypeError(f"`{name}` must be callable (a module or a function); got {type(fn).__name__}")
        self.encoder = encoder
        self.decoder = decoder
        if image_shape is not None:
            self._probe()

    def _probe(self) -> None:
        x = torch.zeros(2, *self.image_shape, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            try:
                z = self._encode_mean(x)
            except (RuntimeError, ValueError, IndexError) as e:
                raise ValueError(f"`encoder` fails on a zero image batch of `image_shape` (2, "
                                 f"{', '.join(map(str, self.image_shape))}) ({type(e).__name__}: {e})") from e
            if z.shape[0] != 2:
                raise ValueError(f"`encoder` must keep the batch dimension; mapped (2, {self.image_shape}) "
                                 f"to {tuple(z.shape)}")
            try:
                out = _first(self.decoder(z), "`decoder`")
            except (RuntimeError, ValueError, IndexError) as e:
                raise ValueError(f"`encoder` and `decoder` do not match: the decoder fails on the "
                                 f"encoder's output of shape {tuple(z.shape)} ({e})") from e
        if tuple(out.shape) != (2, *self.image_shape):
            raise ValueError(f"`encoder` and `decoder` do not match `image_shape` {self.image_shape}: "
                             f"decoder(encoder(x)) has shape {tuple(out.shape[1:])}")

    def _encode_mean(self, x: Tensor) -> Tensor:
        return _first(self.encoder(x), "`encoder`")

    def encode(self, x: Tensor) -> Latent:
        self.check_images(x, "x")
        return Latent(self._encode_mean(x))

    def decode(self, latent: Latent | Tensor) -> Tensor:
        return _first(self.decoder(self._as_latent(latent).free), "`decoder`")


class VAEGenerator(AutoencoderGenerator):
    """Wrap a VAE module with ``encode(x) -> (mean, logvar)`` (or ``.mean``) and ``decode(z)``.

    The latent is the posterior mean. :meth:`encode_sample` draws a reparameterised sample instead
    (the reference code of Goldwasser & Hooker starts its attack from such a sample).

    Args:
        vae: the module; it is registered as a submodule so ``.to()``/``.eval()`` reach it.
        input_range, image_shape: as in :class:`AutoencoderGenerator`.
    """

    def __init__(self, vae: nn.Module, input_range: tuple[float, float] | None = (0.0, 1.0),
                 image_shape: tuple[int, int, int] | None = None) -> None:
        for m in ("encode", "decode"):
            if not callable(getattr(vae, m, None)):
                raise TypeError(f"`vae` must have callable `encode` and `decode` methods; "
                                f"{type(vae).__name__} has no `{m}`")
        super().__init__(vae.encode, vae.decode, input_range, image_shape=None)
        self.vae = vae  # registered first, so that the probe sees the VAE's device and dtype
        if image_shape is not None:
            self.image_shape = self._check_image_shape(image_shape)
            self._probe()

    def encode_sample(self, x: Tensor, generator: torch.Generator | None = None) -> Latent:
        """A reparameterised sample ``mean + exp(logvar / 2) * eps`` from the posterior."""
        self.check_images(x, "x")
        out = self.vae.encode(x)
        if not (isinstance(out, (tuple, list)) and len(out) >= 2):
            raise TypeError("`vae.encode` must return (mean, logvar) to draw samples")
        mean, logvar = out[0], out[1]
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return Latent(mean + eps * (0.5 * logvar).exp())
