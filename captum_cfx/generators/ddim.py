"""DDIM latent spaces from diffusers models: deterministic inversion to ``x_T`` and differentiable sampling.

:class:`DDIMGenerator` wraps any unconditional diffusers ``UNet2DModel`` with a ``DDIMScheduler``:
``encode`` runs deterministic DDIM inversion (eta = 0) to ``x_T`` (or to an intermediate noise level),
``decode`` runs DDIM sampling back to an image and is differentiable with respect to ``x_T``.
:class:`DiffusionAutoencoder` (in ``diffae.py``) adds a semantic code on top of the same sampler.

Backpropagating through many denoising steps costs memory that grows with the number of steps. With
``checkpoint=True`` each step is recomputed during the backward pass (``torch.utils.checkpoint``), so
only each step's input is kept and peak memory stays flat in the number of steps. ``autocast`` runs the
UNet under ``torch.autocast`` (bf16/fp16 on CUDA).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from captum_cfx._validation import check_float
from captum_cfx.generators.base import Latent, LatentGenerator, require_range

__all__ = ["DDIMGenerator", "DDIMSampler"]


class DDIMSampler(torch.nn.Module):
    """Deterministic DDIM sampling and inversion over a diffusers UNet (epsilon prediction).

    Args:
        unet: a diffusers ``UNet2DModel``.
        scheduler: a diffusers ``DDIMScheduler`` (its ``alphas_cumprod`` and timestep spacing are used).
        num_inference_steps: number of DDIM steps between ``x_0`` and the encoding level.
        encode_level: fraction of the diffusion (0, 1] that ``encode`` inverts to (1 = pure noise ``x_T``).
        checkpoint: recompute each denoising step in the backward pass (memory flat in the steps).
        autocast: ``None`` or a dtype (``torch.bfloat16``/``torch.float16``) for the UNet on CUDA.
    """

    def __init__(self, unet: Any, scheduler: Any, num_inference_steps: int = 10, *, encode_level: float = 1.0,
                 checkpoint: bool = True, autocast: torch.dtype | None = None) -> None:
        super().__init__()
        from diffusers import DDIMScheduler, UNet2DModel

        if not isinstance(unet, UNet2DModel):
            raise TypeError(f"`unet` must be a diffusers UNet2DModel; got {type(unet).__name__}")
        if not isinstance(scheduler, DDIMScheduler):
            raise TypeError(f"`scheduler` must be a diffusers DDIMScheduler; got {type(scheduler).__name__}")
        if scheduler.config.prediction_type != "epsilon":
            raise ValueError(f"`scheduler.prediction_type` must be 'epsilon'; got {scheduler.config.prediction_type!r}")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive int; got {num_inference_steps!r}")
        check_float(encode_level, "encode_level", low=0, high=1, low_open=True)
        self.unet = unet
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.encode_level = float(encode_level)
        self.checkpoint = bool(checkpoint)
        self.autocast = autocast

    def timesteps(self) -> list[int]:
        """Increasing timesteps ``t_1 < ... < t_S`` visited between ``x_0`` and the encoding level."""
        T = self.scheduler.config.num_train_timesteps
        top = max(1, round(self.encode_level * T)) - 1
        ts = torch.linspace(0, top, self.num_inference_steps + 1).round().long().tolist()[1:]
        return sorted(set(ts)) or [top]

    def alpha_bar(self, t: int, ref: Tensor) -> Tensor:
        """The scheduler's cumulative ``alpha_bar_t`` (1 for ``t = -1``, the clean image), on ``ref``'s device/dtype."""
        if t < 0:
            return torch.ones((), device=ref.device, dtype=ref.dtype)
        return self.scheduler.alphas_cumprod[t].to(device=ref.device, dtype=ref.dtype)

    def eps(self, x: Tensor, t: int, cond: Tensor | None) -> Tensor:
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if self.autocast is not None and x.device.type == "cuda":
            with torch.autocast("cuda", dtype=self.autocast):
                out = self.unet(x, tt, class_labels=cond).sample
            return out.to(x.dtype)
        return self.unet(x, tt, class_labels=cond).sample

    def step(self, x: Tensor, t: int, t_next: int, *, cond: Tensor | None = None) -> Tensor:
        """Move ``x`` from timestep ``t`` to ``t_next`` (either direction) with the eps predicted at ``t``."""
        a_t, a_n = self.alpha_bar(t, x), self.alpha_bar(t_next, x)
        e = self.eps(x, max(t, 0), cond)  # t = -1 is the clean image; its eps is queried at step 0
        x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        return a_n.sqrt() * x0 + (1 - a_n).sqrt() * e

    def _run(self, x: Tensor, cond: Tensor | None, pairs: list[tuple[int, int]]) -> Tensor:
        for t, t_next in pairs:
            needs_grad = x.requires_grad or (cond is not None and cond.requires_grad)
            if self.checkpoint and torch.is_grad_enabled() and needs_grad:
                if cond is None:
                    x = _checkpoint(lambda a, t=t, tn=t_next: self.step(a, t, tn), x, use_reentrant=False)
                else:
                    x = _checkpoint(lambda a, c, t=t, tn=t_next: self.step(a, t, tn, cond=c), x, cond,
                                      use_reentrant=False)
            else:
                x = self.step(x, t, t_next, cond=cond)
        return x

    def sample(self, x_T: Tensor, cond: Tensor | None = None) -> Tensor:
        """DDIM sampling from the encoding level down to ``x_0`` (model range ``[-1, 1]``)."""
        ts = self.timesteps()
        pairs = [(ts[i], ts[i - 1] if i > 0 else -1) for i in range(len(ts) - 1, -1, -1)]
        return self._run(x_T, cond, pairs)

    def invert(self, x0: Tensor, cond: Tensor | None = None) -> Tensor:
        """Deterministic DDIM inversion from ``x_0`` up to the encoding level (eps taken at the lower step)."""
        ts = self.timesteps()
        # the exact reverse of `sample`'s path; eps is taken at the lower end of each step
        pairs = [(ts[i - 1] if i > 0 else -1, ts[i]) for i in range(len(ts))]
        with torch.no_grad():
            x = x0
            for t, t_next in pairs:
                x = self.step(x, t, t_next, cond=cond)
        return x


def check_sample_size(x: Tensor, unet: Any, argument: str, owner: str) -> None:
    """A clear ``ValueError`` when ``x``'s height and width are not the UNet's ``sample_size``.

    A diffusers UNet is convolutional and would run on other sizes, but it was trained at one: a DDIM
    latent space is defined only at that size.
    """
    s = getattr(unet.config, "sample_size", None)
    if s is None:
        return
    hw = (int(s), int(s)) if isinstance(s, int) else tuple(int(v) for v in s)
    if not isinstance(x, Tensor) or x.dim() != 4:
        return  # rank and type are checked where the images are
    if tuple(x.shape[-2:]) != hw:
        raise ValueError(f"{owner}: `{argument}` must be {hw[0]}x{hw[1]}, the UNet's sample_size; got "
                         f"{x.shape[-2]}x{x.shape[-1]} (resize the images to {hw[0]}x{hw[1]}, or use a UNet built "
                         f"with sample_size={x.shape[-2] if x.shape[-2] == x.shape[-1] else tuple(x.shape[-2:])})")


def to_model_range(x: Tensor, rng: tuple[float, float]) -> Tensor:
    """Images from their range ``rng`` to the diffusion model's ``[-1, 1]``."""
    return (x - rng[0]) / (rng[1] - rng[0]) * 2 - 1


def from_model_range(x: Tensor, rng: tuple[float, float]) -> Tensor:
    """Images from the diffusion model's ``[-1, 1]`` (clamped) back to the range ``rng``."""
    return (x.clamp(-1, 1) + 1) / 2 * (rng[1] - rng[0]) + rng[0]


class DDIMGenerator(LatentGenerator):
    """The DDIM latent space of an unconditional diffusers ``UNet2DModel``: the free part is ``x_T``.

    Args:
        unet: a diffusers ``UNet2DModel`` (unconditional, epsilon prediction).
        scheduler: a diffusers ``DDIMScheduler``.
        num_inference_steps: DDIM steps for both inversion and sampling (e.g. 10-20).
        encode_level: invert to this fraction of the diffusion (1 = pure noise ``x_T``).
        checkpoint: gradient checkpointing across denoising steps (memory flat in the steps).
        autocast: ``None`` or a CUDA autocast dtype.
        input_range: the explained model's image range (diffusers works in ``[-1, 1]``).

    Shape:
        - encode: ``(N, C, H, W) -> Latent(free=x_T (N, C, H, W))``; decode: back to ``(N, C, H, W)``.

    Examples::

        >>> from diffusers import DDIMScheduler, UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
        ...                    norm_num_groups=4, layers_per_block=1,
        ...                    down_block_types=("DownBlock2D", "DownBlock2D"),
        ...                    up_block_types=("UpBlock2D", "UpBlock2D"))
        >>> gen = DDIMGenerator(unet, DDIMScheduler(num_train_timesteps=100), num_inference_steps=2)
        >>> gen.decode(gen.encode(torch.rand(2, 1, 8, 8))).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, unet: Any, scheduler: Any, num_inference_steps: int = 10, *, encode_level: float = 1.0,
                 checkpoint: bool = True, autocast: torch.dtype | None = None,
                 input_range: tuple[float, float] = (0.0, 1.0)) -> None:
        require_range(input_range, type(self).__name__)
        sampler = DDIMSampler(unet, scheduler, num_inference_steps, encode_level=encode_level,
                              checkpoint=checkpoint, autocast=autocast)
        c, s = unet.config.in_channels, unet.config.sample_size
        super().__init__(input_range, (c, s, s) if isinstance(s, int) else None)
        self.sampler = sampler

    @property
    def unet(self) -> Any:
        return self.sampler.unet

    def encode(self, x: Tensor) -> Latent:
        check_sample_size(x, self.unet, "x", type(self).__name__)
        self.check_images(x, "x")
        return Latent(self.sampler.invert(to_model_range(x, self.input_range)))

    def decode(self, latent: Latent | Tensor) -> Tensor:
        lat = self._as_latent(latent)
        check_sample_size(lat.free, self.unet, "latent", type(self).__name__)
        return from_model_range(self.sampler.sample(lat.free), self.input_range)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``unet/`` and ``scheduler/`` with diffusers' ``save_pretrained`` plus ``captum_cfx.json``."""
        p = Path(path)
        self.sampler.unet.save_pretrained(str(p / "unet"), safe_serialization=True)
        self.sampler.scheduler.save_pretrained(str(p / "scheduler"))
        (p / "captum_cfx.json").write_text(json.dumps({
            "num_inference_steps": self.sampler.num_inference_steps, "encode_level": self.sampler.encode_level,
            "input_range": list(self.input_range)}, indent=2))

    @classmethod
    def from_weights(cls, weights: torch.nn.Module, **kwargs: Any) -> DDIMGenerator:
        """Wrap a zoo weight container (``unet``, ``scheduler_config``), e.g.
        :class:`captum_cfx.zoo.diffusion_models.DDPMWeights`; ``kwargs`` go to the constructor."""
        from diffusers import DDIMScheduler

        for part in ("unet", "scheduler_config"):
            if not hasattr(weights, part):
                raise TypeError(f"`weights` must carry `{part}` (a DDPMWeights-like module); "
                                f"got {type(weights).__name__}")
        return cls(weights.unet, DDIMScheduler(**weights.scheduler_config), **kwargs).eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> DDIMGenerator:
        """Load a local folder with ``unet/`` and ``scheduler/`` (or a UNet folder plus a default DDIM
        scheduler); ``kwargs`` override the saved settings. Offline: ``local_files_only=True``."""
        from diffusers import DDIMScheduler, UNet2DModel

        p = Path(path)
        unet_dir = p / "unet" if (p / "unet").is_dir() else p
        if not (unet_dir / "config.json").is_file():
            raise ValueError(f"`path` must be a local diffusers folder with unet/config.json; got {str(path)!r}")
        unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True, use_safetensors=True)
        sched = (DDIMScheduler.from_pretrained(str(p / "scheduler"), local_files_only=True)
                 if (p / "scheduler").is_dir() else DDIMScheduler())
        saved = json.loads((p / "captum_cfx.json").read_text()) if (p / "captum_cfx.json").is_file() else {}
        if "input_range" in saved:
            saved["input_range"] = tuple(saved["input_range"])
        return cls(unet.eval(), sched, **{**saved, **kwargs})
