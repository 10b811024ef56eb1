"""Squares: a regression world whose every factor can be read back from the pixels exactly.

After the synthetic data set of Ha & Bender, *Diffusion counterfactuals for image regressors* (2025):
a yellow bordered square on a coloured background holds an inner grey square whose intensity is the
regression target in ``[0, 1]``. Background colour and position are nuisance factors; a fixed
pattern of uniform pixel noise is added (one of 1,024 fixed seeded patterns, picked by the per-image
``noise_seed``). Rendering is a pure function of the factor table, so ``render(factors)`` reproduces a
sampled image bit for bit.

Colours are mapped affinely into ``[margin, 1 - margin]`` with ``margin >= noise`` so that no pixel is
ever clipped: an inner square of intensity ``t`` has pixel value ``margin + (1 - 2 margin) t`` in all
three channels, and :meth:`Squares.measure` inverts that map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from captum_cfx.datasets._common import render_in_chunks

#: rows rendered at a time
_CHUNK = 512

__all__ = ["Squares", "SquaresSample"]

_BORDER_RGB = (1.0, 0.85, 0.0)
#: background channel ranges (kept away from the border colour so that the border can be found)
_BG_LOW = (0.0, 0.0, 0.3)
_BG_HIGH = (0.6, 0.6, 1.0)
#: number of distinct noise patterns; ``noise_seed`` picks one (modulo this number)
_NOISE_PATTERNS = 1024


@lru_cache(maxsize=4)
def _noise_bank_cpu(image_size: int) -> Tensor:
    """The ``_NOISE_PATTERNS`` fixed noise patterns in ``[-1, 1)``, drawn once from a seeded CPU generator
    (the CPU generator gives the same numbers on every machine)."""
    g = torch.Generator().manual_seed(20250)
    return torch.rand(_NOISE_PATTERNS, 3, image_size, image_size, generator=g) * 2 - 1


@dataclass
class SquaresSample:
    """Images, regression targets and the factor table of a :class:`Squares` draw."""

    images: Tensor
    targets: Tensor
    factors: Tensor

    def __iter__(self):  # allows ``x, y, f = world.sample(...)``
        return iter((self.images, self.targets, self.factors))


class Squares:
    """The squares regression world (seed 003's synthetic data set), procedural and vectorised.

    Factors (columns of the factor table, in order): ``intensity`` (the target, ``[0, 1]``),
    ``bg_r``, ``bg_g``, ``bg_b`` (background colour before the margin map), ``x``, ``y`` (integer
    top-left corner of the outer square, in pixels) and ``noise_seed`` (which of 1,024 fixed noise patterns).

    Args:
        image_size: 32 or 64. Geometry scales with it: the outer square is ``14/32`` of the side, its
            border ``3/32``, the inner square ``8/32``.
        noise: amplitude of the uniform pixel noise (``U(-noise, noise)`` per pixel and channel).
        margin: colours are mapped into ``[margin, 1 - margin]``; must be ``>= noise`` so nothing clips.

    Shape:
        - images: ``(N, 3, S, S)`` in ``[0, 1]``; targets ``(N,)``; factors ``(N, 7)``.

    Examples::

        >>> import torch
        >>> from captum_cfx.datasets import Squares
        >>> world = Squares()
        >>> x, y, f = world.sample(4, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(world.render(f), x)
        True
        >>> bool((world.measure(x)[:, 0] - y).abs().max() < 0.01)
        True
    """

    factor_names: tuple[str, ...] = ("intensity", "bg_r", "bg_g", "bg_b", "x", "y", "noise_seed")
    #: factors that are read from the image by :meth:`measure` (all but the noise seed)
    measured_names: tuple[str, ...] = ("intensity", "bg_r", "bg_g", "bg_b", "x", "y")

    def __init__(self, image_size: int = 32, noise: float = 0.03, margin: float = 0.05) -> None:
        if image_size not in (32, 64):
            raise ValueError(f"`image_size` must be 32 or 64; got {image_size!r}")
        if not 0.0 <= noise <= margin < 0.5:
            raise ValueError(f"`noise` and `margin` must satisfy 0 <= noise <= margin < 0.5; got {noise} and {margin}")
        self.image_size = image_size
        self.noise = float(noise)
        self.margin = float(margin)
        s = image_size // 32
        self.outer, self.border, self.inner = 14 * s, 3 * s, 8 * s
        self.max_pos = image_size - self.outer
        self._banks: dict[str, Tensor] = {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def _map(self, c: Tensor) -> Tensor:
        return self.margin + (1 - 2 * self.margin) * c

    def _unmap(self, p: Tensor) -> Tensor:
        return (p - self.margin) / (1 - 2 * self.margin)

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None,
               *, intensity: Tensor | None = None) -> SquaresSample:
        """Draw ``n`` images with uniform factors.

        Args:
            n: number of images.
            generator: a ``torch.Generator`` for reproducible draws (on ``device``'s type).
            device: where the tensors live (default CPU).
            intensity: optional ``(n,)`` targets to use instead of uniform ones.

        Returns:
            :class:`SquaresSample` ``(images, targets, factors)``; it unpacks like a tuple.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"`n` must be a non-negative int; got {n!r}")
        kw = {"generator": generator, "device": device}
        f = torch.empty(n, 7, device=device)
        f[:, 0] = torch.rand(n, **kw)
        if intensity is not None:
            if intensity.shape != (n,):
                raise ValueError(f"`intensity` must have shape ({n},); got {tuple(intensity.shape)}")
            f[:, 0] = intensity.to(f)
        lo, hi = torch.tensor(_BG_LOW, device=device), torch.tensor(_BG_HIGH, device=device)
        f[:, 1:4] = lo + (hi - lo) * torch.rand(n, 3, **kw)
        f[:, 4:6] = torch.randint(0, self.max_pos + 1, (n, 2), **kw).float()
        f[:, 6] = torch.randint(0, _NOISE_PATTERNS, (n,), **kw).float()
        return SquaresSample(self.render(f), f[:, 0].clone(), f)

    def _check_factors(self, factors: Tensor) -> None:
        if not isinstance(factors, Tensor):
            raise TypeError(f"`factors` must be a Tensor; got {type(factors).__name__}")
        if factors.dim() != 2 or factors.shape[1] != len(self.factor_names):
            raise ValueError(f"`factors` must be (N, {len(self.factor_names)}) with columns {self.factor_names}; "
                             f"got {tuple(factors.shape)}")

    def render(self, factors: Tensor) -> Tensor:
        """Render images from a factor table; a pure function (same table, same pixels).

        Args:
            factors: ``(N, 7)`` table with columns :attr:`factor_names`.

        Returns:
            ``(N, 3, S, S)`` float32 images in ``[0, 1]`` on ``factors.device``.
        """
        self._check_factors(factors)
        return render_in_chunks(self._render, factors, self.image_shape, _CHUNK)

    def _render(self, factors: Tensor) -> Tensor:
        n, s, dev = factors.shape[0], self.image_size, factors.device
        f = factors.float()
        ar = torch.arange(s, device=dev, dtype=torch.float32)
        x0, y0 = f[:, 4].round()[:, None], f[:, 5].round()[:, None]
        if bool(((f[:, 4:6] < 0) | (f[:, 4:6] > self.max_pos)).any()):
            raise ValueError(f"`factors` x and y must lie in [0, {self.max_pos}]")

        def band(a: float, b: float, origin: Tensor) -> Tensor:  # (N, S): a <= pos - origin < b
            d = ar[None] - origin
            return (d >= a) & (d < b)

        ox, oy = band(0, self.outer, x0), band(0, self.outer, y0)
        ix, iy = band(self.border, self.outer - self.border, x0), band(self.border, self.outer - self.border, y0)
        # label map (0 background, 1 border, 2 inner) and a per-image palette, gathered in one pass
        lab = (oy[:, :, None] & ox[:, None, :]).long() + (iy[:, :, None] & ix[:, None, :]).long()
        border = torch.tensor(_BORDER_RGB, device=dev).expand(n, 3)
        palette = self._map(torch.stack([f[:, 1:4], border, f[:, :1].expand(n, 3)], 2))  # (N, 3 channels, 3)
        img = torch.gather(palette, 2, lab.view(n, 1, s * s).expand(n, 3, s * s)).view(n, 3, s, s)
        if self.noise > 0:
            idx = f[:, 6].to(torch.int64) % _NOISE_PATTERNS
            img.add_(torch.index_select(self._noise_bank(dev), 0, idx), alpha=self.noise)
        return img

    def _noise_bank(self, device: torch.device) -> Tensor:
        """The fixed noise patterns on ``device`` (made once on CPU, copied once per device)."""
        key = str(device)
        if key not in self._banks:
            self._banks[key] = _noise_bank_cpu(self.image_size).to(device)
        return self._banks[key]

    def measure(self, images: Tensor) -> Tensor:
        """Read the factors back from pixels: ``(N, 6)`` with columns :attr:`measured_names`.

        The outer square is found by matching its yellow border (template matching over all
        positions); the intensity is the mean of the inner square, the background the mean of the
        pixels outside the outer square, both mapped back through the colour margin. On images the
        world rendered, position is exact and intensity/background are exact up to the mean of the
        noise (at most about 0.006 at 32x32). On counterfactual images it is the natural reading.

        Args:
            images: ``(N, 3, S, S)`` images in ``[0, 1]``.
        """
        s = self.image_size
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"`images` must be (N, 3, {s}, {s}); got {got}")
        x = images.float()
        n, dev = x.shape[0], x.device
        border = self._map(torch.tensor(_BORDER_RGB, device=dev))[None, :, None, None]
        closeness = (1 - (x - border).norm(dim=1, keepdim=True) / 0.5).clamp(min=0)  # (N,1,S,S)
        ring = torch.ones(1, 1, self.outer, self.outer, device=dev)
        ring[..., self.border : -self.border, self.border : -self.border] = -1.0
        score = torch.nn.functional.conv2d(closeness, ring).flatten(1)  # (N, P*P)
        best = score.argmax(1)
        p = self.max_pos + 1
        y0, x0 = best // p, best % p
        ar = torch.arange(s, device=dev)
        dx, dy = ar[None] - x0[:, None], ar[None] - y0[:, None]
        inx = (dx >= self.border) & (dx < self.outer - self.border)
        iny = (dy >= self.border) & (dy < self.outer - self.border)
        inner = (iny[:, :, None] & inx[:, None, :])[:, None].float()
        outer = (((dy >= 0) & (dy < self.outer))[:, :, None] & ((dx >= 0) & (dx < self.outer))[:, None, :])
        outside = (~outer)[:, None].float()
        intensity = (x * inner).sum((1, 2, 3)) / (3 * inner.sum((1, 2, 3)))
        bg = (x * outside).sum((2, 3)) / outside.sum((2, 3))
        out = torch.empty(n, 6, device=dev)
        out[:, 0] = self._unmap(intensity)
        out[:, 1:4] = self._unmap(bg)
        out[:, 4], out[:, 5] = x0.float(), y0.float()
        return out
