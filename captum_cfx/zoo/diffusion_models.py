"""Weight containers for the shipped diffusion models (one safetensors file each).

:class:`DiffAEWeights` holds a diffusion autoencoder's semantic encoder, conditioned ``UNet2DModel`` and
``z_sem`` projection; :class:`DDPMWeights` an unconditional ``UNet2DModel``. Both carry their noise
schedule's config, so that :func:`captum_cfx.zoo.load_generator` can wrap them in
:class:`~captum_cfx.generators.DiffusionAutoencoder` / :class:`~captum_cfx.generators.DDIMGenerator`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from captum_cfx.generators.diffae import SemanticEncoder

__all__ = ["DDPMWeights", "DiffAEWeights", "ddim_scheduler"]


def _unet(config: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DModel

    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return UNet2DModel(**cfg)


def ddim_scheduler(config: dict[str, Any]) -> Any:
    """A diffusers ``DDIMScheduler`` with the training schedule ``config`` (``num_train_timesteps``, betas)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**config)


class DDPMWeights(nn.Module):
    """An unconditional epsilon-prediction ``UNet2DModel`` and its noise schedule.

    Args:
        unet: ``UNet2DModel`` keyword arguments.
        scheduler: ``DDPMScheduler``/``DDIMScheduler`` keyword arguments (the training schedule).
    """

    def __init__(self, unet: dict[str, Any], scheduler: dict[str, Any]) -> None:
        super().__init__()
        self.unet = _unet(unet)
        self.scheduler_config = dict(scheduler)


class DiffAEWeights(nn.Module):
    """A diffusion autoencoder's parts: semantic encoder, ``z_sem`` projection and conditioned UNet.

    Args:
        unet: ``UNet2DModel`` keyword arguments (must include ``class_embed_type="identity"``).
        encoder: :class:`~captum_cfx.generators.SemanticEncoder` keyword arguments.
        z_dim: size of the semantic code.
        scheduler: the training noise schedule's keyword arguments.
    """

    def __init__(self, unet: dict[str, Any], encoder: dict[str, Any], z_dim: int, *, scheduler: dict[str, Any]) -> None:
        super().__init__()
        self.unet = _unet(unet)
        self.encoder = SemanticEncoder(**{**encoder, "z_dim": z_dim})
        self.proj = nn.Linear(z_dim, self.unet.config.block_out_channels[0] * 4)
        self.z_dim = z_dim
        self.scheduler_config = dict(scheduler)

    def cond(self, z: Any) -> Any:
        return self.proj(z)
