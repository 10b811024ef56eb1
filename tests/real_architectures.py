"""The real architecture families at any width: a ResNet (BasicBlock / Bottleneck), a DenseNet, Stable Diffusion's
``AutoencoderKL`` block layout and the ``google/ddpm-celebahq-256`` ``UNet2DModel`` layout.

Shared by ``tests/test_real_architectures.py`` (tiny widths, 64x64 RGB) and ``benchmarks/real_configs.py`` (the
real widths, random weights). Written here rather than imported from timm/torchvision: installing timm upgrades
torch past the pinned version, and torchvision is not a dependency. The layouts follow the published configs:
ResNet-18 ``BasicBlock (2, 2, 2, 2)``, ResNet-50 ``Bottleneck (3, 4, 6, 3)`` (He et al. 2016), DenseNet-121
growth 32, blocks ``(6, 12, 24, 16)`` (Huang et al. 2017), SD-VAE ``block_out_channels (128, 256, 512, 512)``
with 2 layers per block and 4 latent channels, ddpm-celebahq-256 ``(128, 128, 256, 256, 512, 512)`` with
attention at the fifth level down and the second level up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.short = (nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))
                      if stride != 1 or cin != width else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.short(x))


class ResNet(nn.Module):
    """ResNet (7x7 stem, max-pool, four stages, global average pool, linear head).

    Args:
        block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101).
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` (ResNet-18) or ``(3, 4, 6, 3)`` (ResNet-50).
        width: channels of the first stage (64 in the paper); stages double it.
        num_classes: outputs (logits).
        in_channels: image channels.

    Shape:
        - ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(self, block: str = "basic", layers: Sequence[int] = (2, 2, 2, 2), width: int = 64,
                 num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, n in enumerate(layers):
            w = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(cls(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w * cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, bn_size * growth, 1, bias=False),
                                 nn.BatchNorm2d(bn_size * growth), nn.ReLU(),
                                 nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.net(x)], 1)


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al.): dense blocks of bottleneck layers joined by compressing transitions.

    Args:
        growth: channels each layer adds (32 for DenseNet-121).
        blocks: layers per dense block (``(6, 12, 24, 16)`` for DenseNet-121).
        init_features: channels of the stem (64).
        bn_size: bottleneck width factor (4).
        num_classes, in_channels: as in :class:`ResNet`.

    Shape:
        - ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(self, growth: int = 32, blocks: Sequence[int] = (6, 12, 24, 16), init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, init_features, 7, 2, 3, bias=False),
                                   nn.BatchNorm2d(init_features), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        c = init_features
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(_DenseLayer(c, growth, bn_size))
                c += growth
            if i < len(blocks) - 1:
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean((2, 3)))


def resnet18(num_classes: int = 1000, width: int = 64, in_channels: int = 3) -> ResNet:
    return ResNet("basic", (2, 2, 2, 2), width, num_classes, in_channels)


def resnet50(num_classes: int = 1000, width: int = 64, in_channels: int = 3) -> ResNet:
    return ResNet("bottleneck", (3, 4, 6, 3), width, num_classes, in_channels)


def densenet121(num_classes: int = 1000, growth: int = 32, in_channels: int = 3) -> DenseNet:
    return DenseNet(growth, (6, 12, 24, 16), 2 * growth, 4, num_classes, in_channels)


def sd_vae(width: int = 128, sample_size: int = 512, norm_num_groups: int = 32) -> Any:
    """Stable Diffusion's ``AutoencoderKL`` layout (``block_out_channels = width * (1, 2, 4, 4)``, 2 layers per
    block, mid-block attention, 4 latent channels, 8x down-sampling, scaling factor 0.18215), random weights."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(width, 2 * width, 4 * width, 4 * width), layers_per_block=2,
                         act_fn="silu", latent_channels=4, norm_num_groups=norm_num_groups, sample_size=sample_size,
                         scaling_factor=0.18215).eval()


def ddpm_celebahq_unet(width: int = 128, sample_size: int = 256, norm_num_groups: int = 32,
                       class_embed_type: str | None = None) -> Any:
    """The ``google/ddpm-celebahq-256`` ``UNet2DModel`` layout (``block_out_channels = width * (1, 1, 2, 2, 4, 4)``,
    2 layers per block, attention at the fifth level down / second level up), random weights. With
    ``class_embed_type="identity"`` it takes a diffusion autoencoder's semantic condition."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=sample_size, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=tuple(width * m for m in (1, 1, 2, 2, 4, 4)),
                       down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                         "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D",
                                       "UpBlock2D"),
                       norm_num_groups=norm_num_groups, norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False,
                       freq_shift=1, class_embed_type=class_embed_type).eval()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
