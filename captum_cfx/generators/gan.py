"""A GAN as a latent space: ``decode`` is the generator, ``encode`` is batched optimisation-based inversion."""

from __future__ import annotations

import copy
import logging
import math
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from captum_cfx._config import Config, Interval, Options, Satisfies
from captum_cfx._search import ActiveSet, Step
from captum_cfx._utils import eval_mode
from captum_cfx._validation import check_positive
from captum_cfx.generators.base import Latent, LatentGenerator
from captum_cfx.optim import LatentAdam

__all__ = ["GANGenerator", "GANInversionConfig", "ProjectionOutput"]

logger = logging.getLogger(__name__)

@dataclass(kw_only=True)
class ProjectionOutput:
    """Result of :meth:`GANGenerator.project`, one row per kept image.

    Attributes:
        latent: the projected latents; ``fixed`` holds the noise inputs (if any), ``diagnostics``
            ``projection_error`` (float ``(N,)``) and ``projection_ok`` (bool ``(N,)``).
        projections: ``decode(latent)``, ``(N, C, H, W)``.
        error: per-sample pixel mean squared error between the image and its projection, ``(N,)``.
        ok: bool ``(N,)``: ``error <= error_threshold`` (all True without a threshold).
        n_steps: int ``(N,)``: optimisation steps each image took before it converged or hit ``steps``.
        kept: long ``(N,)``: indices into the inputs of the returned rows (all of them unless
            ``drop=True``).
        start_error: per-sample pixel MSE of the best random start, before optimisation, ``(N,)``.
    """

    latent: Latent
    projections: Tensor
    error: Tensor
    ok: Tensor
    n_steps: Tensor
    kept: Tensor
    start_error: Tensor

    def __len__(self) -> int:
        return self.projections.shape[0]


def _call_split(generator: nn.Module) -> tuple[Callable | None, Callable]:
    """StyleGAN convention: ``generator.mapping`` and ``generator.synthesis``."""
    mapping, synthesis = getattr(generator, "mapping", None), getattr(generator, "synthesis", None)
    if callable(mapping) and callable(synthesis):
        return mapping, synthesis
    return None, generator


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _foldable_pairs(module: nn.Module) -> Iterator[tuple[nn.Sequential, int]]:
    """``(container, i)`` for each eval-mode batch norm at ``container[i + 1]`` that directly follows a
    convolution, transposed convolution (one group) or linear layer ``container[i]`` of matching width
    in an ``nn.Sequential``."""
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        mods = list(seq)
        for i in range(len(mods) - 1):
            a, b = mods[i], mods[i + 1]
            if not isinstance(b, nn.modules.batchnorm._BatchNorm) or b.training or b.running_mean is None:
                continue
            width = (a.out_channels if isinstance(a, _CONV + _CONV_T) else
                     a.out_features if isinstance(a, nn.Linear) else None)
            if width != b.num_features or a.training or (isinstance(a, _CONV_T) and a.groups != 1):
                continue
            yield seq, i


def _has_hooks(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or getattr(m, "_backward_pre_hooks", None) for m in module.modules())


def _fused_copy(module: nn.Module, channels_last: bool) -> nn.Module | None:
    """An eval-mode copy of ``module`` with its batch norms folded into the preceding layers (see
    :func:`_foldable_pairs`) and, with ``channels_last``, its 4-d weights in channels-last memory format;
    frozen (no parameter requires grad). ``None`` if there is nothing to fold, the module has hooks
    (a copy would not run them) or cannot be copied. The copy computes the same function up to float
    rounding."""
    if _has_hooks(module) or next(_foldable_pairs(module), None) is None:
        return None
    try:
        fused = copy.deepcopy(module)
    except Exception as e:  # a module that cannot be copied is used as it is
        logger.debug("not fusing %s: %s", type(module).__name__, e)
        return None
    for seq, i in list(_foldable_pairs(fused)):
        a, b = seq[i], seq[i + 1]
        if isinstance(a, nn.Linear):
            seq[i] = fuse_linear_bn_eval(a, b)
        else:
            seq[i] = fuse_conv_bn_eval(a, b, transpose=isinstance(a, _CONV_T))
        seq[i + 1] = nn.Identity()
    fused.requires_grad_(False)
    if channels_last and any(isinstance(m, nn.Conv2d) for m in fused.modules()):
        fused = fused.to(memory_format=torch.channels_last)
    return fused


def _fingerprint(modules: list[nn.Module]) -> tuple:
    """Changes whenever a parameter or buffer of ``modules`` is replaced, moved or modified in place."""
    return tuple((id(t), t.data_ptr(), t._version) for m in modules for t in (*m.parameters(), *m.buffers()))


def _channels_last_input(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``fn`` on its 4-d input laid out channels-last (for a network whose weights are)."""

    def run(x: Tensor) -> Tensor:
        return fn(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)

    return run


@dataclass
class _Nets:
    """The callables one inversion runs: ``synthesis(w, **noise)`` and ``features(images)`` (or ``None``)."""

    synthesis: Callable
    features: Callable[[Tensor], Tensor] | None


@dataclass(frozen=True, kw_only=True)
class GANInversionConfig(Config):
    """The settings of :meth:`GANGenerator.project` (batched optimisation-based inversion), validated once;
    the fields mean what :class:`GANGenerator`'s arguments of the same names mean, and the defaults are its
    defaults."""

    feature_weight: float = 0.3
    pixel_weight: float = 1.0
    num_starts: int = 16
    steps: int = 150
    lr: float = 0.1
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    truncation: float = 0.7
    tol: float = 1e-3
    patience: int = 25
    error_threshold: float | None = None
    n_mean_samples: int = 4096
    seed: int = 0
    fuse: bool = True
    chunk_size: int | None = None

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "feature_weight": [Interval(float, 0, None)],
        "pixel_weight": [Interval(float, 0, None)],
        "num_starts": [Interval(int, 0, None, low_open=True)],
        "steps": [Interval(int, 0, None)],
        "lr": [Interval(float, 0, None, low_open=True)],
        "optimizer": [Options("adam", "adamw")],
        "weight_decay": [Interval(float, 0, None)],
        "lr_schedule": [Options("cosine", "constant")],
        "truncation": [Interval(float, 0, None)],
        "tol": [Interval(float, 0, None)],
        "patience": [Interval(int, 0, None, low_open=True)],
        "error_threshold": [Interval(float, 0, None, low_open=True), None],
        "n_mean_samples": [Interval(int, 0, None, low_open=True)],
        "seed": [Satisfies(int, "an int")],
        "fuse": [Satisfies(bool, "a bool")],
        "chunk_size": [Interval(int, 0, None, low_open=True), None],
    }


_INVERSION = GANInversionConfig()


class GANGenerator(LatentGenerator):
    """Wrap a GAN generator ``G(z)`` (optionally with a mapping network ``z -> w``) as a latent space.

    ``decode`` is the generator. ``encode`` projects images into its latent by optimisation, in batches,
    as Goldwasser & Hooker (2025, seed 000) did for a StyleGAN3 with no encoder: the best of
    ``num_starts`` random starts, then Adam (or AdamW) on the latent minimising a reconstruction loss,
    ``pixel_weight`` times the pixel mean squared error plus ``feature_weight`` times the mean squared
    distance of features from a feature network. Each sample stops on its own once its loss has not
    improved by a relative ``tol`` for ``patience`` steps, and keeps the best latent it visited.

    The latent is either ``z`` (the prior, ``N(0, I)``) or ``w``, the output of the mapping network
    (StyleGAN's W space, which Alipour et al. 2022 (seed 001) search). In W space the random starts are
    ``w_mean + truncation * (mapping(z) - w_mean)``, with ``w_mean`` estimated from ``n_mean_samples``
    mapped draws at construction.

    Every encoded latent reports, in its ``diagnostics``, ``projection_error`` (pixel MSE of the projection)
    and ``projection_ok`` (``error <= error_threshold``): a counterfactual built on a failed projection
    explains the projection, not the image. :meth:`project` returns the same with diagnostics and can
    drop the failures.

    How ours differs from the reference: the reference projects one image at a time with AdamW for a
    fixed ~500 steps on LPIPS; we project a batch with per-sample early stopping and per-sample optimiser
    state, and the perceptual term uses a domain feature network (LPIPS needs downloaded weights). The
    reference remains an option: ``optimizer="adamw"``, ``tol=0`` (no early stop), ``steps=500``,
    ``pixel_weight=0`` and an LPIPS ``feature_network`` (LPIPS is a squared distance between scaled,
    channel-normalised VGG features, so it is the mean squared distance of those features up to a
    constant factor, which ``feature_weight`` absorbs; ``docs/gan.md`` shows one). AdamW's decay here
    pulls towards the centre of the prior (``w_mean``).

    Args:
        generator: the GAN generator, a module. If ``mapping`` is ``None`` and the module has callable
            ``mapping`` and ``synthesis`` attributes (the StyleGAN convention), those are used.
        mapping: optional mapping network ``z -> w``; then ``generator`` maps ``w`` to images.
        latent_space: ``"z"`` or ``"w"`` (default ``"w"`` when there is a mapping network, else ``"z"``).
        z_dim: size of ``z`` (default: ``generator.z_dim``, required otherwise).
        noise_shapes: per-layer noise inputs, ``{keyword: per-sample shape}``; the synthesis network is
            called as ``synthesis(w, **noise)``. Noise is drawn once per image at encode time and kept
            in the latent's fixed part (zeros when decoding a bare tensor).
        input_range: value range of the generator's images.
        image_shape: ``(C, H, W)``; when given, a probe decode checks it and the latent size.
        feature_network: callable ``images -> features`` for the perceptual term; ``None`` (default) for
            pixel loss only. The zoo's ``mnist-gan`` preset passes the shipped ``mnist-oracle``'s
            penultimate layer.
        feature_weight: weight of the feature distance (the mnist-oracle features' mean squared distances
            are on the scale of pixel ones; 0.3 gave the best class preservation on the shipped GAN).
        pixel_weight: weight of the pixel mean squared error in the loss (0 with a feature network: a
            purely perceptual loss, as the reference's LPIPS). The reported ``projection_error`` is the
            pixel MSE whatever the weights.
        num_starts: K, random starts per image; the best (lowest loss) one is optimised.
        steps: maximum optimisation steps.
        lr: Adam step size, in latent units (standardised W by default).
        optimizer: ``"adam"`` or ``"adamw"``.
        weight_decay: AdamW's decoupled decay (only with ``"adamw"``).
        lr_schedule: ``"cosine"`` (default) decays the step size from ``lr`` to 0 over ``steps``, as
            StyleGAN's projector ramps it down; ``"constant"`` keeps it.
        truncation: in W space, how far the starts lie from ``w_mean`` (1 = untruncated samples).
        tol, patience: per-sample early stop: stop after ``patience`` steps without a relative
            improvement of the best loss by more than ``tol`` (``tol=0`` never stops early).
        error_threshold: pixel MSE above which a projection is flagged as failed (``None``: never).
        n_mean_samples: mapped draws used to estimate ``w_mean`` and ``w_std``.
        normalize: in W space, the free latent is ``(w - w_mean) / w_std`` per dimension (default), so that
            step sizes mean the same as in a VAE's ``N(0, I)`` latent and the attack's defaults apply;
            ``False`` exposes raw ``w`` (then scale ``lr`` to W's spread). :meth:`to_w` gives raw ``w``.
        seed: seed of the ``torch.Generator`` used when :meth:`encode` gets none (so encoding is
            deterministic by default).
        fuse: invert with copies of the synthesis and feature networks in which every eval-mode batch
            norm that follows a convolution or linear layer in an ``nn.Sequential`` is folded into it, and
            (on CPU) the feature network runs channels-last. The same functions up to float rounding,
            about 1.3x faster on CPU for the shipped networks. The copies are cached and rebuilt when a
            parameter or buffer changes; networks with hooks, or nothing to fold, are used as they are.
            ``decode`` and the reported errors always use the networks as they are.
        chunk_size: images per forward/backward pass during inversion (per-sample losses, so the
            results do not depend on it). ``None``: 64 on CPU, where cache-sized batches run fastest,
            and all at once on other devices.

    Shape:
        - encode: ``(N, C, H, W)`` in ``input_range`` -> ``Latent(free=(N, z_dim or w_dim))``
        - decode: ``Latent`` or ``(N, d)`` -> ``(N, C, H, W)``

    Examples::

        >>> import torch
        >>> from torch import nn
        >>> G = nn.Sequential(nn.Linear(4, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
        >>> gan = GANGenerator(G, z_dim=4, image_shape=(1, 4, 4), feature_network=None, steps=20)
        >>> lat = gan.encode(torch.rand(3, 1, 4, 4))
        >>> lat.free.shape, lat.diagnostics["projection_error"].shape
        (torch.Size([3, 4]), torch.Size([3]))
    """

    def __init__(
        self,
        generator: nn.Module,
        mapping: nn.Module | None = None,
        *,
        latent_space: str | None = None,
        z_dim: int | None = None,
        noise_shapes: Mapping[str, tuple[int, ...]] | None = None,
        input_range: tuple[float, float] | None = (0.0, 1.0),
        image_shape: tuple[int, int, int] | None = None,
        feature_network: Callable[[Tensor], Tensor] | None = None,
        feature_weight: float = _INVERSION.feature_weight,
        pixel_weight: float = _INVERSION.pixel_weight,
        num_starts: int = _INVERSION.num_starts,
        steps: int = _INVERSION.steps,
        lr: float = _INVERSION.lr,
        optimizer: str = _INVERSION.optimizer,
        weight_decay: float = _INVERSION.weight_decay,
        lr_schedule: str = _INVERSION.lr_schedule,
        truncation: float = _INVERSION.truncation,
        tol: float = _INVERSION.tol,
        patience: int = _INVERSION.patience,
        error_threshold: float | None = _INVERSION.error_threshold,
        n_mean_samples: int = _INVERSION.n_mean_samples,
        normalize: bool = True,
        seed: int = _INVERSION.seed,
        fuse: bool = _INVERSION.fuse,
        chunk_size: int | None = _INVERSION.chunk_size,
    ) -> None:
        super().__init__(input_range, image_shape)
        if not callable(generator):
            raise TypeError(f"`generator` must be a callable module G(z); got {type(generator).__name__}")
        if mapping is not None and not callable(mapping):
            raise TypeError(f"`mapping` must be a callable module z -> w or None; got {type(mapping).__name__}")
        if mapping is None:
            mapping, synthesis = _call_split(generator)
        else:
            synthesis = generator
        self.generator = generator
        self.mapping_fn, self.synthesis_fn = mapping, synthesis  # modules among them are registered
        if latent_space is None:
            latent_space = "w" if mapping is not None else "z"
        if latent_space not in ("z", "w"):
            raise ValueError(f"`latent_space` must be 'z' or 'w'; got {latent_space!r}")
        if latent_space == "w" and mapping is None:
            raise ValueError("`latent_space='w'` needs a mapping network: pass `mapping` or a generator with "
                             "`mapping` and `synthesis` attributes")
        self.latent_space = latent_space
        z_dim = z_dim if z_dim is not None else getattr(generator, "z_dim", None)
        if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim <= 0:
            raise ValueError(f"`z_dim` must be a positive int (or `generator.z_dim` must exist); got {z_dim!r}")
        self.z_dim = z_dim
        self.noise_shapes = {str(k): tuple(int(s) for s in v) for k, v in (noise_shapes or {}).items()}
        #: the inversion settings as given, validated (:class:`GANInversionConfig`)
        self.inversion_config = cfg = GANInversionConfig(
            feature_weight=feature_weight, pixel_weight=pixel_weight, num_starts=num_starts, steps=steps, lr=lr,
            optimizer=optimizer, weight_decay=weight_decay, lr_schedule=lr_schedule, truncation=truncation, tol=tol,
            patience=patience, error_threshold=error_threshold, n_mean_samples=n_mean_samples, seed=seed, fuse=fuse,
            chunk_size=chunk_size)
        if not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be a bool; got {type(normalize).__name__}")
        self.lr_schedule = lr_schedule
        self.feature_weight, self.num_starts, self.steps, self.lr = float(feature_weight), num_starts, steps, lr
        self.optimizer, self.weight_decay, self.truncation = optimizer, float(weight_decay), float(truncation)
        self.tol, self.patience, self.error_threshold, self.seed = float(tol), patience, error_threshold, seed
        self.fuse, self.chunk_size = cfg.fuse, cfg.chunk_size
        self._fused_cache: tuple[tuple, _Nets] | None = None
        self.normalize = normalize and latent_space == "w"

        self.feature_network = self._resolve_features(feature_network)
        self.pixel_weight = float(pixel_weight)
        if self.pixel_weight == 0 and (self.feature_network is None or self.feature_weight == 0):
            raise ValueError("`pixel_weight=0` needs a feature term (a `feature_network` and `feature_weight` > 0): "
                             "otherwise the loss is zero")
        # the latent size: z_dim, or the mapping's output size (probed)
        with torch.no_grad(), eval_mode(self):
            z = torch.zeros(2, z_dim, device=self.device, dtype=self.dtype)
            try:
                w = self.mapping_fn(z) if self.mapping_fn is not None else z
            except RuntimeError as e:
                raise ValueError(f"`mapping` does not accept latents of size z_dim={z_dim} ({e})") from e
            if not isinstance(w, Tensor) or w.shape[0] != 2:
                raise ValueError(f"`mapping` must map (N, {z_dim}) to (N, w_dim); got "
                                 f"{getattr(w, 'shape', type(w).__name__)}")
            self.latent_shape = tuple(z.shape[1:]) if latent_space == "z" else tuple(w.shape[1:])
            try:
                img = self._synthesize(w, self._zero_noise(2, w))
            except RuntimeError as e:
                who = "generator" if self.mapping_fn is None else "synthesis network"
                raise ValueError(f"the {who} does not accept latents of the declared size "
                                 f"{tuple(w.shape[1:])} (z_dim={z_dim}): {e}") from e
            if image_shape is not None and tuple(img.shape[1:]) != tuple(image_shape):
                raise ValueError(f"`generator` makes images of shape {tuple(img.shape[1:])}, "
                                 f"but `image_shape` is {tuple(image_shape)}")
            if self.mapping_fn is not None:
                g = torch.Generator(device=self.device).manual_seed(seed)
                zs = torch.randn(n_mean_samples, z_dim, generator=g, device=self.device, dtype=self.dtype)
                ws = torch.cat([self.mapping_fn(c) for c in zs.split(1024)])
                w_mean, w_std = ws.mean(0), ws.std(0).clamp_min(1e-6)
        if latent_space == "z":
            w_mean = torch.zeros(self.latent_shape, device=self.device, dtype=self.dtype)
            w_std = torch.ones_like(w_mean)
        self.register_buffer("w_mean", w_mean)
        self.register_buffer("w_std", w_std)

    # ------------------------------------------------------------------ pieces
    def _resolve_features(self, feature_network: Any) -> Callable[[Tensor], Tensor] | None:
        if feature_network is None:
            return None
        if not callable(feature_network):
            raise TypeError(f"`feature_network` must be callable or None; got {type(feature_network).__name__}")
        if isinstance(feature_network, nn.Module):
            self._feature_module = feature_network
        return feature_network

    def _zero_noise(self, n: int, like: Tensor) -> dict[str, Tensor]:
        return {k: torch.zeros(n, *s, device=like.device, dtype=like.dtype) for k, s in self.noise_shapes.items()}

    def _synthesize(self, w: Tensor, noise: Mapping[str, Tensor]) -> Tensor:
        out = self.synthesis_fn(w, **noise) if noise else self.synthesis_fn(w)
        if not isinstance(out, Tensor):
            raise TypeError(f"the generator must return a tensor of images; got {type(out).__name__}")
        return out

    def to_w(self, latent: Latent | Tensor) -> Tensor:
        """The raw ``w`` (or ``z``) of a latent, undoing the per-dimension standardisation of W."""
        free = self._as_latent(latent).free
        return self.w_mean + self.w_std * free if self.normalize else free

    def _render(self, free: Tensor, noise: Mapping[str, Tensor], nets: _Nets | None = None) -> Tensor:
        if self.normalize:
            free = self.w_mean + self.w_std * free
        if self.latent_space == "z" and self.mapping_fn is not None:
            free = self.mapping_fn(free)
        if nets is None or nets.synthesis is self.synthesis_fn:
            return self._synthesize(free, noise)
        return nets.synthesis(free, **noise) if noise else nets.synthesis(free)

    def _nets(self, device: torch.device) -> _Nets:
        """The networks :meth:`project` runs: with ``fuse``, cached fused copies (see ``fuse``)."""
        plain = _Nets(self.synthesis_fn, self.feature_network)
        if not self.fuse:
            return plain
        owners = []
        for fn in (self.synthesis_fn, self.feature_network):
            owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
            owners.append(owner if isinstance(owner, nn.Module) else None)
        key = (_fingerprint([m for m in owners if m is not None]), device.type,
               tuple(m.training for o in owners if o is not None for m in o.modules()),
               tuple(_has_hooks(o) for o in owners if o is not None))  # a hook added later: use the original
        if self._fused_cache is not None and self._fused_cache[0] == key:
            return self._fused_cache[1]
        fns: list[Callable | None] = []
        for fn, owner, cl in ((self.synthesis_fn, owners[0], False),
                              (self.feature_network, owners[1], device.type == "cpu")):
            fused = _fused_copy(owner, channels_last=cl) if owner is not None else None
            if fused is None:
                fns.append(fn)
                continue
            bound = fused if isinstance(fn, nn.Module) else types.MethodType(fn.__func__, fused)  # type: ignore[union-attr]
            fns.append(_channels_last_input(bound) if cl else bound)
        nets = _Nets(fns[0], fns[1])  # type: ignore[arg-type]
        self._fused_cache = (key, nets)
        return nets

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave out the cached fused networks (the next projection rebuilds them)."""
        state = self.__dict__.copy()
        state["_fused_cache"] = None
        return state

    def _chunk(self, device: torch.device) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return 64 if device.type == "cpu" else 1 << 62

    def decode(self, latent: Latent | Tensor) -> Tensor:
        lat = self._as_latent(latent)
        if lat.free.shape[1:] != self.latent_shape:
            raise ValueError(f"`latent` must have shape (N, {', '.join(map(str, self.latent_shape))}); "
                             f"got {tuple(lat.free.shape)}")
        noise = {k: lat.fixed[k] if k in lat.fixed else torch.zeros(len(lat), *s, device=lat.free.device,
                                                                     dtype=lat.free.dtype)
                 for k, s in self.noise_shapes.items()}
        return self._render(lat.free, noise)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Latent:
        """``n`` random latents: ``z ~ N(0, I)``, or ``w = w_mean + truncation * (mapping(z) - w_mean)``
        (standardised with ``normalize``)."""
        check_positive(n, "n", integer=True)
        dev = generator.device if generator is not None else self.device
        z = torch.randn(n, self.z_dim, generator=generator, device=dev, dtype=self.dtype).to(self.device)
        noise = {k: torch.randn(n, *s, generator=generator, device=dev, dtype=self.dtype).to(self.device)
                 for k, s in self.noise_shapes.items()}
        if self.latent_space == "w":
            with torch.no_grad():
                z = self.truncation * (self.mapping_fn(z) - self.w_mean)
                z = z / self.w_std if self.normalize else z + self.w_mean
        return Latent(z, noise)

    def _loss(self, img: Tensor, x: Tensor, fx: Tensor | None, nets: _Nets) -> Tensor:
        loss = (img - x).flatten(1).pow(2).mean(1)
        if self.pixel_weight != 1.0:
            loss = self.pixel_weight * loss
        if fx is not None and nets.features is not None and self.feature_weight > 0:
            loss = loss + self.feature_weight * (nets.features(img) - fx).flatten(1).pow(2).mean(1)
        return loss

    def _features(self, x: Tensor, nets: _Nets) -> Tensor | None:
        if nets.features is None or self.feature_weight == 0:
            return None
        with torch.no_grad():
            return torch.cat([nets.features(c) for c in x.split(min(512, 4 * self._chunk(x.device)))])

    # ------------------------------------------------------------------ inversion
    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Latent:
        """Project images into the latent (see :meth:`project`); failures are flagged, not dropped."""
        return self.project(x, generator=generator).latent

    def project(self, x: Tensor, generator: torch.Generator | None = None, drop: bool = False) -> ProjectionOutput:
        """Batched optimisation-based inversion with per-sample early stopping.

        Args:
            x: images ``(N, C, H, W)`` in ``input_range``.
            generator: a ``torch.Generator`` for the random starts and noise inputs (default: one
                seeded with ``seed``, so that repeated calls agree).
            drop: return only the images whose projection error is at most ``error_threshold``.

        Returns:
            :class:`ProjectionOutput`.
        """
        x = self.check_images(x, "x")
        if not isinstance(drop, bool):
            raise TypeError(f"`drop` must be a bool; got {type(drop).__name__}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None; got {type(generator).__name__}")
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(self.seed)
        x = x.to(self.dtype)
        n = x.shape[0]
        with eval_mode(self), torch.enable_grad():
            nets = self._nets(x.device)
            fx = self._features(x, nets)
            free, noise, start_err = self._best_start(x, fx, generator, nets)
            free, n_steps = self._optimise(x, fx, free, noise, nets)
            c = self._chunk(x.device)
            with torch.no_grad():  # the report uses the networks as they are, as decode does
                proj = torch.cat([self._render(free[i : i + c], {k: v[i : i + c] for k, v in noise.items()})
                                  for i in range(0, n, c)])
        err = (proj - x).flatten(1).pow(2).mean(1)
        ok = err <= self.error_threshold if self.error_threshold is not None else torch.ones_like(err, dtype=torch.bool)
        latent = Latent(free, noise, {"projection_error": err, "projection_ok": ok})
        kept = torch.arange(n, device=x.device)
        if drop:
            kept = kept[ok]
        out = ProjectionOutput(latent=latent[kept], projections=proj[kept], error=err[kept], ok=ok[kept],
                               n_steps=n_steps[kept], kept=kept, start_error=start_err[kept])
        if not bool(ok.all()):
            logger.info("%d of %d projections exceed error_threshold=%s", int((~ok).sum()), n, self.error_threshold)
        return out

    @torch.no_grad()
    def _best_start(self, x: Tensor, fx: Tensor | None, g: torch.Generator,
                    nets: _Nets) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        n, k = x.shape[0], self.num_starts
        cand = self.sample(n * k, generator=g)  # row i*k + j: start j of image i
        noise = {name: v.view(n, k, *v.shape[1:])[:, 0] for name, v in cand.fixed.items()}
        losses, errs = [], []
        chunk = max(1, min(2048, 2 * self._chunk(x.device)) // k)  # images per pass: up to 2 chunks of rows
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            rows = slice(lo * k, hi * k)
            nz = {name: v[lo:hi].repeat_interleave(k, 0) for name, v in noise.items()}
            img = self._render(cand.free[rows], nz, nets)
            xr = x[lo:hi].repeat_interleave(k, 0)
            fr = fx[lo:hi].repeat_interleave(k, 0) if fx is not None else None
            losses.append(self._loss(img, xr, fr, nets).view(-1, k))
            errs.append((img - xr).flatten(1).pow(2).mean(1).view(-1, k))
        loss, err = torch.cat(losses), torch.cat(errs)
        best = loss.argmin(1)
        free = cand.free.view(n, k, *cand.free.shape[1:])[torch.arange(n, device=x.device), best]
        return free.clone(), noise, err.gather(1, best[:, None]).squeeze(1)

    def _loss_grad(self, z: Tensor, rows: Tensor, x: Tensor, fx: Tensor | None, noise: dict[str, Tensor],
                   nets: _Nets) -> tuple[Tensor, Tensor]:
        """Per-sample losses of latents ``z`` for images ``rows`` and their gradients, ``chunk_size``
        images at a time (the losses are per sample, so chunking changes nothing but speed)."""
        c = self._chunk(z.device)
        losses, grads = [], []
        for zc, rc in zip(z.split(c), rows.split(c)):
            zr = zc.detach().requires_grad_(True)
            img = self._render(zr, {k: v[rc] for k, v in noise.items()}, nets)
            loss = self._loss(img, x[rc], fx[rc] if fx is not None else None, nets)
            (grad,) = torch.autograd.grad(loss.sum(), zr)
            losses.append(loss.detach())
            grads.append(grad)
        return torch.cat(losses), torch.cat(grads)

    def _optimise(self, x: Tensor, fx: Tensor | None, free: Tensor, noise: dict[str, Tensor],
                  nets: _Nets) -> tuple[Tensor, Tensor]:
        """Adam from ``free`` on the reconstruction loss, each sample stopping after ``patience`` steps
        without a relative improvement of ``tol`` and keeping the best latent it visited: ``(best latents,
        steps taken)``."""
        n = x.shape[0]
        opt = LatentAdam(self.lr)
        z = free.detach().clone()
        a = ActiveSet(n, x.device, vars={"z": z, "best": torch.full((n,), math.inf, device=x.device, dtype=x.dtype),
                                         "since": torch.zeros(n, dtype=torch.long, device=x.device)},
                      results={"z": z.clone()}, state=opt.init_state(free))
        a.run(lambda a, last: self._inversion_step(a, last, x, fx, noise, nets),
              lambda a, grad: self._inversion_update(a, grad, opt), self.steps)
        return a.results["z"].detach(), a.n_steps

    def _inversion_step(self, a: ActiveSet, last: bool, x: Tensor, fx: Tensor | None, noise: dict[str, Tensor],
                        nets: _Nets) -> Step:
        """The active samples' losses (and gradients): keep each sample's best latent, count the steps since
        it last improved by ``tol``; a sample is done after ``patience`` such steps."""
        v = a.vars
        if last:  # the last step's result, evaluated without gradients
            with torch.no_grad():
                c = self._chunk(x.device)
                loss = torch.cat([
                    self._loss(self._render(zc, {k: t[rc] for k, t in noise.items()}, nets), x[rc],
                               fx[rc] if fx is not None else None, nets)
                    for zc, rc in zip(v["z"].split(c), a.index.split(c))])
            grad = None
        else:
            loss, grad = self._loss_grad(v["z"], a.index, x, fx, noise, nets)
        better = loss < v["best"]
        a.write(better, z=v["z"])
        improved = loss < v["best"] * (1 - self.tol)
        v["best"] = torch.where(better, loss, v["best"])
        v["since"] = torch.where(improved, torch.zeros_like(v["since"]), v["since"] + 1)
        done = v["since"] >= self.patience if self.tol > 0 else torch.zeros_like(improved)
        return Step(done=done, finite=torch.isfinite(loss), grad=grad)

    def _inversion_update(self, a: ActiveSet, grad: Tensor, opt: LatentAdam) -> None:
        """One Adam (or AdamW) step, with the cosine ramp-down of the step size."""
        if self.lr_schedule == "cosine":
            opt.lr = self.lr * 0.5 * (1 + math.cos(math.pi * (a.t - 1) / self.steps))
        z = opt.step(a.vars["z"], grad, a.state, t=a.steps)
        if self.optimizer == "adamw" and self.weight_decay > 0:
            center = self.w_mean if self.latent_space == "w" and not self.normalize else torch.zeros_like(self.w_mean)
            z = z - opt.lr * self.weight_decay * (z - center)
        a.vars["z"] = z
