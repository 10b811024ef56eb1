"""The released Diffusion Autoencoder checkpoints (Preechakul et al., CVPR 2022) as a captum_cfx latent space.

The Global Counterfactual Directions paper and Diff-AE-RE run on the official Diffusion Autoencoder
(``phizaz/diffae``): released FFHQ-128/256, CelebA-64, bedroom and horse models, and linear CelebA-HQ attribute
classifiers on the semantic code. This module loads them **without running any code from the files**
(:func:`captum_cfx._safe_pickle.load_checkpoint`) into our re-implementation of the network
(:class:`~captum_cfx.generators._beatgans.BeatGANsAutoencoder`) and samples as the official code does:

- the semantic code ``z_sem = encoder(x)`` (``x`` in ``[-1, 1]``);
- deterministic DDIM (eta = 0) over the linear beta schedule of ``T = 1000`` steps, respaced to ``S`` steps
  with the official "ddim" stride (timesteps ``0, k, 2k, ...``; ``S`` must be reachable with an integer stride),
  each step clipping the predicted ``x_0`` to ``[-1, 1]``;
- ``encode_stochastic``: the reverse DDIM from ``x`` to ``x_T`` given ``z_sem``; ``render``: DDIM from ``x_T``.

:class:`OfficialDiffusionAutoencoder` is the :class:`~captum_cfx.generators.LatentGenerator`: ``encode`` gives
``Latent(free=z_sem, fixed={"x_T": ...})``, ``decode`` renders, differentiably in ``z_sem`` (gradient
checkpointing across the steps keeps memory flat in ``S``). Images are in ``[0, 1]`` at the API.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from captum_cfx.generators._beatgans import BeatGANsAutoencoder, map_official_state_dict
from captum_cfx.generators.base import Latent, LatentGenerator
from captum_cfx.generators.ddim import from_model_range, to_model_range

__all__ = [
    "CELEBAHQ_ATTRIBUTES",
    "DIFFAE_TEMPLATES",
    "OfficialDiffusionAutoencoder",
    "beatgans_config",
    "convert_diffae_checkpoint",
    "ddim_timesteps",
    "load_diffae_classifier",
    "resolve_template",
]

#: The official ``TrainConfig`` defaults of the fields that shape the network and the sampler.
_TRAIN_CONFIG_DEFAULTS: dict[str, Any] = {
    "img_size": 64, "net_ch": 64, "net_ch_mult": None, "net_enc_channel_mult": None, "net_attn": None,
    "net_enc_attn": None, "net_beatgans_attn_head": 1, "net_beatgans_embed_channels": 512, "style_ch": 512,
    "net_beatgans_resnet_two_cond": False, "net_beatgans_resnet_cond_channels": None, "net_enc_pool": "adaptivenonzero",
    "net_num_res_blocks": 2, "net_num_input_res_blocks": None, "net_enc_num_res_blocks": 2, "net_resblock_updown": True,
    "dropout": 0.1, "T": 1000, "T_eval": 1000, "beta_scheduler": "linear", "model_name": "beatgans_autoenc",
}
_AUTOENC_BASE = {"net_attn": (16,), "net_beatgans_attn_head": 1, "net_beatgans_embed_channels": 512,
                 "net_beatgans_resnet_two_cond": True, "net_ch_mult": (1, 2, 4, 8), "net_ch": 64,
                 "net_enc_channel_mult": (1, 2, 4, 8, 8), "net_enc_pool": "adaptivenonzero", "T_eval": 20, "T": 1000,
                 "beta_scheduler": "linear"}
_AUTOENC_128 = {**_AUTOENC_BASE, "img_size": 128, "net_ch": 128, "net_ch_mult": (1, 1, 2, 3, 4),
                "net_enc_channel_mult": (1, 1, 2, 3, 4, 4)}
#: The official Diff-AE templates (``templates.py``), as the ``TrainConfig`` fields each one sets.
DIFFAE_TEMPLATES: dict[str, dict[str, Any]] = {
    "celeba64d2c_autoenc": dict(_AUTOENC_BASE),
    "ffhq128_autoenc_130M": dict(_AUTOENC_128),
    "ffhq128_autoenc_72M": dict(_AUTOENC_128),
    "horse128_autoenc": dict(_AUTOENC_128),
    "bedroom128_autoenc": dict(_AUTOENC_128),
    "ffhq256_autoenc": {**_AUTOENC_128, "img_size": 256, "net_ch_mult": (1, 1, 2, 2, 4, 4),
                        "net_enc_channel_mult": (1, 1, 2, 2, 4, 4, 4)},
}

#: The 40 CelebA(-HQ) attributes, in the order of the official classifiers' outputs.
CELEBAHQ_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

# fields that only matter for training (accepted and ignored in a custom template)
_TRAINING_ONLY = {"batch_size", "lr", "fp16", "data_name", "total_samples", "warmup", "ema_decay", "name",
                  "eval_every_samples", "eval_ema_every_samples", "sample_size", "beatgans_gen_type",
                  "diffusion_type", "net_beatgans_gradient_checkpoint", "net_enc_grad_checkpoint",
                  "net_beatgans_resnet_use_zero_module", "seed"}


def resolve_template(template: str | Mapping[str, Any]) -> dict[str, Any]:
    """All network/sampler ``TrainConfig`` fields of an official template name or a custom dict of fields.

    Raises:
        ValueError: an unknown template name, an unknown field, or a setting the official autoencoder never had.
    """
    if isinstance(template, str):
        if template not in DIFFAE_TEMPLATES:
            raise ValueError(f"`template` must be one of {sorted(DIFFAE_TEMPLATES)} or a dict of TrainConfig "
                             f"fields; got {template!r}")
        fields = DIFFAE_TEMPLATES[template]
    elif isinstance(template, Mapping):
        fields = dict(template)
    else:
        raise TypeError(f"`template` must be a template name or a dict of TrainConfig fields; "
                        f"got {type(template).__name__}")
    unknown = set(fields) - set(_TRAIN_CONFIG_DEFAULTS) - _TRAINING_ONLY
    if unknown:
        raise ValueError(f"`template` has fields the converter does not know: {sorted(unknown)}; known: "
                         f"{sorted(_TRAIN_CONFIG_DEFAULTS)}")
    cfg = {**_TRAIN_CONFIG_DEFAULTS, **{k: v for k, v in fields.items() if k not in _TRAINING_ONLY}}
    if cfg["net_ch_mult"] is None or cfg["net_attn"] is None:
        raise ValueError("`template` must set `net_ch_mult` and `net_attn` (the official TrainConfig has no default)")
    for key, want in (("model_name", "beatgans_autoenc"), ("net_enc_pool", "adaptivenonzero"),
                      ("net_beatgans_resnet_two_cond", True), ("beta_scheduler", "linear")):
        if cfg[key] != want:
            raise ValueError(f"`template`: {key}={cfg[key]!r} is not supported (the official Diff-AE uses {want!r})")
    return cfg


def beatgans_config(template: str | Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`BeatGANsAutoencoder` for an official template (name or dict of fields)."""
    c = resolve_template(template)
    return {
        "sample_size": int(c["img_size"]), "in_channels": 3, "out_channels": 3, "model_channels": int(c["net_ch"]),
        "channel_mult": tuple(c["net_ch_mult"]), "num_res_blocks": int(c["net_num_res_blocks"]),
        "num_input_res_blocks": c["net_num_input_res_blocks"], "attention_resolutions": tuple(c["net_attn"]),
        "embed_channels": int(c["net_beatgans_embed_channels"]),
        "cond_channels": c["net_beatgans_resnet_cond_channels"], "num_heads": int(c["net_beatgans_attn_head"]),
        "head_channels": -1, "dropout": float(c["dropout"]), "resblock_updown": bool(c["net_resblock_updown"]),
        "enc_out_channels": int(c["style_ch"]),
        "enc_channel_mult": None if c["net_enc_channel_mult"] is None else tuple(c["net_enc_channel_mult"]),
        "enc_num_res_blocks": int(c["net_enc_num_res_blocks"]),
        "enc_attention_resolutions": None if c["net_enc_attn"] is None else tuple(c["net_enc_attn"]),
    }


def ddim_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """The official "ddimS" respacing: ``range(0, T, k)`` for the smallest integer stride ``k`` giving ``S`` steps."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"`num_inference_steps` must be a positive int; got {num_steps!r}")
    for stride in range(1, num_train_timesteps):
        if len(range(0, num_train_timesteps, stride)) == num_steps:
            return list(range(0, num_train_timesteps, stride))
    raise ValueError(f"`num_inference_steps`={num_steps} cannot be made from T={num_train_timesteps} with an "
                     "integer stride (the official DDIM respacing); try e.g. 10, 20, 50, 100 or 250")


class _SpacedSchedule:
    """Per-step coefficients of the respaced linear schedule, float64 then one cast each (as the official code)."""

    def __init__(self, num_train_timesteps: int, num_steps: int) -> None:
        scale = 1000 / num_train_timesteps
        betas = np.linspace(scale * 0.0001, scale * 0.02, num_train_timesteps, dtype=np.float64)
        base = np.cumprod(1.0 - betas)
        self.timesteps = ddim_timesteps(num_train_timesteps, num_steps)
        # betas of the respaced chain, then its cumulative products (bit-identical to re-deriving them)
        new_betas, last = [], 1.0
        for t in self.timesteps:
            new_betas.append(1 - base[t] / last)
            last = base[t]
        ac = np.cumprod(1.0 - np.array(new_betas))
        self.coef = {"sqrt_recip": np.sqrt(1.0 / ac), "sqrt_recipm1": np.sqrt(1.0 / ac - 1),
                     "prev": np.append(1.0, ac[:-1]), "next": np.append(ac[1:], 0.0)}

    def get(self, name: str, i: int, ref: Tensor) -> Tensor:
        return torch.tensor(float(np.float32(self.coef[name][i])), dtype=torch.float32).to(ref.device, ref.dtype)


class OfficialDiffusionAutoencoder(LatentGenerator):
    r"""The official Diffusion Autoencoder's latent space: ``z_sem`` (free) + DDIM noise ``x_T`` (fixed).

    Args:
        model: the network, :class:`~captum_cfx.generators._beatgans.BeatGANsAutoencoder`.
        num_inference_steps: DDIM steps ``S`` of ``render`` (official ``T_eval``; 20 in every template).
        inversion_steps: DDIM steps of ``encode_stochastic`` (default ``num_inference_steps``; the official
            manipulation notebook inverts with 250 and renders with 100).
        num_train_timesteps: ``T`` of the linear schedule (1000 in every release).
        checkpoint: recompute each step in the backward pass (memory flat in ``S``).
        autocast: ``None`` or a CUDA autocast dtype (``torch.bfloat16``/``torch.float16``) for the network.
        input_range: the explained model's image range (the network works in ``[-1, 1]``).

    Shape:
        - encode: ``(N, 3, H, W)`` -> ``Latent(free=(N, style_ch), fixed={"x_T": (N, 3, H, W)})``.
        - decode: ``Latent`` -> ``(N, 3, H, W)`` in ``input_range``.

    Examples::

        >>> import torch
        >>> from captum_cfx.generators import OfficialDiffusionAutoencoder
        >>> gen = OfficialDiffusionAutoencoder.from_template({"img_size": 8, "net_ch": 8, "net_ch_mult": (1, 2),
        ...     "net_enc_channel_mult": (1, 2), "net_attn": (4,), "style_ch": 16,
        ...     "net_beatgans_embed_channels": 16, "net_beatgans_resnet_two_cond": True}, num_inference_steps=2)
        >>> lat = gen.encode(torch.rand(2, 3, 8, 8))
        >>> lat.free.shape, gen.decode(lat).shape
        (torch.Size([2, 16]), torch.Size([2, 3, 8, 8]))
    """

    def __init__(self, model: BeatGANsAutoencoder, num_inference_steps: int = 20, *,
                 inversion_steps: int | None = None, num_train_timesteps: int = 1000, checkpoint: bool = True,
                 autocast: torch.dtype | None = None, input_range: tuple[float, float] = (0.0, 1.0)) -> None:
        if not isinstance(model, BeatGANsAutoencoder):
            raise TypeError(f"`model` must be a BeatGANsAutoencoder; got {type(model).__name__}")
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ValueError(f"`num_train_timesteps` must be an int >= 2; got {num_train_timesteps!r}")
        s, c = model.config.sample_size, model.config.in_channels
        super().__init__(input_range, (c, s, s))
        self.model = model
        self.num_train_timesteps = num_train_timesteps
        self.num_inference_steps = num_inference_steps
        self.inversion_steps = num_inference_steps if inversion_steps is None else inversion_steps
        self._render = _SpacedSchedule(num_train_timesteps, num_inference_steps)
        self._invert = _SpacedSchedule(num_train_timesteps, self.inversion_steps)
        self.checkpoint = bool(checkpoint)
        self.autocast = autocast

    # ------------------------------------------------------------------ official-range operations ([-1, 1])
    def eps(self, x: Tensor, t: Tensor | int, cond: Tensor) -> Tensor:
        """The network's noise prediction at original-scale timesteps ``t`` (``x`` in model range)."""
        if not isinstance(t, Tensor):
            t = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if self.autocast is not None and x.device.type == "cuda":
            with torch.autocast("cuda", dtype=self.autocast):
                return self.model(x, t, cond).to(x.dtype)
        return self.model(x, t, cond)

    def _x0(self, sched: _SpacedSchedule, x: Tensor, i: int, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Clipped ``x_0`` prediction and the noise re-derived from it, at respaced step ``i``."""
        a, b = sched.get("sqrt_recip", i, x), sched.get("sqrt_recipm1", i, x)
        x0 = (a * x - b * self.eps(x, sched.timesteps[i], cond)).clamp(-1, 1)
        return x0, (a * x - x0) / b

    def _down(self, x: Tensor, cond: Tensor, i: int) -> Tensor:
        x0, e = self._x0(self._render, x, i, cond)
        prev = self._render.get("prev", i, x)
        return x0 * prev.sqrt() + (1 - prev).sqrt() * e

    def _up(self, x: Tensor, cond: Tensor, i: int) -> Tensor:
        x0, e = self._x0(self._invert, x, i, cond)
        nxt = self._invert.get("next", i, x)
        return x0 * nxt.sqrt() + (1 - nxt).sqrt() * e

    def render(self, x_T: Tensor, cond: Tensor) -> Tensor:
        """Deterministic DDIM from ``x_T`` to ``x_0`` given the semantic code (model range, differentiable)."""
        x = x_T
        for i in reversed(range(len(self._render.timesteps))):
            if self.checkpoint and torch.is_grad_enabled() and (x.requires_grad or cond.requires_grad):
                x = _checkpoint(lambda a, c, i=i: self._down(a, c, i), x, cond, use_reentrant=False)
            else:
                x = self._down(x, cond, i)
        return x

    @torch.no_grad()
    def encode_stochastic(self, x: Tensor, cond: Tensor) -> Tensor:
        """The official stochastic encoding: reverse DDIM from ``x`` (model range) to ``x_T`` given ``cond``."""
        for i in range(len(self._invert.timesteps)):
            x = self._up(x, cond, i)
        return x

    # ------------------------------------------------------------------ LatentGenerator
    def encode_semantic(self, x: Tensor) -> Tensor:
        """``z_sem`` only (no inversion), ``(N, style_ch)``."""
        self.check_images(x, "x")
        return self.model.encode(to_model_range(x, self.input_range))

    def encode(self, x: Tensor) -> Latent:
        z = self.encode_semantic(x)
        return Latent(z, {"x_T": self.encode_stochastic(to_model_range(x, self.input_range), z.detach())})

    def decode(self, latent: Latent | Tensor) -> Tensor:
        lat = self._as_latent(latent)
        if "x_T" not in lat.fixed:
            raise ValueError("`latent` must carry fixed['x_T'] (from encode or vary); got only a semantic code")
        return from_model_range(self.render(lat.fixed["x_T"], lat.free), self.input_range)

    def vary(self, z_sem: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode each ``z_sem`` with ``n`` fresh Gaussian ``x_T``: ``(N * n, C, H, W)``."""
        c, s = self.image_shape[0], self.image_shape[1]
        z = z_sem.repeat_interleave(n, 0)
        x_T = torch.randn(len(z), c, s, s, generator=generator, dtype=z.dtype).to(z.device)
        return self.decode(Latent(z, {"x_T": x_T}))

    # ------------------------------------------------------------------ building and persistence
    @classmethod
    def from_template(cls, template: str | Mapping[str, Any], **kwargs: Any) -> OfficialDiffusionAutoencoder:
        """A randomly initialised network at an official template (name or dict of ``TrainConfig`` fields);
        ``num_inference_steps`` defaults to the template's ``T_eval``."""
        c = resolve_template(template)
        kwargs.setdefault("num_inference_steps", int(c["T_eval"]))
        kwargs.setdefault("num_train_timesteps", int(c["T"]))
        return cls(BeatGANsAutoencoder(**beatgans_config(c)), **kwargs).eval()

    def save_pretrained(self, path: str | Path) -> None:
        """``model/`` (diffusers ``save_pretrained``, safetensors) + ``captum_cfx.json`` (sampler settings)."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(p / "model"), safe_serialization=True)
        (p / "captum_cfx.json").write_text(json.dumps({
            "class": type(self).__name__, "num_inference_steps": self.num_inference_steps,
            "inversion_steps": None if self.inversion_steps == self.num_inference_steps else self.inversion_steps,
            "num_train_timesteps": self.num_train_timesteps,
            "input_range": list(self.input_range)}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> OfficialDiffusionAutoencoder:
        """Load a folder written by :meth:`save_pretrained` / :func:`convert_diffae_checkpoint` (safetensors only,
        offline); ``kwargs`` override the saved sampler settings."""
        p = Path(path)
        if not (p / "captum_cfx.json").is_file() or not (p / "model" / "config.json").is_file():
            raise ValueError(f"`path` must be a folder written by convert_diffae_checkpoint / save_pretrained "
                             f"(captum_cfx.json + model/); got {str(path)!r}")
        saved = json.loads((p / "captum_cfx.json").read_text())
        model = BeatGANsAutoencoder.from_pretrained(str(p / "model"), local_files_only=True, use_safetensors=True)
        opts = {k: saved[k] for k in ("num_inference_steps", "inversion_steps", "num_train_timesteps")
                if saved.get(k) is not None}
        if "input_range" in saved:
            opts["input_range"] = tuple(saved["input_range"])
        return cls(model.eval(), **{**opts, **kwargs}).eval()

    @classmethod
    def from_diffae_checkpoint(cls, path: str | Path, template: str | Mapping[str, Any] = "ffhq256_autoenc",
                               ema: bool = True, *, num_inference_steps: int = 20,
                               **kwargs: Any) -> OfficialDiffusionAutoencoder:
        """Load an official Lightning ``last.ckpt`` (read without running code) or a converted folder.

        Args:
            path: the official checkpoint file, or a folder from :func:`convert_diffae_checkpoint`.
            template: the official template the checkpoint was trained with (ignored for a converted folder,
                which records its configuration).
            ema: take the EMA weights (``ema_model.*``, what the official code samples with) rather than ``model.*``.
            num_inference_steps: DDIM steps (official respacing).
            kwargs: further :class:`OfficialDiffusionAutoencoder` options (``inversion_steps``, ``checkpoint``,
                ``autocast``, ``input_range``).
        """
        p = Path(path)
        if p.is_dir():
            return cls.from_pretrained(p, num_inference_steps=num_inference_steps, **kwargs)
        c = resolve_template(template)
        with torch.device("meta"):  # no allocation until the checkpoint's tensors are in place
            model = BeatGANsAutoencoder(**beatgans_config(c))
        model.load_state_dict(_official_weights(p, ema, model), assign=True)
        kwargs.setdefault("num_train_timesteps", int(c["T"]))
        return cls(model.eval(), num_inference_steps, **kwargs).eval()


def _official_weights(path: Path, ema: bool, model: BeatGANsAutoencoder) -> dict[str, Tensor]:
    """The network's tensors from an official checkpoint, renamed to ours and checked against ``model``."""
    from captum_cfx._safe_pickle import load_checkpoint

    ckpt = load_checkpoint(path, argument="path")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"`path`: {str(path)!r} holds no state dict (expected the official Lightning checkpoint)")
    prefix = "ema_model." if ema else "model."
    own = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix) and not k[len(prefix):].startswith("latent_net.")}
    if not own:
        raise ValueError(f"`path`: {str(path)!r} has no '{prefix}*' weights (ema={ema}); is it a Diff-AE checkpoint?")
    mapped = map_official_state_dict(own)
    want = model.state_dict()
    missing, unexpected = sorted(set(want) - set(mapped)), sorted(set(mapped) - set(want))
    bad = [k for k in set(want) & set(mapped) if tuple(mapped[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or bad:
        raise ValueError(f"`path` does not match `template`: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(bad)} shape mismatches "
                         f"(e.g. {sorted(bad)[:3]}); pass the template the checkpoint was trained with")
    return {k: v.float() for k, v in mapped.items()}


def convert_diffae_checkpoint(path: str | Path, out: str | Path, template: str | Mapping[str, Any] = "ffhq256_autoenc",
                              ema: bool = True, *, num_inference_steps: int | None = None) -> Path:
    """Convert an official Diff-AE ``last.ckpt`` into a safetensors folder once (reads no code from the file).

    Returns:
        ``out``, loadable with :meth:`OfficialDiffusionAutoencoder.from_pretrained` or ``from_diffae_checkpoint``.
    """
    c = resolve_template(template)
    steps = int(c["T_eval"]) if num_inference_steps is None else num_inference_steps
    gen = OfficialDiffusionAutoencoder.from_diffae_checkpoint(path, template=c, ema=ema, num_inference_steps=steps)
    gen.save_pretrained(out)
    return Path(out)


def load_diffae_classifier(path: str | Path, ema: bool = False, names: tuple[str, ...] | None = None) -> Any:
    r"""An official attribute classifier (``ffhq256_autoenc_cls`` / ``ffhq128_autoenc_cls``) as :class:`LatentProbes`.

    The official classifier is a linear layer on the **normalised** semantic code,
    ``logit_j = W_j . (z - mean) / std + b_j``, with the code statistics the checkpoint stores
    (``conds_mean``/``conds_std``). It is folded into raw-code probes ``w_j . z + c_j`` with ``w_j = W_j / std``
    and ``c_j = b_j - w_j . mean``, so descriptor attribution, :class:`~captum_cfx.interventions.LinearDirections`
    (InterFaceGAN steps) and the causal scores use it as any fitted probes.

    Args:
        path: the official classifier ``last.ckpt`` (read without running code) or a folder written by
            ``LatentProbes.save_pretrained``.
        ema: use ``ema_classifier`` instead of ``classifier`` (the official manipulation notebook uses ``classifier``).
        names: the attribute names (default the 40 CelebA-HQ attributes, in the official order).

    Returns:
        fitted :class:`~captum_cfx.descriptors.LatentProbes` (all binary; ``scores_`` are NaN: the release has
        no held-out scores); ``latent_mean_`` and ``latent_std_`` hold the code statistics.
    """
    from captum_cfx._safe_pickle import load_checkpoint
    from captum_cfx.descriptors import LatentProbes

    p = Path(path)
    if p.is_dir():
        return LatentProbes.from_pretrained(p)
    ckpt = load_checkpoint(p, argument="path")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    head = "ema_classifier." if ema else "classifier."
    need = [head + "weight", head + "bias", "conds_mean", "conds_std"]
    if not all(isinstance(state.get(k), Tensor) for k in need):
        raise ValueError(f"`path`: {str(path)!r} is not an official Diff-AE classifier checkpoint (needs "
                         f"{need}; has {sorted(state)[:8]})")
    weight, bias = state[head + "weight"].double(), state[head + "bias"].double()
    mean, std = state["conds_mean"].double().flatten(), state["conds_std"].double().flatten()
    k, d = weight.shape
    names = tuple(CELEBAHQ_ATTRIBUTES if names is None else names)
    if len(names) != k or mean.numel() != d or std.numel() != d:
        raise ValueError(f"`path`: classifier is ({k}, {d}) with statistics of size {mean.numel()}/{std.numel()}; "
                         f"`names` has {len(names)} entries")
    probes = LatentProbes()
    probes.names_, probes.kinds_ = list(names), ["binary"] * k
    probes.weight_ = weight / std
    probes.bias_ = bias - probes.weight_ @ mean
    probes.y_mean_, probes.y_std_ = torch.zeros(k, dtype=torch.float64), torch.ones(k, dtype=torch.float64)
    probes.scores_ = {n: math.nan for n in names}
    probes.latent_dim_, probes.n_train_ = int(d), 0
    probes.output_std_ = None
    probes.latent_mean_, probes.latent_std_ = mean, std
    return probes
