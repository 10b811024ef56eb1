"""Presets: the shipped networks wired into the generic classes.

The generic layers (``attr``, ``generators``, ``metrics``, ...) know no data set and load no shipped network:
a feature network or a distance is an argument, with a generic pixel default. The MNIST, attribute-world and
squares choices live here, and the CLI's MNIST path, ``compare``, the benchmarks and the tutorials pass them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from captum_cfx.attr.global_directions import OracleFeatureDistance
from captum_cfx.metrics.realism import FeatureNet
from captum_cfx.zoo._registry import load_pretrained

__all__ = ["mnist_distance", "mnist_features", "squares_features", "world_features"]


def mnist_features() -> FeatureNet:
    """MNIST features: the shipped ``mnist-oracle``'s penultimate layer (128-d), for the realism metrics.

    Shape:
        - input: ``(N, 1, 28, 28)`` in ``[0, 1]``; output: ``(N, 128)``.
    """
    oracle = load_pretrained("mnist-oracle")
    return FeatureNet(oracle.features, oracle.num_features, oracle).eval()


def world_features() -> FeatureNet:
    """Attribute-world features: the shipped ``world-oracle``'s penultimate layer (128-d)."""
    oracle = load_pretrained("world-oracle")
    return FeatureNet(oracle.body, oracle.head.in_features, oracle).eval()


def squares_features() -> FeatureNet:
    """Squares features: the shipped ``squares-oracle``'s pooled convolution features (32-d)."""
    oracle = load_pretrained("squares-oracle")
    body = oracle.net[:-1]
    return FeatureNet(body, oracle.net[-1].in_features, oracle).eval()


def mnist_distance() -> OracleFeatureDistance:
    """The MNIST perceptual distance of :class:`~captum_cfx.GlobalCounterfactualDirections`: mean squared
    distance in :func:`mnist_features` (a shippable stand-in for LPIPS on digits)."""
    return OracleFeatureDistance(mnist_features())


def _mnist_oracle_body() -> nn.Module:
    """The perceptual term of the shipped GAN's inversion: ``mnist-oracle``'s penultimate layer, frozen."""
    return load_pretrained("mnist-oracle").body.requires_grad_(False)


#: feature networks a zoo generator config may name (``"feature_network": "<name>"``)
FEATURE_NETWORKS: dict[str, Callable[[], Callable[[Tensor], Tensor]]] = {
    "mnist-oracle": _mnist_oracle_body,
}


def feature_network(name: str) -> Callable[[Tensor], Tensor]:
    """A feature network by the name a zoo generator config gives it (one of :data:`FEATURE_NETWORKS`)."""
    if name not in FEATURE_NETWORKS:
        raise ValueError(f"`feature_network` must name one of {sorted(FEATURE_NETWORKS)}; got {name!r}")
    return FEATURE_NETWORKS[name]()
