"""User factories for the CLI test (`module:factory` paths)."""

import torch
from torch import nn

from captum_cfx import VAEGenerator

from .conftest import TinyVAE


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def tiny_generator() -> VAEGenerator:
    torch.manual_seed(0)
    return VAEGenerator(TinyVAE(d=4, s=28), image_shape=(1, 28, 28))


def not_a_model() -> str:
    return "model"


def rgb_model() -> nn.Module:
    """A 5-class classifier of 3x8x8 images (nothing MNIST about it)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))


def rgb_generator() -> VAEGenerator:
    """A 3-channel 8x8 VAE that declares no image shape: the CLI reads the shape from the data."""
    torch.manual_seed(0)
    return VAEGenerator(TinyVAE(d=4, c=3, s=8))
