"""Global Counterfactual Directions: one latent direction, found from one image, that flips a data set.

Sobieski & Biecek (2024) search a generative latent space *from a single source image* for directions
``d`` such that ``z - alpha * d`` flips a binary classifier's decision, not only for the source but for
most images of a data set ("globality"). Their black-box recipe, reproduced here as
``mode="proxy"``:

1. sample latents around the source code, ``z = z0 + r * u`` (``u`` uniform on the sphere,
   ``r ~ U(0, radius)``), render them with the source's fixed latent parts and query the classifier's
   logit and a perceptual distance to the source;
2. fit a small MLP **proxy** ``(z - z0) -> (logit, distance)``; repeat for several rounds, growing the
   data;
3. **g-directions**: the normalised proxy gradient of ``a * s * logit + b * distance`` at ``z0`` for
   ``(a, b)`` in ``{(1, 0), (0.05, 1)}`` (``s`` = +1 when the source is on the positive side);
   **h-directions**: the top eigenvectors of the proxy loss's Hessian at ``z0``, signed so that they
   decrease the loss;
4. a line search along each direction on the source image; the best one is kept.

How this implementation differs:

- **White-box mode** (``mode="white-box"``, the default): the same g- and h-directions from the
  *true* gradient and Hessian-vector products through decoder and classifier. No proxy, no sampling:
  about 300 renders instead of thousands on the shipped MNIST VAE.
- **Render accounting**: every decoded image counts as one render, and so does every gradient pass
  and Hessian-vector product (one per image of a batch): :attr:`renders_`.
- **Perceptual distance**: LPIPS downloads weights, so any callable ``distance(images, reference) -> (N,)``
  works; the generic default is :func:`pixel_distance` (mean squared pixel difference, any image size), and
  the zoo's ``mnist_distance()`` (mean squared distance in the features of the shipped, independent
  ``mnist-oracle``) is the MNIST preset that the benchmarks and ``compare`` use.
- **Sign convention**: stored directions point *towards* the counterfactual (they descend the loss),
  so they are applied as ``z + alpha * s_i * d`` with ``s_i = +1`` for images on the source's side of
  the decision and ``-1`` for the others (the paper writes ``z - alpha * d`` with the gradient itself).
- **Selection**: the best direction is the one that flips the source at the smallest ``alpha`` (ties:
  smaller perceptual distance); every direction's line-search scores are kept in :attr:`scores_`.
- h-directions come from Hessian-vector products only. Up to ``dense_max_dim`` (128) latent dimensions the
  Hessian is formed exactly from one HVP per dimension and its top eigenvectors are taken (the reference
  path, exact); above it a Lanczos eigen-solver (``eigensolver="lanczos"``) finds the top eigenvectors from
  ``hessian_steps`` HVPs per loss, every buffer linear in the latent size (an SD-VAE latent at 256x256 has
  4,096 dimensions, a DDIM latent 196,608). ``hvp="finite-difference"`` (automatic fallback) uses central
  differences of true gradients for models without a double backward (e.g. diffusers' attention on CPU).
- Every decode is chunked by ``internal_batch_size`` renders (line search, proxy samples, transfers).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_cfx._io import load_safetensors
from captum_cfx._utils import as_tuple, call_model, check_same_device, eval_mode, index_args
from captum_cfx._validation import check_fitted, check_positive, parse_target
from captum_cfx.attr._common import CaptumInputs, check_model_and_generator, iter_decoded
from captum_cfx.generators.base import Latent, LatentGenerator

__all__ = ["GlobalCounterfactualDirections", "GlobalityResult", "OracleFeatureDistance", "TransferOutput",
           "pixel_distance"]

DistanceFn = Callable[[Tensor, Tensor], Tensor]


def pixel_distance(images: Tensor, reference: Tensor) -> Tensor:
    """The generic default distance: per-image mean squared pixel difference, ``(N,)``.

    Works for any image size; a perceptual distance (LPIPS with a network you pass, or
    :class:`OracleFeatureDistance` over a domain network such as the zoo's ``mnist_distance()``) follows
    semantic change more closely.
    """
    return (images - reference).pow(2).flatten(1).mean(1)


def _flatten(images: Tensor) -> Tensor:
    return images.flatten(1)


class OracleFeatureDistance(nn.Module):
    """Mean squared distance between images in a feature space (e.g. the penultimate layer of an oracle).

    A shippable stand-in for LPIPS: ``d(x, ref) = mean_k (phi_k(x) - phi_k(ref))^2`` with ``phi`` the given
    feature network (the zoo's ``mnist_distance()`` uses the 128-d penultimate layer of ``mnist-oracle``).
    Squared, so it is smooth at ``x = ref``.

    Args:
        features: a callable ``(N, C, H, W) -> (N, ...)``.
    """

    def __init__(self, features: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        if not callable(features):
            raise TypeError(f"`features` must be callable; got {type(features).__name__}")
        self.features = features

    def forward(self, images: Tensor, reference: Tensor) -> Tensor:
        if isinstance(self.features, nn.Module):  # the default network is built on the CPU: follow the images
            p = next(self.features.parameters(), None)
            if p is not None and p.device != images.device:
                self.features.to(images.device)
        fa = self.features(images).flatten(1)
        fr = self.features(reference).flatten(1)
        return (fa - fr).pow(2).mean(1)


@dataclass
class TransferOutput:
    """A fitted direction applied to new images (:meth:`GlobalCounterfactualDirections.transfer`).

    Attributes:
        counterfactuals: images at each input's smallest flipping alpha (the largest alpha if none
            flips), ``(N, C, H, W)``.
        reconstructions: ``decode(encode(x))``, ``(N, C, H, W)``.
        alphas: the alpha used per image, ``(N,)``.
        success: bool ``(N,)``: the decision flipped at some alpha of the grid.
        signs: ``(N,)`` +1 for images on the source's side of the decision, -1 for the others.
        original_classes / classes: the decision (class index) before and after, ``(N,)``.
        flips: bool ``(N, A)``: the decision at every alpha of the grid differs from the original.
        grid: the alphas tried, ``(A,)``.
        nonfinite: bool ``(N,)``: the model gave NaN/Inf for this image (its reconstruction or a step of the
            grid); it is counted as no success, and the other images are computed as without it.
    """

    counterfactuals: Tensor
    reconstructions: Tensor
    alphas: Tensor
    success: Tensor
    signs: Tensor
    original_classes: Tensor
    classes: Tensor
    flips: Tensor
    grid: Tensor
    nonfinite: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))


@dataclass
class GlobalityResult:
    """Flip rate of one direction over a data set, per alpha (:meth:`GlobalCounterfactualDirections.globality`).

    Attributes:
        alphas: ``(A,)``; flip_rate: ``(A,)`` fraction of images whose decision flipped at that alpha.
        flips: bool ``(N, A)``.
        oracle_agreement: ``(A,)`` among flips, the fraction whose oracle decision (same binary
            question) agrees with the new decision; ``None`` without an oracle.
        oracle_agreement_strict: ``(A,)`` among flips, the fraction whose oracle *argmax* is the new
            class (multi-class models only); ``None`` otherwise.
        label: a name for the plot legend.
    """

    alphas: Tensor
    flip_rate: Tensor
    flips: Tensor
    oracle_agreement: Tensor | None = None
    oracle_agreement_strict: Tensor | None = None
    label: str = "direction"
    extra: dict[str, Any] = field(default_factory=dict)

    def at(self, alpha: float) -> dict[str, float]:
        """Flip rate (and oracle agreement) at the grid alpha nearest to ``alpha``."""
        i = int((self.alphas - alpha).abs().argmin())
        out = {"alpha": float(self.alphas[i]), "flip_rate": float(self.flip_rate[i])}
        if self.oracle_agreement is not None:
            out["oracle_agreement"] = float(self.oracle_agreement[i])
        if self.oracle_agreement_strict is not None:
            out["oracle_agreement_strict"] = float(self.oracle_agreement_strict[i])
        return out

    def plot(self, ax: Any = None, others: Sequence[GlobalityResult] = (), vline: float | None = None) -> Any:
        """The globality curve (flip rate vs alpha), with optional other curves (e.g. random controls)."""
        import matplotlib.pyplot as plt

        fig = ax.figure if ax is not None else plt.figure(figsize=(4.2, 3.0))
        ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
        for res in (self, *others):
            ax.plot(res.alphas.cpu().numpy(), res.flip_rate.cpu().numpy(), label=f"{res.label}: flip rate")
        if self.oracle_agreement_strict is not None or self.oracle_agreement is not None:
            agree = self.oracle_agreement_strict if self.oracle_agreement_strict is not None else self.oracle_agreement
            ax.plot(self.alphas.cpu().numpy(), (agree * self.flip_rate).cpu().numpy(), "--",
                    label=f"{self.label}: flipped and oracle agrees")
        if vline is not None:
            ax.axvline(vline, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("alpha (latent step)")
        ax.set_ylabel("fraction of images")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        return fig


class GlobalCounterfactualDirections(PerturbationAttribution):
    r"""Global counterfactual directions in a generator's latent space, fitted on one source image.

    Ask a binary question of the model: ``score(x) = logit[pos](x) - logit[neg](x)`` with
    ``classes=(neg, pos)`` (or the single logit of a one-logit model with ``classes=None``); the
    decision is ``pos`` when ``score > 0``. :meth:`fit` finds directions that flip the source's
    decision; :meth:`transfer` and :meth:`globality` apply one to other images; :meth:`attribute`
    returns the pixel change it makes (``counterfactual - reconstruction``), shaped like the inputs.

    Reference: Sobieski & Biecek, *Global Counterfactual Directions* (ECCV 2024).

    Args:
        forward_func: the model; returns logits ``(N, K)`` (or ``(N,)``/``(N, 1)`` with ``classes=None``).
        generator: a :class:`~captum_cfx.generators.LatentGenerator` in the model's input range.
        classes: ``(negative, positive)`` class indices of the binary question, or ``None`` for a
            one-logit model.
        distance: ``distance(images, reference) -> (N,)`` perceptual distance; default
            :func:`pixel_distance` (mean squared pixel difference, any size). The zoo's
            ``mnist_distance()`` is the MNIST preset (features of the shipped ``mnist-oracle``).
        mode: ``"white-box"`` (true gradients and HVPs, default) or ``"proxy"`` (the paper's black box).
        loss_weights: the ``(a, b)`` pairs of the loss ``a * s * score + b * distance``.
        n_hessian: h-directions per loss (top Hessian eigenvectors); 0 for g-directions only.
        alpha_max: largest step of the line search; default ``1.5 * ||z0||`` of the source.
        n_alphas: points of the line-search grid ``alpha_max * (1..n_alphas) / n_alphas``.
        render_budget: proxy mode: total renders (samples + line search).
        n_rounds: proxy mode: sampling rounds (the proxy is refitted after each).
        radius: proxy mode: sampling radius; default ``alpha_max``.
        proxy_hidden: proxy mode: hidden width of the two-layer MLP proxy.
        proxy_epochs: proxy mode: full-batch Adam epochs per round.
        hvp: white-box Hessian-vector products: ``"exact"`` (double backward; attention through its math kernel),
            ``"finite-difference"`` (central differences of two true gradients, taken one after the other) or
            ``"auto"`` (default): exact for the dense path (falling back to finite differences with a warning),
            finite differences for the Lanczos path, where the memory matters: an exact HVP keeps the gradient's
            own graph for the double backward (about 3.5x an attack step's memory; 7.0 GB in SD's VAE at 256x256,
            ``benchmarks/results/real_configs_cpu.json``), a difference of gradients needs one attack step's.
        eigensolver: how h-directions are found: ``"dense"`` forms the ``(D, D)`` Hessian from ``D``
            Hessian-vector products (rows) and takes its top eigenvectors exactly; ``"lanczos"`` runs Lanczos on
            Hessian-vector products (``hessian_steps`` of them per loss, every buffer linear in ``D``: what large
            latents need); ``"auto"`` (default) is dense for ``D <= dense_max_dim`` and Lanczos above.
        dense_max_dim: the largest latent size ``"auto"`` treats densely (default 128).
        hessian_steps: Lanczos iterations (= Hessian-vector products) per loss; default ``max(20, 4 * n_hessian)``
            (capped at ``D``, where Lanczos is exact).

    Shape:
        - source / images: ``(N, C, H, W)`` in ``generator.input_range``.
        - :attr:`directions_`: ``(K, D)`` unit vectors, ``D`` = the free latent's size.

    Examples::

        >>> from captum_cfx import GlobalCounterfactualDirections
        >>> from captum_cfx.datasets import load_mnist
        >>> from captum_cfx.zoo import load_generator, load_pretrained
        >>> x, y = load_mnist("test")
        >>> threes = x[y == 3]
        >>> from captum_cfx.zoo import mnist_distance
        >>> gcd = GlobalCounterfactualDirections(load_pretrained("mnist-classifier"), load_generator("mnist-vae"),
        ...                                      classes=(3, 8), distance=mnist_distance())
        >>> gcd = gcd.fit(threes[:1])
        >>> rate = gcd.globality(threes[1:41]).at(4.0)["flip_rate"]   # fraction of 40 other 3s it flips
        >>> 0.0 <= rate <= 1.0
        True
        >>> maps = gcd.attribute(threes[1:9])
        >>> maps.shape
        torch.Size([8, 1, 28, 28])
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        generator: LatentGenerator,
        classes: tuple[int, int] | None = None,
        *,
        distance: DistanceFn | None = None,
        mode: str = "white-box",
        loss_weights: Sequence[tuple[float, float]] = ((1.0, 0.0), (0.05, 1.0)),
        n_hessian: int = 3,
        alpha_max: float | None = None,
        n_alphas: int = 32,
        render_budget: int = 5000,
        n_rounds: int = 5,
        radius: float | None = None,
        proxy_hidden: int = 256,
        proxy_epochs: int = 300,
        hvp: str = "auto",
        eigensolver: str = "auto",
        dense_max_dim: int = 128,
        hessian_steps: int | None = None,
    ) -> None:
        check_model_and_generator(forward_func, generator)
        if classes is not None:
            if (not isinstance(classes, (tuple, list)) or len(classes) != 2
                    or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
                    or classes[0] == classes[1]):
                raise ValueError(f"`classes` must be (negative, positive): two different ints; got {classes!r}")
            classes = (int(classes[0]), int(classes[1]))
        if distance is not None and not callable(distance):
            raise TypeError(f"`distance` must be callable (images, reference) -> (N,); got {type(distance).__name__}")
        if hvp not in ("auto", "exact", "finite-difference"):
            raise ValueError(f"`hvp` must be 'auto', 'exact' or 'finite-difference'; got {hvp!r}")
        if eigensolver not in ("auto", "dense", "lanczos"):
            raise ValueError(f"`eigensolver` must be 'auto', 'dense' or 'lanczos'; got {eigensolver!r}")
        check_positive(dense_max_dim, "dense_max_dim", integer=True, allow_zero=True)
        if hessian_steps is not None:
            check_positive(hessian_steps, "hessian_steps", integer=True)
        if mode not in ("white-box", "proxy"):
            raise ValueError(f"`mode` must be 'white-box' or 'proxy'; got {mode!r}")
        weights = [tuple(float(v) for v in w) for w in loss_weights]
        if not weights or any(len(w) != 2 for w in weights):
            raise ValueError(f"`loss_weights` must be a non-empty sequence of (a, b) pairs; got {loss_weights!r}")
        check_positive(n_hessian, "n_hessian", integer=True, allow_zero=True)
        check_positive(n_alphas, "n_alphas", integer=True)
        check_positive(render_budget, "render_budget", integer=True)
        check_positive(n_rounds, "n_rounds", integer=True)
        check_positive(proxy_hidden, "proxy_hidden", integer=True)
        check_positive(proxy_epochs, "proxy_epochs", integer=True)
        if alpha_max is not None:
            check_positive(alpha_max, "alpha_max")
        if radius is not None:
            check_positive(radius, "radius")
        PerturbationAttribution.__init__(self, forward_func)
        self.generator = generator
        self.classes = classes
        self.distance = distance
        self.mode = mode
        self.loss_weights = weights
        self.n_hessian = n_hessian
        self.alpha_max = alpha_max
        self.n_alphas = n_alphas
        self.render_budget = render_budget
        self.n_rounds = n_rounds
        self.radius = radius
        self.proxy_hidden = proxy_hidden
        self.proxy_epochs = proxy_epochs
        self.hvp = hvp
        self.eigensolver = eigensolver
        self.dense_max_dim = dense_max_dim
        self.hessian_steps = hessian_steps

    # ------------------------------------------------------------------ the binary question
    def score(self, x: Tensor, extra: tuple[Any, ...] = ()) -> Tensor:
        """The binary question's score on images ``x``: ``logit[pos] - logit[neg]`` (or the single logit);
        the decision is ``pos`` where it is ``> 0``. ``extra``: additional forward args. Shape: ``(N,)``."""
        out = call_model(self.forward_func, x, (), extra)
        if self.classes is None:
            if out.dim() == 2 and out.shape[1] == 1:
                out = out[:, 0]
            if out.dim() != 1:
                raise ValueError("`forward_func` must return (N,) or (N, 1) logits when `classes` is None; "
                                 f"got {tuple(out.shape)} (give classes=(negative, positive))")
            return out
        if out.dim() != 2 or out.shape[1] <= max(self.classes):
            raise ValueError(f"`forward_func` must return (N, K) logits with K > {max(self.classes)} for "
                             f"classes={self.classes}; got {tuple(out.shape)}")
        return out[:, self.classes[1]] - out[:, self.classes[0]]

    def _class_of(self, positive: Tensor) -> Tensor:
        if self.classes is None:
            return positive.long()
        neg, pos = self.classes
        return torch.where(positive, torch.full_like(positive, pos, dtype=torch.long),
                           torch.full_like(positive, neg, dtype=torch.long))

    def _distance_fn(self) -> DistanceFn:
        return self.distance if self.distance is not None else pixel_distance

    def _render(self, latent: Latent, free: Tensor) -> Tensor:
        self.renders_ += int(free.shape[0])
        return self.generator.decode(latent.replace(free.reshape(free.shape[0], *latent.free.shape[1:])))

    def check_fitted(self) -> None:
        """Raise :class:`~captum_cfx.descriptors.NotFittedError` unless :meth:`fit` (or ``from_pretrained``) ran."""
        check_fitted(self, "directions_", "`fit(source)` (or load one with `from_pretrained`)")

    # ------------------------------------------------------------------ fit
    def fit(self, source: Tensor, additional_forward_args: Any = None, generator: torch.Generator | None = None,
            *, progress: bool = False, internal_batch_size: int | None = 64) -> GlobalCounterfactualDirections:
        """Find directions from one source image.

        Args:
            source: one image ``(1, C, H, W)``.
            additional_forward_args: extra arguments for ``forward_func``.
            generator: a ``torch.Generator`` for the proxy mode's sampling and proxy initialisation.
            progress: show a progress bar over proxy rounds.
            internal_batch_size: renders per decoder call (line search, proxy samples, dense Hessian rows);
                ``None``: all of a kind at once. Results do not depend on it beyond float rounding; memory does.

        Returns:
            ``self``, with :attr:`directions_` ``(K, D)``, :attr:`direction_kinds_`, :attr:`scores_`
            (line-search results per direction), :attr:`best_index_`, :attr:`alphas_` (the grid),
            :attr:`z0_`, :attr:`source_sign_`, :attr:`renders_` and :attr:`fit_seconds_`.
        """
        x0 = self.generator.check_images(source, "source")
        if x0.shape[0] != 1:
            raise ValueError(f"`source` must hold exactly one image (1, C, H, W); got {tuple(x0.shape)}")
        check_same_device(x0, generator=self.generator, forward_func=self.forward_func)
        extra = as_tuple(additional_forward_args)
        if internal_batch_size is not None:
            check_positive(internal_batch_size, "internal_batch_size", integer=True)
        bs = internal_batch_size
        dist = self._distance_fn()
        t0 = time.perf_counter()
        self.renders_ = 0
        self._hvp_fallback = False
        with eval_mode(self.forward_func, self.generator, dist), torch.enable_grad():
            with torch.no_grad():
                lat0 = self.generator.encode(x0).detach()
                self.renders_ += 1
                score0 = self.score(self.generator.decode(lat0), extra)
            z0 = lat0.free.reshape(1, -1)
            s = 1.0 if float(score0[0]) > 0 else -1.0
            alpha_max = self.alpha_max if self.alpha_max is not None else 1.5 * float(z0.norm())
            if self.mode == "white-box":
                dirs, kinds = self._white_box_directions(lat0, z0, x0, s, extra, dist, bs)
            else:
                dirs, kinds = self._proxy_directions(lat0, z0, x0, s, extra, dist, alpha_max, generator, progress,
                                                     bs)
            grid = alpha_max * torch.arange(1, self.n_alphas + 1, device=z0.device, dtype=z0.dtype) / self.n_alphas
            scores = self._line_search(lat0, z0, x0, s, dirs, grid, extra, dist, bs)
        self.directions_ = dirs.detach()
        self.direction_kinds_ = kinds
        self.scores_ = scores
        order = sorted(range(len(scores)), key=lambda i: (not scores[i]["flipped"], scores[i]["alpha"],
                                                          scores[i]["distance"]))
        self.best_index_ = order[0]
        self.alphas_ = grid.detach()
        self.z0_ = z0.detach()
        self.latent_shape_ = tuple(lat0.free.shape[1:])
        self.source_sign_ = s
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _loss_terms(self, lat0: Latent, free: Tensor, x0: Tensor, s: float, extra: tuple[Any, ...],
                    dist: DistanceFn) -> tuple[Tensor, Tensor]:
        img = self._render(lat0_expand(lat0, free.shape[0]), free)
        n = free.shape[0]
        ext = tuple(t.expand(n, *t.shape[1:]) if isinstance(t, Tensor) and t.dim() and t.shape[0] == 1 else t
                    for t in extra)
        score = self.score(img, ext)
        return s * score, dist(img, x0.expand(n, *x0.shape[1:]))

    def _white_box_directions(self, lat0: Latent, z0: Tensor, x0: Tensor, s: float, extra: tuple[Any, ...],
                              dist: DistanceFn, bs: int | None) -> tuple[Tensor, list[str]]:
        # gradients of both loss terms at z0 (one gradient pass each counts as a render)
        z = z0.detach().clone().requires_grad_(True)
        logit, dst = self._loss_terms(lat0, z, x0, s, extra, dist)
        g_logit = torch.autograd.grad(logit.sum(), z, retain_graph=True)[0]
        g_dist = torch.autograd.grad(dst.sum(), z)[0]
        self.renders_ += 2
        dirs, kinds = [], []
        hessians: list[Tensor] = []
        for a, b in self.loss_weights:
            g = a * g_logit + b * g_dist
            dirs.append(-g[0] / g[0].norm().clamp_min(1e-12))
            kinds.append(f"g({a:g},{b:g})")
        if self.n_hessian > 0:
            dim = z0.shape[1]
            dense = self.eigensolver == "dense" or (self.eigensolver == "auto" and dim <= self.dense_max_dim)
            for a, b in self.loss_weights:
                g = (a * g_logit + b * g_dist)[0]
                if dense:
                    if not hessians:  # both terms' dense Hessians once, shared by every loss weight pair
                        hessians.extend(self._with_fallback(self._hessians_dense, lat0, z0, x0, s, extra, dist, bs))
                    new = _top_eigvecs(a * hessians[0] + b * hessians[1], g, self.n_hessian)
                elif self.hvp == "auto":  # large latents: differences of two gradients, an attack step's memory
                    new = self._lanczos_directions(lat0, z0, x0, s, extra, dist, (a, b), g, False)
                else:
                    new = self._with_fallback(self._lanczos_directions, lat0, z0, x0, s, extra, dist, (a, b), g)
                dirs.extend(new)
                kinds.extend(f"h{i + 1}({a:g},{b:g})" for i in range(len(new)))
        return torch.stack(dirs).detach(), kinds

    def _with_fallback(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args, exact)``: double backward, or central differences of gradients (``hvp``; ``"auto"`` falls
        back to differences with a warning when the double backward fails)."""
        if self.hvp == "finite-difference" or self._hvp_fallback:
            return fn(*args, False)
        try:
            return fn(*args, True)
        except RuntimeError as err:  # e.g. attention kernels without a double backward
            if self.hvp == "exact":
                raise
            warnings.warn(f"exact Hessian-vector products failed ({str(err)[:120]}); using central "
                          "differences of gradients instead (hvp='finite-difference')", stacklevel=4)
            self._hvp_fallback = True
            return fn(*args, False)

    def _hessians_dense(self, lat0: Latent, z0: Tensor, x0: Tensor, s: float, extra: tuple[Any, ...],
                        dist: DistanceFn, bs: int | None, exact: bool, eps: float = 1e-2) -> tuple[Tensor, Tensor]:
        """Both loss terms' ``(D, D)`` Hessians, ``bs`` rows at a time (only where ``D <= dense_max_dim``).

        Exact: row ``i`` of a batch of copies of ``z0`` gives ``H e_i`` by double backward (one HVP per latent
        dimension and loss term). Finite differences: central differences of true gradients at ``z0 +- eps e_i``.
        """
        d = z0.shape[1]
        bs = bs or d
        rows_l, rows_d = [], []
        for lo in range(0, d, bs):
            eye = torch.eye(d, device=z0.device, dtype=z0.dtype)[lo:lo + bs]
            k = eye.shape[0]
            if exact:
                zb = z0.detach().expand(k, d).clone().requires_grad_(True)
                with _twice_differentiable():
                    logit_b, dst_b = self._loss_terms(lat0, zb, x0, s, extra, dist)
                gl = torch.autograd.grad(logit_b.sum(), zb, create_graph=True)[0]
                gd = torch.autograd.grad(dst_b.sum(), zb, create_graph=True)[0]
                rows_l.append(torch.autograd.grad((gl * eye).sum(), zb, retain_graph=True)[0].detach())
                rows_d.append(torch.autograd.grad((gd * eye).sum(), zb)[0].detach())
                self.renders_ += 2 * k  # HVPs, one per latent dimension and loss term
            else:
                zb = torch.cat([z0 + eps * eye, z0 - eps * eye]).detach().requires_grad_(True)
                logit_b, dst_b = self._loss_terms(lat0, zb, x0, s, extra, dist)
                gl = torch.autograd.grad(logit_b.sum(), zb, retain_graph=True)[0]
                gd = torch.autograd.grad(dst_b.sum(), zb)[0]
                rows_l.append((gl[:k] - gl[k:]) / (2 * eps))
                rows_d.append((gd[:k] - gd[k:]) / (2 * eps))
                self.renders_ += 2 * 2 * k  # gradient passes: two loss terms at 2k points
        return torch.cat(rows_l), torch.cat(rows_d)

    def _lanczos_directions(self, lat0: Latent, z0: Tensor, x0: Tensor, s: float, extra: tuple[Any, ...],
                            dist: DistanceFn, weights: tuple[float, float], g: Tensor, exact: bool) -> list[Tensor]:
        hvp = self._hvp_operator(lat0, z0, x0, s, extra, dist, weights, exact)
        return _lanczos_top(hvp, g, self.n_hessian, self.hessian_steps)

    def _hvp_operator(self, lat0: Latent, z0: Tensor, x0: Tensor, s: float, extra: tuple[Any, ...],
                      dist: DistanceFn, weights: tuple[float, float], exact: bool,
                      eps: float = 1e-2) -> Callable[[Tensor], Tensor]:
        """``v -> H v`` for the loss ``a * s * score + b * distance`` at ``z0``; every buffer is linear in ``D``.

        Exact: the gradient's graph at ``z0`` is built once (``create_graph``) and each product is one more
        backward through it (double backward). Finite differences: ``(g(z0 + eps v) - g(z0 - eps v)) / (2 eps)``
        from two gradient passes. Each product counts its renders.
        """
        a, b = weights
        if exact:
            z = z0.detach().clone().requires_grad_(True)
            with _twice_differentiable():
                logit, dst = self._loss_terms(lat0, z, x0, s, extra, dist)
            (g,) = torch.autograd.grad((a * logit + b * dst).sum(), z, create_graph=True)
            if not g.requires_grad:  # a loss linear in z: its Hessian is zero
                return lambda v: torch.zeros_like(v)

            def hvp(v: Tensor) -> Tensor:
                self.renders_ += 1
                (hv,) = torch.autograd.grad((g * v.to(g.dtype).reshape(g.shape)).sum(), z, retain_graph=True)
                return hv.reshape(-1).detach()

            return hvp

        def grad_at(z: Tensor) -> Tensor:
            z = z.detach().requires_grad_(True)
            logit, dst = self._loss_terms(lat0, z, x0, s, extra, dist)
            self.renders_ += 1
            return torch.autograd.grad((a * logit + b * dst).sum(), z)[0][0].detach()

        def hvp_fd(v: Tensor) -> Tensor:  # the two gradients one after the other: an attack step's memory
            vv = v.to(z0.dtype).reshape(1, -1)
            return (grad_at(z0 + eps * vv) - grad_at(z0 - eps * vv)) / (2 * eps)

        return hvp_fd

    def _proxy_directions(self, lat0: Latent, z0: Tensor, x0: Tensor, s: float, extra: tuple[Any, ...],
                          dist: DistanceFn, alpha_max: float, rng: torch.Generator | None,
                          progress: bool, bs: int | None) -> tuple[Tensor, list[str]]:
        d = z0.shape[1]
        n_dirs = len(self.loss_weights) * (1 + self.n_hessian)
        n_samples = self.render_budget - self.renders_ - n_dirs * self.n_alphas
        if n_samples < self.n_rounds * 2:
            raise ValueError(f"`render_budget` ({self.render_budget}) leaves too few samples for the proxy after "
                             f"the line search ({n_dirs * self.n_alphas} renders); raise it")
        radius = self.radius if self.radius is not None else alpha_max
        per_round = [n_samples // self.n_rounds + (1 if i < n_samples % self.n_rounds else 0)
                     for i in range(self.n_rounds)]
        dev, dt = z0.device, z0.dtype
        if rng is not None:
            init_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng, device=rng.device))
            proxy_rng: torch.Generator | None = torch.Generator().manual_seed(init_seed)
        else:
            proxy_rng = None
        proxy = _Proxy(d, self.proxy_hidden, proxy_rng).to(device=dev, dtype=dt)
        xs, ys = [], []
        for m in tqdm(per_round, disable=not progress, desc="GCD proxy rounds", leave=False):
            u = torch.randn(m, d, generator=rng, device=rng.device if rng is not None else dev).to(dev, dt)
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
            r = torch.rand(m, 1, generator=rng, device=rng.device if rng is not None else dev).to(dev, dt) * radius
            dz = r * u
            with torch.no_grad():
                step = bs or m
                for lo in range(0, m, step):
                    logit, dst = self._loss_terms(lat0, z0 + dz[lo:lo + step], x0, s, extra, dist)
                    xs.append(dz[lo:lo + step])
                    ys.append(torch.stack([s * logit, dst], 1))  # the raw score (not signed) and the distance
            proxy.fit(torch.cat(xs), torch.cat(ys), self.proxy_epochs)
        dirs, kinds = [], []
        zero = torch.zeros(1, d, device=dev, dtype=dt)
        for a, b in self.loss_weights:
            def loss(v: Tensor, a: float = a, b: float = b) -> Tensor:
                out = proxy(v.reshape(1, d))[0]
                return a * s * out[0] + b * out[1]

            z = zero.clone().requires_grad_(True)
            g = torch.autograd.grad(loss(z), z)[0][0]
            dirs.append(-g / g.norm().clamp_min(1e-12))
            kinds.append(f"g({a:g},{b:g})")
            if self.n_hessian > 0:
                if self.eigensolver == "dense" or (self.eigensolver == "auto" and d <= self.dense_max_dim):
                    new = _top_eigvecs(torch.autograd.functional.hessian(loss, zero[0]), g, self.n_hessian)
                else:  # the proxy's Hessian-vector products by double backward: nothing of size D x D
                    zp = zero.clone().requires_grad_(True)
                    (gp,) = torch.autograd.grad(loss(zp), zp, create_graph=True)

                    def hvp(v: Tensor, gp: Tensor = gp, zp: Tensor = zp) -> Tensor:
                        (hv,) = torch.autograd.grad((gp * v.to(gp.dtype).reshape(gp.shape)).sum(), zp,
                                                    retain_graph=True)
                        return hv.reshape(-1).detach()

                    new = _lanczos_top(hvp, g, self.n_hessian, self.hessian_steps)
                dirs.extend(new)
                kinds.extend(f"h{i + 1}({a:g},{b:g})" for i in range(len(new)))
        self.proxy_ = proxy
        return torch.stack(dirs).detach(), kinds

    @torch.no_grad()
    def _line_search(self, lat0: Latent, z0: Tensor, x0: Tensor, s: float, dirs: Tensor, grid: Tensor,
                     extra: tuple[Any, ...], dist: DistanceFn, bs: int | None) -> list[dict[str, Any]]:
        scores = []
        step = bs or grid.numel()
        for k in range(dirs.shape[0]):
            zs = z0 + grid[:, None] * dirs[k][None]
            parts = [self._loss_terms(lat0, zs[lo:lo + step], x0, s, extra, dist) for lo in range(0, len(zs), step)]
            logit, dst = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            flipped = logit < 0  # s * score < 0: the decision changed
            if bool(flipped.any()):
                i = int(flipped.nonzero()[0])
                scores.append({"kind": None, "flipped": True, "alpha": float(grid[i]), "distance": float(dst[i]),
                               "logit": float(s * logit[i])})
            else:
                scores.append({"kind": None, "flipped": False, "alpha": math.inf, "distance": float(dst[-1]),
                               "logit": float(s * logit[-1])})
        return scores

    # ------------------------------------------------------------------ use on many images
    def direction(self, which: int | str | Tensor = "best") -> Tensor:
        """A unit direction ``(D,)``: ``"best"``, an index into :attr:`directions_`, a kind name, or a tensor."""
        self.check_fitted()
        if isinstance(which, Tensor):
            v = which.reshape(-1).to(self.directions_)
            if v.numel() != self.directions_.shape[1]:
                raise ValueError(f"`direction` must have {self.directions_.shape[1]} elements; got {v.numel()}")
            return v / v.norm().clamp_min(1e-12)
        if which == "best":
            return self.directions_[self.best_index_]
        if isinstance(which, str):
            if which not in self.direction_kinds_:
                raise ValueError(f"`direction` must be 'best', an index or one of {self.direction_kinds_}; "
                                 f"got {which!r}")
            return self.directions_[self.direction_kinds_.index(which)]
        if isinstance(which, int) and not isinstance(which, bool) and 0 <= which < self.directions_.shape[0]:
            return self.directions_[which]
        raise ValueError(f"`direction` must be 'best', an index in [0, {self.directions_.shape[0] - 1}], a kind "
                         f"name or a tensor; got {which!r}")

    def transfer(self, images: Tensor, alphas: Tensor | Sequence[float] | float | None = None,
                 direction: int | str | Tensor = "best", *, target: TargetType = None,
                 additional_forward_args: Any = None, internal_batch_size: int = 256) -> TransferOutput:
        """Apply one direction to new images: ``z + alpha * s_i * d`` for every alpha of a grid.

        ``s_i = +1`` for images whose decision is the source's, ``-1`` for the others, so every image
        moves towards the other class (or towards ``target`` when given).

        Args:
            images: ``(N, C, H, W)``.
            alphas: a grid of steps (default: the fit's line-search grid :attr:`alphas_`) or one float.
            direction: see :meth:`direction`.
            target: optional class per image to move towards (one of ``classes``).
            additional_forward_args: extra arguments for ``forward_func`` (indexed per image).
            internal_batch_size: renders per decoder call (each image is rendered ``len(alphas)`` times; images
                are encoded ``max(1, internal_batch_size // len(alphas))`` at a time). Results do not depend on it
                beyond float rounding; memory does.

        Returns:
            :class:`TransferOutput`.
        """
        self.check_fitted()
        x = self.generator.check_images(images, "images")
        check_positive(internal_batch_size, "internal_batch_size", integer=True)
        grid = self._grid(alphas, x)
        d = self.direction(direction).to(x.device, x.dtype)
        extra = as_tuple(additional_forward_args)
        n = x.shape[0]
        tgt = parse_target(target, n, None, x.device)
        if tgt is not None:
            allowed = self.classes if self.classes is not None else (0, 1)
            if not bool(((tgt == allowed[0]) | (tgt == allowed[1])).all()):
                raise ValueError(f"`target` must hold classes of the question {tuple(allowed)}; got {tgt.tolist()}")
        return self._sweep(x, grid, d, tgt, extra, internal_batch_size)[0]

    def _sweep(self, x: Tensor, grid: Tensor, d: Tensor, tgt: Tensor | None, extra: tuple[Any, ...], bs: int,
               oracle: Callable[[Tensor], Tensor] | None = None
               ) -> tuple[TransferOutput, Tensor | None, Tensor | None]:
        """One pass over ``x``: encode, render every alpha, read the model (and the oracle, in the same pass).

        Returns the transfer output and, with an ``oracle``, its per-(image, alpha) agreement with the new
        decision of the question and with the strict K-way argmax (``None`` without classes).
        """
        n, a = x.shape[0], grid.numel()
        recs, cfs, used, succ, signs, c0s, c1s, flips_all, bad = [], [], [], [], [], [], [], [], []
        agree: list[Tensor] = []
        strict: list[Tensor] = []
        per = max(1, bs // a)  # images per pass: their renders (at most max(bs, A)) are held for the selection
        with eval_mode(self.forward_func, self.generator, oracle), torch.no_grad():
            for lo in range(0, n, per):
                sl = slice(lo, min(lo + per, n))
                xb, m = x[sl], x[sl].shape[0]
                eb = index_args(extra, n, sl)
                lat = self.generator.encode(xb)
                rec = self.generator.decode(lat)
                score0 = self.score(rec, eb)
                pos0 = score0 > 0
                src_pos = self.source_sign_ > 0
                if tgt is None:
                    sign = torch.where(pos0 == src_pos, 1.0, -1.0)
                else:
                    tpos = tgt[sl] == (self.classes[1] if self.classes is not None else 1)
                    sign = torch.where(tpos != src_pos, 1.0, -1.0)
                sign = sign.to(x.dtype)
                zf = lat.free.reshape(m, -1)
                zs = zf[:, None, :] + grid[None, :, None] * sign[:, None, None] * d[None, None, :]
                e_rep = tuple(t.repeat_interleave(a, 0) if isinstance(t, Tensor) and t.dim() and t.shape[0] == m
                              else t for t in eb)
                new_cls = self._class_of(~pos0).repeat_interleave(a)  # after a flip: the other class
                parts, score_parts, ag_parts, st_parts = [], [], [], []
                for rows, img in iter_decoded(self.generator, lat, zs.reshape(m * a, *lat.free.shape[1:]), a, bs):
                    parts.append(img)
                    score_parts.append(self.score(img, index_args(e_rep, m * a, rows)))
                    if oracle is not None:
                        o = oracle(img)
                        if self.classes is None:
                            ag_parts.append((o.reshape(-1) > 0).long() == new_cls[rows])
                        else:
                            neg, p = self.classes
                            ag_parts.append(torch.where(o[:, p] > o[:, neg], p, neg) == new_cls[rows])
                            st_parts.append(o.argmax(1) == new_cls[rows])
                img = torch.cat(parts)
                score = torch.cat(score_parts).reshape(m, a)
                nonfinite = ~torch.isfinite(score0) | ~torch.isfinite(score).all(1)  # flagged per image
                pos = score > 0
                flips = (pos != pos0[:, None]) & ~nonfinite[:, None]
                ok = flips.any(1)
                first = torch.where(ok, flips.float().argmax(1), torch.full_like(ok, a - 1, dtype=torch.long))
                imgs = img.reshape(m, a, *img.shape[1:])
                cfs.append(imgs[torch.arange(m, device=x.device), first])
                recs.append(rec)
                used.append(grid[first])
                succ.append(ok)
                signs.append(sign)
                c0s.append(self._class_of(pos0))
                c1s.append(self._class_of(pos[torch.arange(m, device=x.device), first]))
                flips_all.append(flips)
                bad.append(nonfinite)
                if oracle is not None:
                    agree.append(torch.cat(ag_parts).reshape(m, a))
                    if st_parts:
                        strict.append(torch.cat(st_parts).reshape(m, a))
        out = TransferOutput(torch.cat(cfs), torch.cat(recs), torch.cat(used), torch.cat(succ), torch.cat(signs),
                             torch.cat(c0s), torch.cat(c1s), torch.cat(flips_all), grid, torch.cat(bad))
        if bool(out.nonfinite.any()):
            warnings.warn(f"{int(out.nonfinite.sum())} of {n} images gave NaN/Inf model outputs; they count as not "
                          "flipped (see TransferOutput.nonfinite)", stacklevel=3)
        if oracle is None:
            return out, None, None
        nflip = out.flips.float().sum(0).clamp_min(1)
        ag = (torch.cat(agree) & out.flips).float().sum(0) / nflip
        st = (torch.cat(strict) & out.flips).float().sum(0) / nflip if strict else None
        return out, ag, st

    def _grid(self, alphas: Any, x: Tensor) -> Tensor:
        if alphas is None:
            return self.alphas_.to(x.device, x.dtype)
        grid = torch.as_tensor(alphas, dtype=x.dtype, device=x.device).reshape(-1)
        if grid.numel() == 0 or not torch.isfinite(grid).all() or bool((grid < 0).any()):
            raise ValueError(f"`alphas` must be one or more finite numbers >= 0; got {alphas!r}")
        return grid

    def globality(self, images: Tensor, alphas: Tensor | Sequence[float] | None = None,
                  direction: int | str | Tensor = "best", *, oracle: Callable[[Tensor], Tensor] | None = None,
                  additional_forward_args: Any = None, internal_batch_size: int = 256,
                  label: str | None = None) -> GlobalityResult:
        """Flip rate of one direction over a data set as a function of alpha.

        Every image moves towards the other class (sign flipped for images on the other side of the
        decision). An image counts as flipped at alpha when its decision differs from its
        reconstruction's.

        Args:
            images: ``(N, C, H, W)``.
            alphas: the grid (default :attr:`alphas_`).
            direction: see :meth:`direction` (a tensor gives e.g. a random control direction).
            oracle: an independent model with the same outputs; adds oracle agreement per alpha.
            additional_forward_args, internal_batch_size: as in :meth:`transfer`.
            label: legend name (default: the direction's kind).

        Returns:
            :class:`GlobalityResult`; ``.plot()`` draws the curve.
        """
        self.check_fitted()
        x = self.generator.check_images(images, "images")
        grid = self._grid(alphas, x)
        d = self.direction(direction)
        check_positive(internal_batch_size, "internal_batch_size", integer=True)
        if oracle is not None and not callable(oracle):
            raise TypeError(f"`oracle` must be callable or None; got {type(oracle).__name__}")
        extra = as_tuple(additional_forward_args)
        out, agree, agree_strict = self._sweep(x, grid, d.to(x.device, x.dtype), None, extra, internal_batch_size,
                                               oracle)
        flips = out.flips
        rate = flips.float().mean(0)
        if label is None:
            label = (self.direction_kinds_[self.best_index_] if isinstance(direction, str) and direction == "best"
                     else self.direction_kinds_[direction] if isinstance(direction, int)
                     else direction if isinstance(direction, str) else "given direction")
        return GlobalityResult(grid, rate, flips, agree, agree_strict, label)

    # ------------------------------------------------------------------ Captum interface
    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        alpha: float | None = None,
        direction: int | str | Tensor = "best",
        internal_batch_size: int = 256,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Pixel change made by moving each input along the fitted direction: ``counterfactual - reconstruction``.

        Args:
            inputs: images ``(N, C, H, W)`` (or a tuple whose first member is the image; the later members are
                passed to ``forward_func`` after it and get zero maps).
            target: optional class per input to move towards; default: the other class of the question.
            additional_forward_args: extra arguments for ``forward_func``.
            alpha: one step for every input; default: each input's smallest flipping alpha on the
                fit's grid (the largest alpha when none flips).
            direction: see :meth:`direction`.
            internal_batch_size: see :meth:`transfer`.

        Returns:
            A tensor (or tuple) shaped like ``inputs``; extra tuple members get zeros.
        """
        inp = CaptumInputs.parse(inputs)
        with torch.enable_grad():
            out = self.transfer(inp.image, None if alpha is None else [alpha], direction, target=target,
                                additional_forward_args=inp.forward_args(additional_forward_args),
                                internal_batch_size=internal_batch_size)
        return inp.like_inputs((out.counterfactuals - out.reconstructions).detach())

    def diversity(self, feature_fn: Callable[[Tensor], Tensor] | None = None, kinds: str = "h",
                  alpha: float | None = None) -> Tensor:
        """Pairwise feature-space distances between the source's counterfactuals made by different directions.

        Args:
            feature_fn: image features (default: the pixels themselves; the zoo's ``mnist_features()``
                is the MNIST preset).
            kinds: ``"h"`` (h-directions, default), ``"g"`` or ``"all"``.
            alpha: the step for every direction; default each direction's line-search alpha (its
                largest grid alpha when it never flipped).

        Returns:
            ``(K, K)`` Euclidean distances between the counterfactuals' features.
        """
        self.check_fitted()
        if kinds not in ("h", "g", "all"):
            raise ValueError(f"`kinds` must be 'h', 'g' or 'all'; got {kinds!r}")
        idx = [i for i, k in enumerate(self.direction_kinds_) if kinds == "all" or k.startswith(kinds)]
        if not idx:
            raise ValueError(f"no fitted directions of kind {kinds!r} (n_hessian={self.n_hessian})")
        if feature_fn is None:
            feature_fn = _flatten
        imgs = self.source_counterfactuals(idx, alpha)
        with torch.no_grad():
            f = feature_fn(imgs).flatten(1)
        return torch.cdist(f, f)

    @torch.no_grad()
    def source_counterfactuals(self, indices: Sequence[int] | None = None, alpha: float | None = None) -> Tensor:
        """The source's counterfactual per direction (at its line-search alpha unless ``alpha`` is given)."""
        self.check_fitted()
        idx = list(range(self.directions_.shape[0])) if indices is None else list(indices)
        alphas = torch.tensor([alpha if alpha is not None else (self.scores_[i]["alpha"] if self.scores_[i]["flipped"]
                               else float(self.alphas_[-1])) for i in idx], dtype=self.z0_.dtype,
                              device=self.z0_.device)
        zs = self.z0_ + alphas[:, None] * self.directions_[idx]
        with eval_mode(self.generator):
            return self.generator.decode(zs.reshape(len(idx), *self.latent_shape_))

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` (directions, source latent) to a folder."""
        self.check_fitted()
        from safetensors.torch import save_file

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        cfg = {"classes": self.classes, "mode": self.mode, "loss_weights": self.loss_weights,
               "n_hessian": self.n_hessian, "alpha_max": self.alpha_max, "n_alphas": self.n_alphas,
               "render_budget": self.render_budget, "n_rounds": self.n_rounds, "radius": self.radius,
               "proxy_hidden": self.proxy_hidden, "proxy_epochs": self.proxy_epochs, "hvp": self.hvp,
               "eigensolver": self.eigensolver, "dense_max_dim": self.dense_max_dim,
               "hessian_steps": self.hessian_steps,
               "direction_kinds": self.direction_kinds_, "scores": self.scores_, "best_index": self.best_index_,
               "source_sign": self.source_sign_, "renders": self.renders_, "latent_shape": list(self.latent_shape_),
               "fit_seconds": self.fit_seconds_}
        (p / "config.json").write_text(json.dumps(cfg, indent=2, default=lambda v: None))
        save_file({"directions": self.directions_.detach().cpu().contiguous(),
                   "z0": self.z0_.detach().cpu().contiguous(), "alphas": self.alphas_.detach().cpu().contiguous()},
                  str(p / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, path: str | Path, forward_func: Callable[..., Tensor], generator: LatentGenerator,
                        *, distance: DistanceFn | None = None) -> GlobalCounterfactualDirections:
        """Load directions saved with :meth:`save_pretrained` (tensors move to the generator's device)."""
        p = Path(path)
        if not (p / "config.json").is_file():
            raise ValueError(f"`path` must be a folder with config.json and model.safetensors; got {str(p)!r}")
        cfg = json.loads((p / "config.json").read_text())
        obj = cls(forward_func, generator, classes=tuple(cfg["classes"]) if cfg["classes"] is not None else None,
                  distance=distance, mode=cfg["mode"], loss_weights=[tuple(w) for w in cfg["loss_weights"]],
                  n_hessian=cfg["n_hessian"], alpha_max=cfg["alpha_max"], n_alphas=cfg["n_alphas"],
                  render_budget=cfg["render_budget"], n_rounds=cfg["n_rounds"], radius=cfg["radius"],
                  proxy_hidden=cfg["proxy_hidden"], proxy_epochs=cfg["proxy_epochs"], hvp=cfg.get("hvp", "auto"),
                  eigensolver=cfg.get("eigensolver", "auto"), dense_max_dim=cfg.get("dense_max_dim", 128),
                  hessian_steps=cfg.get("hessian_steps"))
        state = load_safetensors(p / "model.safetensors", argument="path")
        dev, dt = generator.device, generator.dtype
        obj.directions_ = state["directions"].to(dev, dt)
        obj.z0_ = state["z0"].to(dev, dt)
        obj.alphas_ = state["alphas"].to(dev, dt)
        obj.direction_kinds_ = list(cfg["direction_kinds"])
        obj.scores_ = [dict(s, alpha=math.inf if s["alpha"] is None else s["alpha"]) for s in cfg["scores"]]
        obj.best_index_ = int(cfg["best_index"])
        obj.source_sign_ = float(cfg["source_sign"])
        obj.renders_ = int(cfg["renders"])
        obj.latent_shape_ = tuple(cfg["latent_shape"])
        obj.fit_seconds_ = float(cfg["fit_seconds"])
        return obj


def lat0_expand(lat0: Latent, n: int) -> Latent:
    """The source latent repeated ``n`` times (fixed parts included)."""
    if n == 1:
        return lat0
    return Latent(lat0.free.expand(n, *lat0.free.shape[1:]), {k: v.expand(n, *v.shape[1:])
                                                              for k, v in lat0.fixed.items()})


def _top_eigvecs(h: Tensor, g: Tensor, k: int) -> list[Tensor]:
    """The ``k`` eigenvectors of the symmetrised ``h`` with the largest eigenvalues, signed so ``g . v <= 0``."""
    hs = 0.5 * (h + h.T)
    _, vecs = torch.linalg.eigh(hs.double())
    out = []
    for i in range(min(k, hs.shape[0])):
        v = vecs[:, -1 - i].to(h.dtype)
        if float(g @ v) > 0:
            v = -v
        out.append(v)
    return out


def _twice_differentiable() -> Any:
    """Scaled dot-product attention through its math kernel, whose backward is itself differentiable: the fused
    CPU/flash kernels have no double backward, which exact Hessian-vector products need (diffusers' attention
    blocks in SD's VAE and in UNets). The same function, computed by plain matmuls and a softmax."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _lanczos_top(hvp: Callable[[Tensor], Tensor], g: Tensor, k: int, steps: int | None) -> list[Tensor]:
    """The ``k`` eigenvectors of a symmetric operator with the largest eigenvalues, by Lanczos.

    ``hvp(v) -> H v`` is the only access to ``H`` (``D`` x ``D``, never formed). Lanczos with full
    re-orthogonalisation builds an orthonormal Krylov basis ``Q`` (``steps`` x ``D``) from a fixed pseudo-random
    start (seed 0, so fits are deterministic) and takes the Ritz vectors of the tridiagonal ``Q H Q^T``; with
    ``steps >= D`` they are ``H``'s exact eigenvectors (up to float rounding). Memory: ``steps + 2`` vectors of
    size ``D``. Each vector is signed so that ``g . v <= 0`` (it descends the loss), as :func:`_top_eigvecs`.

    Shape:
        - g: ``(D,)``; returns ``k`` tensors ``(D,)`` (fewer when ``D < k``).
    """
    d = g.numel()
    m = min(d, steps if steps is not None else max(20, 4 * k))
    dt = torch.float64 if g.dtype == torch.float64 else torch.float32
    rng = torch.Generator().manual_seed(0)
    q = torch.randn(d, generator=rng, dtype=dt).to(g.device)
    basis = [q / q.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for j in range(m):
        w = hvp(basis[j]).to(dt).reshape(-1)
        a = float(w @ basis[j])
        alphas.append(a)
        scale = max(scale, abs(a))
        if j == m - 1:
            break
        qs = torch.stack(basis)
        for _ in range(2):  # full re-orthogonalisation, twice ("twice is enough")
            w = w - qs.T @ (qs @ w)
        b = float(w.norm())
        scale = max(scale, b)
        if b <= 1e-7 * max(scale, 1e-30):  # an invariant subspace: restart from a fresh orthogonal vector
            b = 0.0
            for _ in range(2):
                w = torch.randn(d, generator=rng, dtype=dt).to(g.device)
                w = w - qs.T @ (qs @ w)
                w = w - qs.T @ (qs @ w)
            basis.append(w / w.norm())
        else:
            basis.append(w / b)
        betas.append(b)
    r = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if r > 1:
        off = torch.tensor(betas[: r - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    _, vecs = torch.linalg.eigh(t)
    qs = torch.stack(basis[:r])
    out = []
    for i in range(min(k, r)):
        v = qs.T @ vecs[:, -1 - i].to(dt).to(g.device)
        v = (v / v.norm()).to(g.dtype)
        if float(g @ v) > 0:
            v = -v
        out.append(v)
    return out


class _Proxy(nn.Module):
    """Two-layer MLP ``(z - z0) -> (score, distance)`` with standardised targets (the paper's proxy)."""

    def __init__(self, d: int, hidden: int, rng: torch.Generator | None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2))
        if rng is not None:
            with torch.no_grad():
                for p in self.net.parameters():
                    bound = 1.0 / math.sqrt(p.shape[-1] if p.dim() > 1 else hidden)
                    p.copy_(torch.rand(p.shape, generator=rng) * 2 * bound - bound)
        self.register_buffer("mu", torch.zeros(2))
        self.register_buffer("sd", torch.ones(2))

    def forward(self, dz: Tensor) -> Tensor:
        return self.net(dz) * self.sd + self.mu

    def fit(self, x: Tensor, y: Tensor, epochs: int) -> None:
        self.mu.copy_(y.mean(0))
        self.sd.copy_(y.std(0).clamp_min(1e-6))
        yn = (y - self.mu) / self.sd
        # Adam (lr 3e-3) exactly as torch.optim.Adam computes it; constructing torch.optim.Adam imports
        # torch._dynamo, which takes seconds
        params = list(self.net.parameters())
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]
        lr, b1, b2, eps = 3e-3, 0.9, 0.999, 1e-8
        with torch.enable_grad():
            for t in range(1, epochs + 1):
                loss = (self.net(x) - yn).pow(2).mean()
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, g, mi, vi in zip(params, grads, m, v):
                        mi.mul_(b1).add_(g, alpha=1 - b1)
                        vi.mul_(b2).addcmul_(g, g, value=1 - b2)
                        denom = (vi.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
                        p.addcdiv_(mi, denom, value=-lr / (1 - b1**t))
