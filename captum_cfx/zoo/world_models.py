"""Architectures of the models shipped for the synthetic worlds (squares and the attribute world).

Each is built from a JSON-able config (``**config``) and resolved by the zoo as
``"ClassName"`` (a name in ``captum_cfx.zoo.MODEL_CLASSES``). All take ``(N, 3, 32, 32)`` images in ``[0, 1]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SquaresRegressor", "WorldClassifier", "WorldFactorAE", "WorldOracle", "WorldVAE"]


def _conv(cin: int, cout: int, stride: int = 1, bn: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ELU() if not bn else nn.ReLU())
    return layers


class WorldOracle(nn.Module):
    """The attribute oracle of :class:`~captum_cfx.datasets.AttributeWorld`: one output per factor.

    ``forward`` returns ``(N, 9)`` logits (binary factors: log-odds; continuous factors: the logit of
    the value in ``[0, 1]``), so every column is differentiable and ``sigmoid`` gives factor units.
    :meth:`predict` returns a factor table like the world's (binary columns thresholded at 0.5).

    Shape:
        - input: ``(N, 3, 32, 32)`` in ``[0, 1]``; output: ``(N, num_factors)``.
    """

    def __init__(self, width: int = 16, num_factors: int = 9, binary: tuple[int, ...] | list[int] = (1, 2, 3, 4, 5)
                 ) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            *_conv(3, w, bn=True), *_conv(w, 2 * w, 2, bn=True), *_conv(2 * w, 2 * w, 2, bn=True),
            *_conv(2 * w, 4 * w, 2, bn=True), nn.Flatten(), nn.Linear(4 * w * 16, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, num_factors)
        self.register_buffer("binary_mask", torch.zeros(num_factors, dtype=torch.bool), persistent=False)
        self.binary_mask[list(binary)] = True

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Factor table estimate ``(N, num_factors)``: binary columns in {0, 1}, continuous in ``[0, 1]``."""
        p = torch.sigmoid(self(x))
        return torch.where(self.binary_mask, (p > 0.5).to(p.dtype), p)


class WorldClassifier(nn.Module):
    """A small binary image classifier (two logits), used for the planted spurious correlation.

    ``pool > 1`` average-pools the input first (a low-resolution classifier, which sees small details
    such as the mouth less sharply than large ones such as eyeglasses).

    Shape:
        - input: ``(N, 3, 32, 32)`` in ``[0, 1]``; output: ``(N, 2)`` logits.
    """

    def __init__(self, width: int = 16, hidden: int = 64, pool: int = 1) -> None:
        super().__init__()
        w = width
        side = 32 // pool
        self.net = nn.Sequential(
            nn.AvgPool2d(pool) if pool > 1 else nn.Identity(),
            *_conv(3, w, 2 if side > 8 else 1), *_conv(w, 2 * w, 2 if side > 16 else 1), *_conv(2 * w, 2 * w, 2),
            nn.Flatten(), nn.Linear(2 * w * 16, hidden), nn.ELU(), nn.Linear(hidden, 2),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SquaresRegressor(nn.Module):
    """A regressor for the squares target (inner intensity), output ``(N, 1)`` in ``[0, 1]``.

    ``arch="cnn"`` is the model to explain (strided ELU convolutions); ``arch="pool"`` is the
    independent oracle (batch-norm ReLU convolutions with max pooling, a different seed).
    """

    def __init__(self, width: int = 16, arch: str = "cnn") -> None:
        super().__init__()
        w = width
        if arch == "cnn":
            self.net = nn.Sequential(
                *_conv(3, w, 2), *_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w, 2),
                nn.Flatten(), nn.Linear(2 * w * 16, 64), nn.ELU(), nn.Linear(64, 1),
            )  # fmt: skip
        elif arch == "pool":
            self.net = nn.Sequential(
                *_conv(3, w, bn=True), nn.MaxPool2d(2), *_conv(w, 2 * w, bn=True), nn.MaxPool2d(2),
                *_conv(2 * w, 2 * w, bn=True), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(2 * w, 1),
            )  # fmt: skip
        else:
            raise ValueError(f"`arch` must be 'cnn' or 'pool'; got {arch!r}")

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x))


def _encoder(w: int, out: int) -> nn.Sequential:
    """Three stride-2 convolutions (32 -> 4 pixels) and a linear layer to ``out`` values (the world autoencoders)."""
    return nn.Sequential(
        nn.Conv2d(3, w, 4, 2, 1), nn.ELU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ELU(),
        nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ELU(), nn.Flatten(), nn.Linear(4 * w * 16, out),
    )  # fmt: skip


def _decoder(w: int, latent: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The decoder of the world autoencoders: a linear layer to a 4x4 map, then three stride-2 transposed
    convolutions (4 -> 32 pixels) and a 3x3 convolution to RGB logits."""
    fc = nn.Sequential(nn.Linear(latent, 4 * w * 16), nn.ELU())
    deconv = nn.Sequential(
        nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ELU(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ELU(),
        nn.ConvTranspose2d(w, w, 4, 2, 1), nn.ELU(), nn.Conv2d(w, 3, 3, padding=1),
    )  # fmt: skip
    return fc, deconv


class WorldVAE(nn.Module):
    """A convolutional VAE for 32x32 RGB world images.

    ``encode(x)`` returns ``(mean, logvar)``; ``decode(z)`` returns images in ``[0, 1]``.

    Shape:
        - x: ``(N, 3, 32, 32)`` in ``[0, 1]``; z: ``(N, latent_dim)``.
    """

    def __init__(self, latent_dim: int = 64, width: int = 24) -> None:
        super().__init__()
        w = width
        self.latent_dim, self._w = latent_dim, w
        self.encoder = _encoder(w, 2 * latent_dim)
        self.fc, self.deconv = _decoder(w, latent_dim)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(-1, 4 * self._w, 4, 4))

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[0])


class WorldFactorAE(nn.Module):
    """An attribute-coded autoencoder for 32x32 world images: each latent coordinate is one factor.

    Trained with the factor table as supervision, like an attribute-conditioned decoder (Fader Networks,
    Lample et al. 2017): the encoder regresses each factor's code ``2 f - 1`` (binary factors at -1 / +1,
    continuous ones in ``[-1, 1]``), the decoder draws the image of a code. Unlike :class:`WorldVAE`, whose
    64 coordinates mix the factors, moving one coordinate here changes one factor, which is what
    :class:`~captum_cfx.LatentCoordinateSearch` needs. The world draws every image from its nine factors, so
    no residual code is needed; a real data set would add one for what its labels do not name.

    Shape:
        - x: ``(N, 3, 32, 32)`` in ``[0, 1]``; z: ``(N, num_factors)``, about ``[-1, 1]``.
    """

    def __init__(self, num_factors: int = 9, width: int = 16) -> None:
        super().__init__()
        w = width
        self.latent_dim, self._w = num_factors, w
        self.encoder = _encoder(w, num_factors)
        self.fc, self.deconv = _decoder(w, num_factors)

    def encode(self, x: Tensor) -> Tensor:
        """The factor code ``(N, num_factors)``."""
        return self.encoder(x)

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(-1, 4 * self._w, 4, 4))

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))
