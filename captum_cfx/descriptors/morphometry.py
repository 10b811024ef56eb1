"""Morpho-MNIST-style shape measurements of digit images (Castro et al., 2019).

Each image is upsampled (bilinear, ``scale`` times), binarised at ``threshold`` and measured:

============  =====================================================================================
area          foreground pixels, in original-pixel units (``count / scale**2``)
length        stroke length: pixels of the skeleton (``skimage.morphology.skeletonize``) / ``scale``
thickness     twice the mean Euclidean distance transform on the skeleton, / ``scale``
slant         horizontal shear of the foreground from its second moments, ``atan(-mu11 / mu02)``
              in radians (positive: the top leans right)
width         horizontal extent after removing the slant (shear ``x - (mu11/mu02) (y - y_c)``)
height        vertical extent of the foreground
============  =====================================================================================

How this differs from Morpho-MNIST's reference code: the skeleton length is a pixel count (Morpho-MNIST
smooths the skeleton path), width and height are the full extents of the deslanted foreground rather
than of a fitted parallelogram, and the moment-based measures (area, slant, width, height) are computed
batched in torch. Only ``length`` and ``thickness`` need the per-image skeleton. An empty image (no
foreground) measures 0 for every descriptor.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MORPHOMETRY_NAMES", "Morphometry", "measure_morphometry"]

#: the columns of :func:`measure_morphometry`, in order.
MORPHOMETRY_NAMES: tuple[str, ...] = ("area", "length", "thickness", "slant", "width", "height")


def _check(images: Tensor, threshold: float, scale: int) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"`images` must be a torch.Tensor (N, 1, H, W); got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"`images` must be grey-scale digits of shape (N, 1, H, W); got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"`images` must be a floating-point tensor in [0, 1]; got dtype {images.dtype}")
    if images.numel() and not torch.isfinite(images).all():
        raise ValueError("`images` contains NaN or Inf values")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"`scale` must be an int >= 1; got {scale!r}")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1); got {threshold!r}")
    return images


def _moments(mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Batched area, centroid and central second moments of binary masks ``(N, H, W)``."""
    n, h, w = mask.shape
    ys = torch.arange(h, dtype=mask.dtype, device=mask.device).view(1, h, 1)
    xs = torch.arange(w, dtype=mask.dtype, device=mask.device).view(1, 1, w)
    m00 = mask.sum((1, 2))
    safe = m00.clamp_min(1.0)
    yc = (mask * ys).sum((1, 2)) / safe
    xc = (mask * xs).sum((1, 2)) / safe
    dy = ys - yc.view(n, 1, 1)
    dx = xs - xc.view(n, 1, 1)
    mu11 = (mask * dx * dy).sum((1, 2)) / safe
    mu02 = (mask * dy * dy).sum((1, 2)) / safe
    return m00, yc, xc, mu11, mu02, dx, dy


def measure_morphometry(images: Tensor, threshold: float = 0.5, scale: int = 4) -> Tensor:
    """Measure area, stroke length, thickness, slant, width and height of digit images.

    Args:
        images: grey-scale digits, ink bright on a dark background.
        threshold: binarisation threshold after upsampling.
        scale: upsampling factor (Morpho-MNIST uses 4); lengths are reported in original pixels.

    Shape:
        - images: ``(N, 1, H, W)`` in ``[0, 1]``.
        - returns: ``(N, 6)`` float, columns :data:`MORPHOMETRY_NAMES`, on the device and in the dtype of
          ``images``.

    Examples::

        >>> from captum_cfx.datasets import load_mnist
        >>> from captum_cfx.descriptors import measure_morphometry
        >>> x, _ = load_mnist("test")
        >>> d = measure_morphometry(x[:100])      # (100, 6): area, length, thickness, slant, width, height
    """
    _check(images, threshold, scale)
    x = images.detach().to("cpu", torch.float32)
    if scale > 1 and x.shape[0]:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    mask = (x[:, 0] >= threshold).to(torch.float32)
    m00, yc, xc, mu11, mu02, dx, dy = _moments(mask)
    shear = torch.where(mu02 > 0, mu11 / mu02.clamp_min(1e-12), torch.zeros_like(mu02))
    slant = torch.atan(-shear)
    fg = mask > 0
    big = torch.tensor(float("inf"))
    xdesl = dx - shear.view(-1, 1, 1) * dy
    xdesl = xdesl.expand_as(mask)
    dyf = dy.expand_as(mask)
    empty = m00 == 0
    width = torch.where(fg, xdesl, -big).amax((1, 2)) - torch.where(fg, xdesl, big).amin((1, 2)) + 1.0
    height = torch.where(fg, dyf, -big).amax((1, 2)) - torch.where(fg, dyf, big).amin((1, 2)) + 1.0
    width = torch.where(empty, torch.zeros_like(width), width)
    height = torch.where(empty, torch.zeros_like(height), height)

    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    length = torch.zeros(mask.shape[0])
    thickness = torch.zeros(mask.shape[0])
    masks = fg.numpy()
    for i in range(masks.shape[0]):
        if empty[i]:
            continue
        skel = skeletonize(masks[i])
        n_skel = int(skel.sum())
        length[i] = n_skel
        if n_skel:
            dist = distance_transform_edt(masks[i])
            thickness[i] = 2.0 * float(np.mean(dist[skel]))
    out = torch.stack([m00 / scale**2, length / scale, thickness / scale, slant, width / scale, height / scale], 1)
    return out.to(device=images.device, dtype=images.dtype)


class Morphometry:
    """A descriptor function: ``Morphometry()(images) -> (N, 6)`` with :attr:`names`.

    A small callable wrapper of :func:`measure_morphometry` so that it can be passed wherever captum_cfx
    takes "a function that measures images" (e.g.
    :meth:`~captum_cfx.CounterfactualDescriptorAttribution.measure_images`).

    Args:
        threshold, scale: as in :func:`measure_morphometry`.
    """

    names: tuple[str, ...] = MORPHOMETRY_NAMES

    def __init__(self, threshold: float = 0.5, scale: int = 4) -> None:
        self.threshold = threshold
        self.scale = scale

    def __call__(self, images: Tensor) -> Tensor:
        return measure_morphometry(images, self.threshold, self.scale)

    def __repr__(self) -> str:
        return f"Morphometry(threshold={self.threshold}, scale={self.scale})"
