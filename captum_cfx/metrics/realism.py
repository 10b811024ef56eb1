"""Realism judged independently of the explained model, in a feature space you choose.

LPIPS and Inception-FID download weights; here any user feature network works, the default is generic
(:func:`pooled_pixels`, any image size), and the zoo's presets (``captum_cfx.zoo.mnist_features``,
``world_features``, ``squares_features``) are the penultimate layers of the shipped independent judges.
FID and sFID go through torchmetrics' ``FrechetInceptionDistance(feature=...)``: the feature module carries
``num_features``, so torchmetrics neither probes it with a 299x299 dummy image nor loads Inception weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_cfx.metrics.basic import MetricResult

__all__ = ["FeatureNet", "domain_fid", "fid", "knn_distance", "manifold_distance", "pooled_pixels", "sfid"]


class FeatureNet(nn.Module):
    """Wrap a feature function as a module with ``num_features`` (what torchmetrics' FID needs).

    Args:
        fn: ``(N, C, H, W) -> (N, num_features)`` (any trailing shape is flattened).
        num_features: the feature size.
        module: the module that owns ``fn``'s parameters, registered so that ``.to()``/``.eval()`` reach it.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], num_features: int, module: nn.Module | None = None) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"`fn` must be callable; got {type(fn).__name__}")
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"`num_features` must be a positive int; got {num_features!r}")
        self.fn = fn
        self.num_features = int(num_features)
        self.module = module  # registered so that .to()/.eval() reach it

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x).flatten(1)


def pooled_pixels(channels: int, size: int = 8) -> FeatureNet:
    """The generic default feature network: each channel average-pooled to ``size x size`` pixels.

    Works for any image size and channel count and downloads nothing; distances in it are blurred pixel
    distances (a data set's own network, e.g. :func:`captum_cfx.zoo.mnist_features`, judges realism better).

    Shape:
        - input: ``(N, channels, H, W)``; output: ``(N, channels * size * size)``.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"`channels` must be a positive int; got {channels!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"`size` must be a positive int; got {size!r}")
    return FeatureNet(lambda x: F.adaptive_avg_pool2d(x, size), channels * size * size)


@torch.no_grad()
def _features(net: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([net(x[i : i + batch_size]).flatten(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def knn_distance(images: Tensor, reference: Tensor, feature_net: Callable[[Tensor], Tensor] | None = None,
                 k: int = 5, *, exclude_self: bool = False) -> MetricResult:
    """Mean Euclidean distance from each image to its ``k`` nearest reference images in feature space.

    Lower is more realistic. Compare with the same figure for real held-out images. The aggregate is
    the median. ``exclude_self`` drops zero-distance matches (when ``images`` are in ``reference``).
    ``reference`` may be given as its features under the same ``feature_net`` (a 2-D tensor), so that a
    large reference set is embedded once for several calls.
    ``feature_net`` defaults to :func:`pooled_pixels` (generic); pass your domain's feature network.

    Shape:
        - images: ``(N, C, H, W)``; reference: ``(M, C, H, W)`` images or ``(M, F)`` features, with
          ``M >= k``; ``values``: ``(N,)``.
    """
    net = feature_net if feature_net is not None else pooled_pixels(_channels(images))
    fa = _features(net, images)
    fr = reference if reference.dim() == 2 else _features(net, reference)
    if fr.dim() != 2 or fr.shape[1] != fa.shape[1] or len(fr) < k:
        raise ValueError(f"`reference` must be (M, C, H, W) images or (M, {fa.shape[1]}) features with M >= k = {k}; "
                         f"got shape {tuple(reference.shape)}")
    d = torch.cdist(fa, fr)
    if exclude_self:
        d = d.masked_fill(d < 1e-6, float("inf"))
    vals = d.topk(k, dim=1, largest=False).values.mean(1)
    return MetricResult.of(vals, agg="median")


def _channels(x: Any) -> int:
    return int(x.shape[1]) if isinstance(x, Tensor) and x.dim() == 4 else 1


def _check_feature_net(feature_net: Any, images: Any) -> nn.Module:
    if feature_net is None:
        return pooled_pixels(_channels(images))
    if not isinstance(feature_net, nn.Module):
        raise TypeError(f"`feature_net` must be an nn.Module with `num_features` (e.g. a FeatureNet); got "
                        f"{type(feature_net).__name__}")
    nf = getattr(feature_net, "num_features", None)
    if isinstance(nf, bool) or not isinstance(nf, int) or nf <= 0:
        raise ValueError("`feature_net` must have an int attribute `num_features` (without it torchmetrics probes "
                         f"the network with a 299x299 uint8 image); got {nf!r}")
    return feature_net


def _check_images(x: Any, argument: str, minimum: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"`{argument}` must be a torch.Tensor of images (N, C, H, W); got {type(x).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"`{argument}` must be a floating-point batch of images (N, C, H, W); got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    if x.shape[0] < minimum:
        raise ValueError(f"`{argument}` must hold at least {minimum} images; got {x.shape[0]}")
    return x


def _fid_value(net: nn.Module, real: Tensor, fake: Tensor, batch_size: int) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    # the metric's running sums live on a device too: put them where the images are (CUDA runs)
    metric = FrechetInceptionDistance(feature=net, normalize=True).to(real.device)
    with torch.no_grad():
        for i in range(0, len(real), batch_size):
            metric.update(real[i : i + batch_size], real=True)
        for i in range(0, len(fake), batch_size):
            metric.update(fake[i : i + batch_size], real=False)
        return float(metric.compute())


def fid(real: Tensor, fake: Tensor, feature_net: nn.Module | None = None, batch_size: int = 1000) -> MetricResult:
    r"""Fréchet distance between ``real`` and ``fake`` image sets in a domain feature space.

    :math:`\mathrm{FID} = \lVert\mu_r - \mu_f\rVert^2 + \mathrm{Tr}(\Sigma_r + \Sigma_f - 2(\Sigma_r\Sigma_f)^{1/2})`
    over the features of each set (Heusel et al., *GANs Trained by a Two Time-Scale Update Rule Converge to
    a Local Nash Equilibrium*, NeurIPS 2017), computed by torchmetrics' ``FrechetInceptionDistance`` with
    ``feature=feature_net``. Lower is closer. FID is biased upwards at small set sizes: compare figures
    computed on sets of the same size only.

    Args:
        real, fake: image batches in the feature network's input range (at least 2 each).
        feature_net: an ``nn.Module`` with an int ``num_features`` (e.g. :class:`FeatureNet`); default
            :func:`pooled_pixels` (generic; pass your domain's network, e.g. ``captum_cfx.zoo.mnist_features()``).
        batch_size: images per feature batch.

    Shape:
        - real: ``(N, C, H, W)``; fake: ``(M, C, H, W)``; ``values``: ``(1,)``, the FID itself.

    Examples::

        >>> import torch
        >>> from captum_cfx.metrics import FeatureNet, fid
        >>> net = FeatureNet(lambda x: x.mean((2, 3)), num_features=1)   # one feature: mean brightness
        >>> real = torch.linspace(0, 1, 11).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
        >>> round(fid(real, real + 0.5, net).value, 4)                  # only the mean moved: 0.5 ** 2
        0.25
    """
    net = _check_feature_net(feature_net, real)
    _check_images(real, "real", 2)
    _check_images(fake, "fake", 2)
    value = _fid_value(net, real, fake, batch_size)
    return MetricResult(torch.tensor([value]), value)


def domain_fid(real: Tensor, fake: Tensor, feature_net: nn.Module | None = None) -> float:
    """:func:`fid` as a float (kept for earlier callers).

    Args:
        real, fake: image batches ``(N, C, H, W)`` in the feature network's input range.
        feature_net: a module with ``num_features``; default :func:`pooled_pixels`.
    """
    return fid(real, fake, feature_net).value


def sfid(originals: Tensor, counterfactuals: Tensor, feature_net: nn.Module | None = None, n_splits: int = 10,
         *, generator: torch.Generator | None = None, batch_size: int = 1000) -> MetricResult:
    """Split-half FID (sFID) between originals and their counterfactuals.

    A counterfactual stays close to its own original, so the FID of counterfactuals against the images
    they were made from is biased low: an identity "explanation" scores 0. sFID (Jeanneret et al.,
    *Diffusion Models for Counterfactual Explanations*, ACCV 2022) removes the pairing: the N pairs are
    split at random into two halves A and B, and the FID of the originals of A against the
    counterfactuals of B and of the originals of B against the counterfactuals of A are averaged. This
    is repeated for ``n_splits`` random splits; the aggregate is their mean.

    Args:
        originals, counterfactuals: paired image batches (row ``i`` of one is made from row ``i`` of the
            other), at least 4 pairs.
        feature_net: as in :func:`fid`.
        n_splits: random splits to average.
        generator: a ``torch.Generator`` for the splits (default: seed 0, so the figure is reproducible).
        batch_size: images per feature batch.

    Shape:
        - originals, counterfactuals: ``(N, C, H, W)``; ``values``: ``(n_splits,)``, one sFID per split.
    """
    net = _check_feature_net(feature_net, originals)
    _check_images(originals, "originals", 4)
    _check_images(counterfactuals, "counterfactuals", 4)
    if originals.shape != counterfactuals.shape:
        raise ValueError(f"`originals` and `counterfactuals` must be paired (same shape); got "
                         f"{tuple(originals.shape)} and {tuple(counterfactuals.shape)}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits <= 0:
        raise ValueError(f"`n_splits` must be a positive int; got {n_splits!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n = originals.shape[0]
    # features once; the splits only regroup them
    with torch.no_grad():
        fo, fc = _features(net, originals, batch_size), _features(net, counterfactuals, batch_size)
    ident = FeatureNet(lambda t: t.flatten(1), fo.shape[1])
    vals = []
    for _ in range(n_splits):
        perm = torch.randperm(n, generator=g).to(fo.device)
        a, b = perm[: n // 2], perm[n // 2 :]
        v = 0.5 * (_fid_value(ident, fo[a].view(len(a), -1, 1, 1), fc[b].view(len(b), -1, 1, 1), batch_size)
                   + _fid_value(ident, fo[b].view(len(b), -1, 1, 1), fc[a].view(len(a), -1, 1, 1), batch_size))
        vals.append(v)
    return MetricResult.of(torch.tensor(vals))


@torch.no_grad()
def manifold_distance(generator: Any, images: Tensor, batch_size: int = 1000) -> MetricResult:
    """Distance to a generator's data manifold: the per-image mean squared reconstruction error.

    ``mean((decode(encode(x)) - x) ** 2)`` per image; aggregate: median. Images the generator can
    reproduce lie on (close to) its manifold. A counterfactual decoded by the *same* generator lies on
    that manifold by construction, so judge a method with a generator it did not use, or read the figure
    next to the one of real images.

    Args:
        generator: a :class:`~captum_cfx.generators.LatentGenerator`.
        images: a batch in the generator's input range.
        batch_size: images per encode/decode batch.

    Shape:
        - images: ``(N, C, H, W)``; ``values``: ``(N,)``.
    """
    if not (hasattr(generator, "encode") and hasattr(generator, "decode")):
        raise TypeError(f"`generator` must be a LatentGenerator with encode/decode; got {type(generator).__name__}")
    _check_images(images, "images", 0)
    lo, hi = getattr(generator, "input_range", None) or (-float("inf"), float("inf"))
    errs = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].clamp(lo, hi)
        rec = generator.decode(generator.encode(x))
        errs.append((rec - x).pow(2).flatten(1).mean(1))
    return MetricResult.of(torch.cat(errs) if errs else torch.zeros(0), agg="median")
