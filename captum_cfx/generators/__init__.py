"""Latent spaces: one protocol (:class:`LatentGenerator`) and adapters for common generative models."""

from captum_cfx.generators.autoencoder import AutoencoderGenerator, VAEGenerator
from captum_cfx.generators.base import Latent, LatentGenerator
from captum_cfx.generators.ddim import DDIMGenerator
from captum_cfx.generators.diffae import DiffusionAutoencoder, SemanticEncoder
from captum_cfx.generators.diffusers_vae import DiffusersVAEGenerator
from captum_cfx.generators.gan import GANGenerator, GANInversionConfig, ProjectionOutput

__all__ = [
    "AutoencoderGenerator",
    "DDIMGenerator",
    "DiffusersVAEGenerator",
    "DiffusionAutoencoder",
    "GANGenerator",
    "GANInversionConfig",
    "Latent",
    "LatentGenerator",
    "OfficialDiffusionAutoencoder",
    "ProjectionOutput",
    "SemanticEncoder",
    "VAEGenerator",
]


def __getattr__(name: str) -> object:
    # the official Diff-AE network is a diffusers ModelMixin: import diffusers only when it is asked for
    if name == "OfficialDiffusionAutoencoder":
        from captum_cfx.generators.diffae_official import OfficialDiffusionAutoencoder

        return OfficialDiffusionAutoencoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
