"""Realism judged independently of the generator, in a domain feature space that ships with us.

LPIPS and Inception-FID download weights; here the default feature network is the penultimate
layer of the shipped ``mnist-oracle`` (an independent classifier), and any user network works.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from captum_cfx.metrics.basic import MetricResult

__all__ = ["FeatureNet", "domain_fid", "knn_distance", "mnist_features"]


class FeatureNet(nn.Module):
    """Wrap a feature function as a module with ``num_features`` (what torchmetrics' FID needs)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], num_features: int, module: nn.Module | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.num_features = int(num_features)
        self.module = module  # registered so that .to()/.eval() reach it

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x).flatten(1)


def mnist_features() -> FeatureNet:
    """The default MNIST feature network: the shipped oracle's penultimate layer (128-d)."""
    from captum_cfx.zoo import load_pretrained

    oracle = load_pretrained("mnist-oracle")
    return FeatureNet(oracle.features, oracle.num_features, oracle).eval()


@torch.no_grad()
def _features(net: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([net(x[i : i + batch_size]).flatten(1) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def knn_distance(images: Tensor, reference: Tensor, feature_net: Callable[[Tensor], Tensor] | None = None,
                 k: int = 5, exclude_self: bool = False) -> MetricResult:
    """Mean Euclidean distance from each image to its ``k`` nearest reference images in feature space.

    Lower is more realistic. Compare with the same figure for real held-out images. The aggregate is
    the median. ``exclude_self`` drops zero-distance matches (when ``images`` are in ``reference``).
    """
    net = feature_net if feature_net is not None else mnist_features()
    fa, fr = _features(net, images), _features(net, reference)
    d = torch.cdist(fa, fr)
    if exclude_self:
        d = d.masked_fill(d < 1e-6, float("inf"))
    vals = d.topk(k, dim=1, largest=False).values.mean(1)
    return MetricResult.of(vals, agg="median")


def domain_fid(real: Tensor, fake: Tensor, feature_net: nn.Module | None = None) -> float:
    """Fréchet distance between ``real`` and ``fake`` in a domain feature space (torchmetrics' FID).

    Args:
        real, fake: image batches ``(N, C, H, W)`` in the feature network's input range.
        feature_net: a module with ``num_features``; default :func:`mnist_features`.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    net = feature_net if feature_net is not None else mnist_features()
    fid = FrechetInceptionDistance(feature=net, normalize=True)
    with torch.no_grad():
        for i in range(0, len(real), 1000):
            fid.update(real[i : i + 1000], real=True)
        for i in range(0, len(fake), 1000):
            fid.update(fake[i : i + 1000], real=False)
    return float(fid.compute())
