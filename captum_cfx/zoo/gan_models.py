"""Architectures of the shipped GANs (built from a JSON-able ``**config``).

The MNIST GAN follows the StyleGAN convention of a ``mapping`` network ``z -> w`` and a ``synthesis``
network ``w -> image``, so :class:`~captum_cfx.generators.GANGenerator` can search either space.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MNISTGAN", "MNISTGANDiscriminator", "MappingNetwork", "MNISTSynthesis"]


class MappingNetwork(nn.Module):
    """StyleGAN-style mapping MLP: ``z`` normalised to unit RMS, then ``layers`` LeakyReLU layers.

    Shape:
        - input: ``(N, z_dim)``; output: ``(N, w_dim)``.
    """

    def __init__(self, z_dim: int = 64, w_dim: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(z_dim if i == 0 else w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        return self.net(z)


class MNISTSynthesis(nn.Module):
    """DCGAN synthesis network ``w -> (N, 1, 28, 28)`` in ``[0, 1]``: 7x7 -> 14x14 -> 28x28 transposed convs."""

    def __init__(self, w_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        c = 4 * width
        self.fc = nn.Sequential(nn.Linear(w_dim, c * 7 * 7), nn.BatchNorm1d(c * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.BatchNorm2d(c // 2), nn.ReLU(),
            nn.ConvTranspose2d(c // 2, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )  # fmt: skip
        self.c = c

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(w).view(-1, self.c, 7, 7))


class MNISTGAN(nn.Module):
    """The shipped MNIST GAN's generator: ``synthesis(mapping(z))``.

    Args:
        z_dim: size of the prior latent ``z ~ N(0, I)``.
        w_dim: size of the intermediate latent ``w`` (the W space).
        width: channel multiplier of the synthesis network.
        mapping_layers: depth of the mapping MLP.

    Shape:
        - input: ``(N, z_dim)``; output: ``(N, 1, 28, 28)`` in ``[0, 1]``.
    """

    def __init__(self, z_dim: int = 64, w_dim: int = 64, width: int = 32, *, mapping_layers: int = 3) -> None:
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.synthesis = MNISTSynthesis(w_dim, width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))


class MNISTGANDiscriminator(nn.Module):
    """DCGAN discriminator (used only for training; not shipped): two strided convs and a linear logit."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * w * 7 * 7, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)
