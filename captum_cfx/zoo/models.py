"""Architectures of the shipped models. Each is built from a JSON-able config (``**config``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MNISTClassifier", "MNISTOracle", "MNISTVAE"]


class MNISTClassifier(nn.Module):
    """The MNIST classifier that the examples explain: a small strided CNN with ELU units (logits out).

    Smooth activations give the latent attack useful gradients everywhere.

    Shape:
        - input: ``(N, 1, 28, 28)`` in ``[0, 1]``.
        - output: ``(N, 10)`` logits.
    """

    def __init__(self, width: int = 32, hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2),
            nn.ELU(),
            nn.Conv2d(w, 2 * w, 5, stride=2, padding=2),
            nn.ELU(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * w * 7 * 7, hidden),
            nn.ELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MNISTOracle(nn.Module):
    """An independent MNIST classifier (different architecture, seed and units) used as a judge.

    VGG-style 3x3 convolutions with batch norm, max pooling and global average pooling; its
    penultimate layer (:meth:`features`) is the domain feature space for realism metrics.

    Shape:
        - input: ``(N, 1, 28, 28)`` in ``[0, 1]``.
        - output: ``(N, 10)`` logits; :meth:`features` gives ``(N, num_features)``.
    """

    def __init__(self, width: int = 32, num_features: int = 128) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, num_features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(num_features, 10)
        self.num_features = num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, ``(N, num_features)``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MNISTVAE(nn.Module):
    """A convolutional VAE for MNIST with a Bernoulli decoder.

    ``encode(x)`` returns ``(mean, logvar)``; ``decode(z)`` returns images in ``[0, 1]``.

    Shape:
        - x: ``(N, 1, 28, 28)`` in ``[0, 1]``; z: ``(N, latent_dim)``.
    """

    def __init__(self, latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        w = width
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Flatten(),
            nn.Linear(2 * w * 7 * 7, 256),
            nn.ELU(),
            nn.Linear(256, 2 * latent_dim),
        )
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * w * 7 * 7), nn.ELU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1),
            nn.ELU(),
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),
        )
        self._w = w

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 2 * self._w, 7, 7)
        return self.deconv(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])
