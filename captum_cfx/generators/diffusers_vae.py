"""Adapter for diffusers' ``AutoencoderKL`` and ``VQModel`` (loaded offline with ``from_pretrained``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from captum_cfx.generators.base import Latent, LatentGenerator, require_range

__all__ = ["DiffusersVAEGenerator"]


class DiffusersVAEGenerator(LatentGenerator):
    """A diffusers ``AutoencoderKL`` (posterior mean) or ``VQModel`` (pre-quantisation latent).

    diffusers autoencoders work on images in ``[-1, 1]``; this adapter converts from and to the
    explained model's ``input_range``. Latents are multiplied by the model's ``scaling_factor``
    (as diffusers pipelines do), so the free part has roughly unit scale.

    Args:
        model: a ``diffusers.AutoencoderKL`` or ``diffusers.VQModel``.
        input_range: the images' value range (default ``(0, 1)``).
        image_shape: optional ``(C, H, W)`` for input checks.

    Shape:
        - encode: ``(N, C, H, W) -> Latent(free=(N, latent_channels, H / f, W / f))``
        - decode: back to ``(N, C, H, W)`` in ``input_range``.

    Examples::

        >>> import torch
        >>> from diffusers import AutoencoderKL
        >>> from captum_cfx.generators import DiffusersVAEGenerator
        >>> vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2,
        ...                     sample_size=8)
        >>> gen = DiffusersVAEGenerator(vae)
        >>> gen.encode(torch.rand(2, 3, 8, 8)).free.shape
        torch.Size([2, 2, 8, 8])
    """

    def __init__(self, model: Any, input_range: tuple[float, float] = (0.0, 1.0),
                 image_shape: tuple[int, int, int] | None = None) -> None:
        from diffusers import AutoencoderKL, VQModel

        if not isinstance(model, (AutoencoderKL, VQModel)):
            raise TypeError(f"`model` must be a diffusers AutoencoderKL or VQModel; got {type(model).__name__}")
        require_range(input_range, type(self).__name__)
        if image_shape is None:
            c = model.config.in_channels
            s = model.config.sample_size
            image_shape = (c, s, s) if isinstance(s, int) else None
            image_shape = None  # sample_size is a hint, not a constraint, in diffusers
        super().__init__(input_range, image_shape)
        self.model = model
        self.kind = "kl" if isinstance(model, AutoencoderKL) else "vq"
        sf = getattr(model.config, "scaling_factor", 1.0)
        self.scaling_factor = float(sf if sf is not None else 1.0)

    @classmethod
    def from_pretrained(cls, path: str | Path, kind: str | None = None, **kwargs: Any) -> DiffusersVAEGenerator:
        """Load a local diffusers folder (``config.json`` + safetensors) offline.

        Args:
            path: a local folder written by ``save_pretrained``.
            kind: ``"kl"`` or ``"vq"``; read from ``config.json``'s ``_class_name`` when omitted.
            kwargs: passed to this class (``input_range``, ``image_shape``).
        """
        import json

        from diffusers import AutoencoderKL, VQModel

        p = Path(path)
        if not (p / "config.json").is_file():
            raise ValueError(f"`path` must be a local diffusers model folder with config.json; got {str(path)!r}")
        if not any(p.glob("*.safetensors")):
            found = sorted(q.name for q in p.iterdir() if q.is_file())[:8]
            raise ValueError(f"`path` {str(path)!r} holds no .safetensors weights (found {found}); captum_cfx loads "
                             "safetensors only, never pickles (.bin, .pt, .ckpt)")
        try:
            meta = json.loads((p / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"`path`: {str(p / 'config.json')!r} is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"`path`: {str(p / 'config.json')!r} must hold a JSON object")
        if kind is None:
            kind = "vq" if meta.get("_class_name") == "VQModel" else "kl"
        if kind not in ("kl", "vq"):
            raise ValueError(f"`kind` must be 'kl' or 'vq'; got {kind!r}")
        model_cls = AutoencoderKL if kind == "kl" else VQModel
        model = model_cls.from_pretrained(str(p), local_files_only=True, use_safetensors=True)
        return cls(model.eval(), **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        """Write the wrapped diffusers model with ``save_pretrained`` (safetensors)."""
        self.model.save_pretrained(str(path), safe_serialization=True)

    def _to_model_range(self, x: Tensor) -> Tensor:
        lo, hi = self.input_range
        return (x - lo) / (hi - lo) * 2 - 1

    def _from_model_range(self, x: Tensor) -> Tensor:
        lo, hi = self.input_range
        return (x.clamp(-1, 1) + 1) / 2 * (hi - lo) + lo

    def encode(self, x: Tensor) -> Latent:
        self.check_images(x, "x")
        xm = self._to_model_range(x)
        if self.kind == "kl":
            z = self.model.encode(xm).latent_dist.mean
        else:
            z = self.model.encode(xm).latents
        return Latent(z * self.scaling_factor)

    def decode(self, latent: Latent | Tensor) -> Tensor:
        z = self._as_latent(latent).free / self.scaling_factor
        return self._from_model_range(self.model.decode(z).sample)
