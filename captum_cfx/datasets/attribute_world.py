"""An attribute world: cartoon faces drawn from nine named factors that follow a known causal graph.

Every image is a pure function of its factor row (:meth:`AttributeWorld.render`), so for any two
images the world rendered, the factor tables say exactly which factors differ. Sampling follows a
small documented structural causal model (:data:`CAUSAL_GRAPH`), so that interventions that let
descendants follow ("causal") and interventions that hold everything else fixed ("contrastive") differ
measurably, and a spurious correlation can be planted with :meth:`AttributeWorld.sample`'s ``do``.

Factors (columns of the factor table, in this order; binary ones are 0/1 floats, continuous ones in ``[0, 1]``):

============ ========== ==================================================================
name         kind       rendering
============ ========== ==================================================================
age          continuous darkness of two vertical cheek lines (wrinkles)
grey_hair    binary     hair colour grey instead of dark brown
hat          binary     a red hat covering the crown; hair then shows only at the sides
smile        binary     mouth curved (corners up) instead of straight
eyeglasses   binary     black rings around both eyes and a bridge
eyes_open    binary     filled round eyes instead of closed lines
skin_tone    continuous face colour from light to dark
face_size    continuous face radius from 8 to 11 pixels (at 32x32)
background   continuous hue of the background colour
============ ========== ==================================================================

Causal graph (sampling order; roots are uniform or Bernoulli)::

    age ~ U(0, 1)
    grey_hair  | age   ~ Bernoulli(0.05 + 0.9 * age**2)        age -> grey_hair
    eyeglasses | age   ~ Bernoulli(0.15 + 0.5 * age)           age -> eyeglasses
    hat               ~ Bernoulli(0.3)
    smile             ~ Bernoulli(0.5)
    eyes_open | smile ~ Bernoulli(0.9 - 0.3 * smile)          smile -> eyes_open (smiles squint)
    skin_tone, face_size, background ~ U(0, 1)

Besides the graph, rendering has one occlusion: a hat hides the hair's crown (hair colour stays
visible at the sides only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from captum_cfx.datasets._common import render_in_chunks

#: rows rendered at a time
_CHUNK = 512

__all__ = ["CAUSAL_GRAPH", "AttributeWorld", "WorldSample"]

FACTOR_NAMES: tuple[str, ...] = ("age", "grey_hair", "hat", "smile", "eyeglasses", "eyes_open", "skin_tone",
                                 "face_size", "background")
BINARY: tuple[str, ...] = ("grey_hair", "hat", "smile", "eyeglasses", "eyes_open")
CONTINUOUS: tuple[str, ...] = ("age", "skin_tone", "face_size", "background")
#: parents of each factor in the structural causal model that :meth:`AttributeWorld.sample` follows
CAUSAL_GRAPH: dict[str, tuple[str, ...]] = {
    "age": (), "grey_hair": ("age",), "hat": (), "smile": (), "eyeglasses": ("age",), "eyes_open": ("smile",),
    "skin_tone": (), "face_size": (), "background": (),
}  # fmt: skip

_SKIN_LIGHT = (0.96, 0.80, 0.69)
_SKIN_DARK = (0.45, 0.30, 0.20)
_HAIR_BROWN = (0.25, 0.15, 0.08)
_HAIR_GREY = (0.75, 0.75, 0.75)
_HAT = (0.75, 0.08, 0.12)
_INK = (0.08, 0.08, 0.08)
_MOUTH = (0.55, 0.08, 0.10)


def _mechanism(name: str, f: Tensor, u: Tensor) -> Tensor:
    """Structural equation of ``name`` given the (partial) table ``f`` and its exogenous uniform ``u``."""
    c = {n: i for i, n in enumerate(FACTOR_NAMES)}
    if name == "grey_hair":
        return (u < 0.05 + 0.9 * f[:, c["age"]] ** 2).float()
    if name == "eyeglasses":
        return (u < 0.15 + 0.5 * f[:, c["age"]]).float()
    if name == "hat":
        return (u < 0.3).float()
    if name == "smile":
        return (u < 0.5).float()
    if name == "eyes_open":
        return (u < 0.9 - 0.3 * f[:, c["smile"]]).float()
    return u  # continuous roots


@dataclass
class WorldSample:
    """Images and the exact factor table of an :class:`AttributeWorld` draw; unpacks as ``(images, factors)``."""

    images: Tensor
    factors: Tensor

    def __iter__(self):
        return iter((self.images, self.factors))


class AttributeWorld:
    """Cartoon faces with nine known factors and a known causal graph (see the module docstring).

    Args:
        image_size: 32 or 64 (the drawing is defined on a 32x32 canvas and sampled at pixel centres).

    Attributes:
        factor_names: the nine factor names, in column order.
        binary_factors / continuous_factors: the two kinds.
        causal_graph: ``{factor: parents}``.

    Shape:
        - images: ``(N, 3, S, S)`` in ``[0, 1]``; factors: ``(N, 9)``.

    Examples::

        >>> import torch
        >>> from captum_cfx.datasets import AttributeWorld
        >>> world = AttributeWorld()
        >>> x, f = world.sample(8, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(world.render(f), x)
        True
        >>> # plant a correlation: eyeglasses copies smile
        >>> x, f = world.sample(8, generator=torch.Generator().manual_seed(0), do={"eyeglasses": "smile"})
        >>> bool((f[:, world.index("eyeglasses")] == f[:, world.index("smile")]).all())
        True
    """

    factor_names = FACTOR_NAMES
    binary_factors = BINARY
    continuous_factors = CONTINUOUS
    causal_graph = CAUSAL_GRAPH

    def __init__(self, image_size: int = 32) -> None:
        if image_size not in (32, 64):
            raise ValueError(f"`image_size` must be 32 or 64; got {image_size!r}")
        self.image_size = image_size

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    @property
    def is_binary(self) -> Tensor:
        """``(9,)`` bool mask of the binary columns."""
        return torch.tensor([n in BINARY for n in FACTOR_NAMES])

    def index(self, name: str) -> int:
        """Column of a factor."""
        if name not in FACTOR_NAMES:
            raise ValueError(f"`name` must be one of {FACTOR_NAMES}; got {name!r}")
        return FACTOR_NAMES.index(name)

    def descendants(self, name: str) -> tuple[str, ...]:
        """Factors downstream of ``name`` in the causal graph (excluding itself)."""
        self.index(name)
        out: list[str] = []
        frontier = [name]
        while frontier:
            cur = frontier.pop()
            for child, parents in CAUSAL_GRAPH.items():
                if cur in parents and child not in out:
                    out.append(child)
                    frontier.append(child)
        return tuple(n for n in FACTOR_NAMES if n in out)

    def _do_values(self, do: Mapping[str, object], n: int, name: str, f: Tensor) -> Tensor:
        v = do[name]
        if isinstance(v, str):
            t = f[:, self.index(v)].clone()
        else:
            if isinstance(v, bool):
                v = float(v)
            try:
                t = torch.as_tensor(v, dtype=torch.float32, device=f.device)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"`do[{name!r}]` must be a number, a ({n},) tensor or a factor name; "
                                f"got {type(v).__name__}") from None
            if t.dim() == 0:
                t = t.expand(n)
            if t.shape != (n,):
                raise ValueError(f"`do[{name!r}]` must be a scalar, a ({n},) tensor or a factor name; got shape "
                                 f"{tuple(t.shape)}")
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"`do[{name!r}]` must be finite; got NaN or Inf")
        if name in BINARY and t.numel() and not bool(((t == 0) | (t == 1)).all()):
            bad = t[(t != 0) & (t != 1)][:3].tolist()
            raise ValueError(f"`do[{name!r}]` sets a binary factor: values must be 0 or 1; got {bad}")
        if name in CONTINUOUS and t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"`do[{name!r}]` sets a continuous factor in [0, 1]; got values in "
                             f"[{float(t.min()):.4g}, {float(t.max()):.4g}]")
        return t.clone()

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None,
               *, do: Mapping[str, object] | None = None) -> WorldSample:
        """Draw ``n`` faces by ancestral sampling of the causal graph, optionally under interventions.

        Args:
            n: number of images.
            generator: a ``torch.Generator`` for reproducible draws.
            device: where the tensors live.
            do: interventions ``{factor: value}``; a value is a scalar, an ``(n,)`` tensor, or the name of
                an earlier factor to copy. Intervened factors ignore their parents; their descendants
                follow the intervened value.

        Returns:
            :class:`WorldSample` ``(images, factors)``.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"`n` must be a non-negative int; got {n!r}")
        do = dict(do or {})
        for k in do:
            self.index(k)
        u = torch.rand(n, len(FACTOR_NAMES), generator=generator, device=device)
        f = torch.zeros(n, len(FACTOR_NAMES), device=device)
        order = ("age", "smile", "grey_hair", "hat", "eyeglasses", "eyes_open", "skin_tone", "face_size",
                 "background")
        for name in order:
            i = self.index(name)
            f[:, i] = self._do_values(do, n, name, f) if name in do else _mechanism(name, f, u[:, i])
        return WorldSample(self.render(f), f)

    def sample_correlated(self, n: int, label: str = "smile", spurious: str = "eyeglasses", *, agreement: float = 0.9,
                          generator: torch.Generator | None = None, device: torch.device | str | None = None
                          ) -> WorldSample:
        """Draw a split with a planted correlation: ``spurious`` equals ``label`` with probability ``agreement``.

        ``label`` is drawn as a fair coin and ``spurious`` copies it (or its negation); both are
        interventions, so their descendants follow. ``agreement=0.5`` makes them independent, ``0.0``
        anti-correlated. Both must be binary factors.
        """
        for arg, name in (("label", label), ("spurious", spurious)):
            if name not in BINARY:
                raise ValueError(f"`{arg}` must be a binary factor, one of {BINARY}; got {name!r}")
        if label == spurious:
            raise ValueError(f"`label` and `spurious` must differ; got {label!r} twice")
        if not 0.0 <= agreement <= 1.0:
            raise ValueError(f"`agreement` must be in [0, 1]; got {agreement}")
        y = (torch.rand(n, generator=generator, device=device) < 0.5).float()
        agree = (torch.rand(n, generator=generator, device=device) < agreement).float()
        return self.sample(n, generator=generator, device=device,
                           do={label: y, spurious: agree * y + (1 - agree) * (1 - y)})

    def intervene(self, factors: Tensor, do: Mapping[str, object], generator: torch.Generator | None = None,
                  *, causal: bool = True) -> Tensor:
        """A new factor table after ``do(...)``.

        ``causal=True`` redraws the descendants of the intervened factors from their mechanisms (fresh
        noise from ``generator``); ``causal=False`` (contrastive) keeps every other factor as it was.
        """
        self._check_factors(factors)
        n = factors.shape[0]
        f = factors.float().clone()
        redraw: set[str] = set()
        for k in do:
            f[:, self.index(k)] = self._do_values(do, n, k, factors.float())
            if causal:
                redraw.update(self.descendants(k))
        redraw -= set(do)
        if redraw:
            u = torch.rand(n, len(FACTOR_NAMES), generator=generator, device=f.device)
            for name in FACTOR_NAMES:  # column order is a topological order for the redrawn ones
                if name in redraw:
                    f[:, self.index(name)] = _mechanism(name, f, u[:, self.index(name)])
        return f

    def _check_factors(self, factors: Tensor) -> None:
        if not isinstance(factors, Tensor):
            raise TypeError(f"`factors` must be a Tensor; got {type(factors).__name__}")
        if factors.dim() != 2 or factors.shape[1] != len(FACTOR_NAMES):
            raise ValueError(f"`factors` must be (N, {len(FACTOR_NAMES)}) with columns {FACTOR_NAMES}; "
                             f"got {tuple(factors.shape)}")

    def to_dict(self, factors: Tensor) -> dict[str, Tensor]:
        """The factor table as ``{name: (N,) tensor}``."""
        self._check_factors(factors)
        return {n: factors[:, i] for i, n in enumerate(FACTOR_NAMES)}

    def from_dict(self, table: Mapping[str, Tensor]) -> Tensor:
        """Inverse of :meth:`to_dict` (all nine names are required)."""
        missing = [n for n in FACTOR_NAMES if n not in table]
        if missing:
            raise ValueError(f"`table` must hold every factor; missing {missing}")
        return torch.stack([torch.as_tensor(table[n], dtype=torch.float32) for n in FACTOR_NAMES], 1)

    def render(self, factors: Tensor) -> Tensor:
        """Draw faces from a factor table; a pure, vectorised function (same row, same pixels).

        Binary factors are read as ``> 0.5``; continuous ones are clamped to ``[0, 1]``.

        Args:
            factors: ``(N, 9)`` table with columns :attr:`factor_names`.

        Returns:
            ``(N, 3, S, S)`` float32 images in ``[0, 1]`` on ``factors.device``.
        """
        self._check_factors(factors)
        return render_in_chunks(self._render, factors, self.image_shape, _CHUNK)

    def _render(self, factors: Tensor) -> Tensor:
        f = factors.float().clamp(0, 1)
        n, s, dev = f.shape[0], self.image_size, f.device
        c = {name: f[:, i, None, None, None] for i, name in enumerate(FACTOR_NAMES)}
        on = {name: c[name] > 0.5 for name in BINARY}
        pix = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) * (32.0 / s)
        u, v = pix[None, None, None, :], pix[None, None, :, None]
        # background: hue from `background`, saturation 0.45, value 0.85 (HSV -> RGB, vectorised)
        h = f[:, 8, None] * 6.0  # (N, 1)
        k = (torch.tensor([5.0, 3.0, 1.0], device=dev)[None] + h) % 6.0
        bg = 0.85 - 0.85 * 0.45 * torch.minimum(k, 4 - k).clamp(0, 1)  # (N, 3)
        light, dark = torch.tensor(_SKIN_LIGHT, device=dev), torch.tensor(_SKIN_DARK, device=dev)
        skin = light + (dark - light) * f[:, 6, None]
        grey = f[:, 1, None] > 0.5
        hair = torch.where(grey, torch.tensor(_HAIR_GREY, device=dev), torch.tensor(_HAIR_BROWN, device=dev))
        wrinkle = skin * (1 - 0.75 * f[:, 0, None])
        const = torch.tensor((_INK, _MOUTH, _HAT), device=dev).expand(n, 3, 3)
        # palette (N, 3 channels, 7 labels): background, hair, skin, wrinkle, ink, mouth, hat
        palette = torch.cat([torch.stack([bg, hair, skin, wrinkle], 1), const], 1).transpose(1, 2).contiguous()

        # label map (uint8; masks combine the small per-row/per-column conditions first)
        lab = torch.zeros(n, 1, s, s, dtype=torch.uint8, device=dev)
        cx, cy = 16.0, 18.0
        r = 8.0 + 3.0 * c["face_size"]
        hair_d2 = torch.where(v < cy - 1, (u - cx) ** 2 + (v - cy + 1) ** 2, torch.inf)  # static grid
        lab.masked_fill_(hair_d2 < (r + 2) ** 2, 1)
        lab.masked_fill_(((u - cx) ** 2 + (v - cy) ** 2) < r**2, 2)
        # age: two vertical wrinkles on the cheeks
        for side in (-1.0, 1.0):
            lab.masked_fill_(((u - (cx + side * 0.72 * r)).abs() < 0.5) & ((v > cy + 0.3 * r) & (v < cy + 0.65 * r)), 3)
        # eyes (open disks or closed lines) and glasses
        ey = cy - 0.1 * r
        ex_off = 0.42 * r + 0.5
        for side in (-1.0, 1.0):
            ex = cx + side * ex_off
            de2 = (u - ex) ** 2 + (v - ey) ** 2
            closed_eye = ((v - ey).abs() < 0.5) & ((u - ex).abs() < 2.0)
            lab.masked_fill_(torch.where(on["eyes_open"], de2 < 1.6**2, closed_eye), 4)
            lab.masked_fill_((de2 > 2.2**2) & (de2 < 3.2**2) & on["eyeglasses"], 4)
        lab.masked_fill_((((v - ey).abs() < 0.5) & on["eyeglasses"]) & ((u - cx).abs() < ex_off - 2.7), 4)
        # mouth: a curve with corners up (smile) or a straight line
        my, w = cy + 0.5 * r, 0.32 * r
        du = (u - cx) / w
        curve = my + on["smile"].float() * (2.0 * (1 - du**2) - 1.0)
        lab.masked_fill_(((v - curve).abs() < 0.75) & (du.abs() < 1), 5)
        # hat: crown block and brim, hiding the top of the hair
        top = cy - 0.55 * r
        rows = on["hat"] & (v < top)
        crown = (rows & (v > cy - r - 5)) & ((u - cx).abs() < r + 1)
        brim = (rows & (v > top - 1.5)) & ((u - cx).abs() < r + 4)
        lab.masked_fill_(crown | brim, 6)
        idx = lab.view(n, 1, s * s).long().expand(n, 3, s * s)
        img = torch.gather(palette, 2, idx).view(n, 3, s, s)
        return img

    def measure(self, images: Tensor) -> dict[str, Tensor]:
        """Analytic readings of the factors whose value sits at a known pixel.

        - ``background``: hue of the top-left corner pixel (never covered by the face);
        - ``hat``: whether the pixel above the crown centre is hat red.

        Returns ``{name: (N,) tensor}``. On rendered images both are exact (hue up to float rounding).
        Other factors need the attribute oracle (``load_pretrained("world-oracle")``).
        """
        s = self.image_size
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"`images` must be (N, 3, {s}, {s}); got {got}")
        p = images[:, :, 0, 0].float()
        mx, mn = p.max(1).values, p.min(1).values
        delta = (mx - mn).clamp(min=1e-6)
        r, g, b = p.unbind(1)
        hue = torch.where(mx == r, ((g - b) / delta) % 6,
                          torch.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4))
        q = images[:, :, int(5.5 * s / 32), s // 2].float()
        hat = ((q - torch.tensor(_HAT, device=q.device)).abs().max(1).values < 0.15).float()
        return {"background": (hue / 6.0) % 1.0, "hat": hat}
