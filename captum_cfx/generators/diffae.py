"""A diffusion autoencoder (Preechakul et al. 2022) built from diffusers blocks.

A semantic encoder maps an image to ``z_sem``; a ``UNet2DModel`` with ``class_embed_type="identity"``
denoises conditioned on ``proj(z_sem)`` (added to its time embedding). ``encode`` returns
``Latent(free=z_sem, fixed={"x_T": DDIM inversion of x conditioned on z_sem})``; ``decode`` samples from
``x_T`` conditioned on ``z_sem`` and is differentiable in ``z_sem`` (and ``x_T``). Methods optimise
``z_sem`` only; decoding one ``z_sem`` with fresh noise ``x_T`` (:meth:`DiffusionAutoencoder.vary`) shows
the stochastic variation the semantic code leaves open.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_cfx.generators.base import Latent, LatentGenerator, require_range
from captum_cfx.generators.ddim import DDIMSampler, check_sample_size, from_model_range, to_model_range

__all__ = ["DiffusionAutoencoder", "SemanticEncoder"]


class SemanticEncoder(nn.Module):
    """A small CNN from images to the semantic code ``z_sem``.

    Args:
        in_channels: the images' channels (the UNet's ``in_channels``; :class:`DiffusionAutoencoder` builds one
            from the UNet's config when given ``encoder=None``).
        z_dim: size of ``z_sem``.
        width: channels of the first convolution.

    Shape:
        - input ``(N, C, H, W)`` in ``[-1, 1]`` (any size: it ends in adaptive pooling); output ``(N, z_dim)``.
    """

    def __init__(self, in_channels: int, z_dim: int = 32, width: int = 32) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("z_dim", z_dim), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive int; got {v!r}")
        self.config = {"in_channels": in_channels, "z_dim": z_dim, "width": width}
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * w, z_dim),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DiffusionAutoencoder(LatentGenerator):
    """Semantic code ``z_sem`` (free) + DDIM noise ``x_T`` (fixed) over a conditioned diffusers UNet.

    Args:
        encoder: maps model-range images ``[-1, 1]`` to ``(N, z_dim)``, e.g. :class:`SemanticEncoder`; ``None``
            builds a :class:`SemanticEncoder` with the UNet's ``in_channels``. Any ``nn.Module`` works and is
            saved by :meth:`save_pretrained`; reload a custom one with ``from_pretrained(path, encoder=module)``.
        unet: a diffusers ``UNet2DModel`` built with ``class_embed_type="identity"``.
        scheduler: a diffusers ``DDIMScheduler``.
        z_dim: size of ``z_sem``; a linear layer maps it to the UNet's time-embedding size.
        num_inference_steps, checkpoint, autocast: as in :class:`~captum_cfx.generators.DDIMGenerator`.
        input_range: the explained model's image range.
        encode_level: how far ``encode`` inverts, as a fraction of the diffusion: 1 (default, as Diff-AE and
            Diff-AE-RE) gives pure noise ``x_T``; below 1 the fixed part is the partly noised image ``x_t``,
            which pins down what ``z_sem`` does not encode (on the squares world, position and background:
            0.5 keeps them where full 10-step inversion does not). ``vary`` needs 1.

    Shape:
        - encode: ``(N, C, H, W) -> Latent(free=(N, z_dim), fixed={"x_T": (N, C, H, W)})``.
        - decode: ``Latent -> (N, C, H, W)`` in ``input_range``.
    """

    def __init__(self, encoder: nn.Module, unet: Any, scheduler: Any, *, z_dim: int, num_inference_steps: int = 10,
                 checkpoint: bool = True, autocast: torch.dtype | None = None,
                 input_range: tuple[float, float] = (0.0, 1.0), encode_level: float = 1.0) -> None:
        from diffusers import UNet2DModel

        if not isinstance(unet, UNet2DModel):
            raise TypeError(f"`unet` must be a diffusers UNet2DModel; got {type(unet).__name__}")
        if unet.config.class_embed_type != "identity":
            raise ValueError("`unet` must be built with class_embed_type='identity' to take z_sem; "
                             f"got {unet.config.class_embed_type!r}")
        require_range(input_range, type(self).__name__)
        c, s = unet.config.in_channels, unet.config.sample_size
        super().__init__(input_range, (c, s, s) if isinstance(s, int) else None)
        if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
            raise ValueError(f"`z_dim` must be a positive int; got {z_dim!r}")
        if encoder is None:
            encoder = SemanticEncoder(c, z_dim)
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"`encoder` must be an nn.Module (or None); got {type(encoder).__name__}")
        cfg = getattr(encoder, "config", None)
        if isinstance(encoder, SemanticEncoder) and cfg["in_channels"] != c:
            raise ValueError(f"`encoder` takes {cfg['in_channels']}-channel images but the UNet's in_channels is "
                             f"{c}: build SemanticEncoder({c}, ...) or pass encoder=None")
        if isinstance(encoder, SemanticEncoder) and cfg["z_dim"] != z_dim:
            raise ValueError(f"`encoder` outputs z_dim={cfg['z_dim']} but `z_dim` is {z_dim}")
        self.encoder = encoder
        self.z_dim = int(z_dim)
        temb = unet.config.block_out_channels[0] * 4
        self.proj = nn.Linear(self.z_dim, temb)
        self.sampler = DDIMSampler(unet, scheduler, num_inference_steps, encode_level=encode_level,
                                   checkpoint=checkpoint, autocast=autocast)

    def cond(self, z_sem: Tensor) -> Tensor:
        """The UNet's class embedding for ``z_sem``."""
        return self.proj(z_sem)

    def encode_semantic(self, x: Tensor) -> Tensor:
        """``z_sem`` only (no inversion), ``(N, z_dim)``."""
        check_sample_size(x, self.sampler.unet, "x", type(self).__name__)
        self.check_images(x, "x")
        return self.encoder(to_model_range(x, self.input_range))

    def encode(self, x: Tensor) -> Latent:
        z = self.encode_semantic(x)
        with torch.no_grad():
            x_T = self.sampler.invert(to_model_range(x, self.input_range), self.cond(z))
        return Latent(z, {"x_T": x_T})

    def decode(self, latent: Latent | Tensor) -> Tensor:
        lat = self._as_latent(latent)
        if "x_T" not in lat.fixed:
            raise ValueError("`latent` must carry fixed['x_T'] (from encode or vary); got only a semantic code")
        check_sample_size(lat.fixed["x_T"], self.sampler.unet, "latent.fixed['x_T']", type(self).__name__)
        return from_model_range(self.sampler.sample(lat.fixed["x_T"], self.cond(lat.free)), self.input_range)

    def vary(self, z_sem: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode each ``z_sem`` with ``n`` fresh Gaussian ``x_T``: ``(N * n, C, H, W)``."""
        if self.sampler.encode_level != 1.0:
            raise ValueError("`vary` draws fresh pure-noise x_T: it needs encode_level=1.0; "
                             f"got encode_level={self.sampler.encode_level}")
        c, s = self.image_shape[0], self.image_shape[1]
        z = z_sem.repeat_interleave(n, 0)
        x_T = torch.randn(len(z), c, s, s, generator=generator, dtype=z.dtype).to(z.device)
        return self.decode(Latent(z, {"x_T": x_T}))

    def save_pretrained(self, path: str | Path) -> None:
        """``unet/`` and ``scheduler/`` (diffusers) + ``semantic.safetensors`` + ``config.json``."""
        from safetensors.torch import save_file

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.sampler.unet.save_pretrained(str(p / "unet"), safe_serialization=True)
        self.sampler.scheduler.save_pretrained(str(p / "scheduler"))
        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state.update({f"proj.{k}": v for k, v in self.proj.state_dict().items()})
        save_file({k: v.contiguous() for k, v in state.items()}, str(p / "semantic.safetensors"))
        enc_cls = type(self.encoder)
        (p / "config.json").write_text(json.dumps({
            "encoder": self.encoder.config if isinstance(self.encoder, SemanticEncoder) else None,
            "encoder_class": f"{enc_cls.__module__}.{enc_cls.__qualname__}", "z_dim": self.z_dim,
            "num_inference_steps": self.sampler.num_inference_steps, "input_range": list(self.input_range),
            "encode_level": self.sampler.encode_level}, indent=2))

    @classmethod
    def from_weights(cls, weights: nn.Module, **kwargs: Any) -> DiffusionAutoencoder:
        """Wrap a zoo weight container (``encoder``, ``unet``, ``proj``, ``z_dim``, ``scheduler_config``),
        e.g. :class:`captum_cfx.zoo.diffusion_models.DiffAEWeights`; ``kwargs`` go to the constructor."""
        from diffusers import DDIMScheduler

        for part in ("encoder", "unet", "proj", "z_dim", "scheduler_config"):
            if not hasattr(weights, part):
                raise TypeError(f"`weights` must carry `{part}` (a DiffAEWeights-like module); "
                                f"got {type(weights).__name__}")
        gen = cls(weights.encoder, weights.unet, DDIMScheduler(**weights.scheduler_config), z_dim=weights.z_dim,
                  **kwargs)
        gen.proj = weights.proj
        return gen.eval()

    @classmethod
    def from_diffae_checkpoint(cls, path: str | Path, template: str | dict[str, Any] = "ffhq256_autoenc",
                               ema: bool = True, *, num_inference_steps: int = 20, **kwargs: Any) -> LatentGenerator:
        """A released official Diff-AE (Lightning ``last.ckpt``, read without running code, or a converted folder)
        as a :class:`~captum_cfx.generators.OfficialDiffusionAutoencoder`; see
        :meth:`OfficialDiffusionAutoencoder.from_diffae_checkpoint
        <captum_cfx.generators.OfficialDiffusionAutoencoder.from_diffae_checkpoint>`."""
        from captum_cfx.generators.diffae_official import OfficialDiffusionAutoencoder

        return OfficialDiffusionAutoencoder.from_diffae_checkpoint(path, template, ema,
                                                                   num_inference_steps=num_inference_steps, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, encoder: nn.Module | None = None, **kwargs: Any) -> DiffusionAutoencoder:
        """Load a folder written by :meth:`save_pretrained` (offline; safetensors only).

        Args:
            path: the folder.
            encoder: for a folder saved with a custom encoder: a freshly built module of the same architecture,
                into which the saved weights are loaded (nothing in the folder names code to import). ``None``
                rebuilds the saved :class:`SemanticEncoder`.
            kwargs: override the saved constructor settings (``num_inference_steps``, ...).
        """
        from diffusers import DDIMScheduler, UNet2DModel

        from captum_cfx._io import load_safetensors

        p = Path(path)
        if not (p / "config.json").is_file() or not (p / "unet").is_dir():
            raise ValueError(f"`path` must be a folder written by DiffusionAutoencoder.save_pretrained; "
                             f"got {str(path)!r}")
        cfg = json.loads((p / "config.json").read_text())
        if encoder is None and cfg.get("encoder") is None:
            raise ValueError(f"`path` was saved with a custom encoder ({cfg.get('encoder_class', 'unknown class')}): "
                             "pass encoder=<a new instance of it> to from_pretrained to load its weights")
        if encoder is not None and not isinstance(encoder, nn.Module):
            raise TypeError(f"`encoder` must be an nn.Module or None; got {type(encoder).__name__}")
        unet = UNet2DModel.from_pretrained(str(p / "unet"), local_files_only=True, use_safetensors=True)
        sched = DDIMScheduler.from_pretrained(str(p / "scheduler"), local_files_only=True)
        enc = encoder if encoder is not None else SemanticEncoder(**cfg["encoder"])
        gen = cls(enc, unet, sched, z_dim=cfg["z_dim"], **{"num_inference_steps": cfg["num_inference_steps"],
                                                     "input_range": tuple(cfg["input_range"]),
                                                     "encode_level": cfg.get("encode_level", 1.0), **kwargs})
        state = load_safetensors(p / "semantic.safetensors", argument="path")
        try:
            gen.encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        except RuntimeError as err:
            raise ValueError(f"`encoder`: the saved encoder weights ({cfg.get('encoder_class')}) do not fit "
                             f"{type(gen.encoder).__name__}: {str(err)[:300]}") from None
        gen.proj.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("proj.")})
        return gen.eval()
