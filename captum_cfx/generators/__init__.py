"""Latent spaces: one protocol (:class:`LatentGenerator`) and adapters for common generative models."""

from captum_cfx.generators.autoencoder import AutoencoderGenerator, VAEGenerator
from captum_cfx.generators.base import Latent, LatentGenerator
from captum_cfx.generators.diffusers_vae import DiffusersVAEGenerator

__all__ = ["AutoencoderGenerator", "DiffusersVAEGenerator", "Latent", "LatentGenerator", "VAEGenerator"]
