"""The network of the official Diffusion Autoencoder (Preechakul et al., CVPR 2022), written for captum_cfx.

The official code (``phizaz/diffae``, MIT) builds a "BeatGANs" UNet (the ADM/guided-diffusion UNet with
scale-shift time conditioning) whose residual blocks are also scaled by the semantic code, plus a half-UNet
"semantic encoder" from images to that code. This module re-implements both from the paper and the released
configurations, in diffusers' style (``ModelMixin`` + ``ConfigMixin``, ``save_pretrained``/``from_pretrained``
with safetensors). Parameter names are our own; :data:`OFFICIAL_KEY_MAP` is the one table that maps the
official state-dict names onto them (:func:`map_official_state_dict`).

Layout (``L = len(channel_mult)`` resolution levels; ``res`` = residual block, ``attn`` = self-attention):

- ``time_embedding``: sinusoidal embedding of ``t`` (``model_channels`` wide, ``[cos, sin]``) -> MLP.
- ``down[0]`` = input conv; then per level ``num_res_blocks`` x ``res`` (+ ``attn`` at the listed resolutions),
  and a down-sampling ``res`` between levels. Every ``down`` block's output is a skip connection of its level.
- ``mid`` = ``res``, ``attn``, ``res``.
- ``up``: per level (coarse to fine) ``num_res_blocks + 1`` x ``res`` on ``[h, skip]`` (+ ``attn``), an
  up-sampling ``res`` after the last block of every level but the finest; ``norm_out`` -> SiLU -> ``conv_out``.
- Each conditioned ``res``: ``norm2(h) * (1 + s_t) + b_t`` from the time embedding, then ``* (1 + s_z)`` from the
  semantic code ``z`` (``cond_emb_proj``), SiLU, dropout, ``conv2``.
- ``encoder``: the same down path and ``mid`` without conditioning (its residual blocks have one conv), then
  GroupNorm -> SiLU -> global average pool -> 1x1 conv to ``z``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

__all__ = ["OFFICIAL_KEY_MAP", "BeatGANsAutoencoder", "map_official_state_dict", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos(t f), sin(t f)]`` with ``f_i = max_period^(-i / (dim // 2))``, ``(N, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class _GroupNorm(nn.GroupNorm):
    """GroupNorm with at most 32 groups, computed in float32 whatever the input dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__(min(32, channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


class _Resample(nn.Module):
    """Nearest x2 up-sampling or 2x2 average-pool down-sampling, optionally followed (up) or done (down) by a conv."""

    def __init__(self, channels: int, mode: str, conv: bool = False) -> None:
        super().__init__()
        self.mode = mode
        stride = 2 if mode == "down" else 1
        self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1) if conv else None

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(x) if self.conv is not None else x
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


class _ResBlock(nn.Module):
    """Residual block. With ``emb_channels``: norm, SiLU, conv, then norm, scale-shift by the time embedding,
    scale by the semantic code, SiLU, dropout, conv. Without (the encoder's blocks): norm, SiLU, conv only."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int | None = None,
                 cond_channels: int | None = None, dropout: float = 0.0, resample: str | None = None) -> None:
        super().__init__()
        self.norm1 = _GroupNorm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.resample = _Resample(in_channels, resample) if resample else None
        self.conditioned = emb_channels is not None
        if self.conditioned:
            self.time_emb_proj = nn.Linear(emb_channels, 2 * out_channels)
            self.cond_emb_proj = nn.Linear(cond_channels or emb_channels, out_channels)
            self.norm2 = _GroupNorm(out_channels)
            self.dropout = nn.Dropout(dropout)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, emb: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        h = F.silu(self.norm1(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.conv1(h)
        if self.conditioned:
            h = self.norm2(h)
            if emb is not None:
                scale, shift = self.time_emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
                h = h * (1 + scale) + shift
            if cond is not None:
                h = h * (1 + self.cond_emb_proj(F.silu(cond)).to(h.dtype)[:, :, None, None])
            h = self.conv2(self.dropout(F.silu(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class _Attention(nn.Module):
    """Multi-head self-attention over the pixels (heads split before q/k/v, as the BeatGANs "legacy" order)."""

    def __init__(self, channels: int, num_heads: int = 1, head_channels: int = -1) -> None:
        super().__init__()
        self.num_heads = num_heads if head_channels == -1 else channels // head_channels
        if channels % self.num_heads:
            raise ValueError(f"attention: {channels} channels do not split into {self.num_heads} heads")
        self.norm = _GroupNorm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        flat = x.reshape(b, c, hgt * wid)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.num_heads, 3, c // self.num_heads, hgt * wid)
        q, k, v = (qkv[:, i].transpose(1, 2) for i in range(3))  # (B*heads, T, ch)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, hgt * wid)
        return (flat + self.proj_out(a)).reshape(b, c, hgt, wid)


def _run(block: nn.ModuleList, h: Tensor, emb: Tensor | None, cond: Tensor | None) -> Tensor:
    for layer in block:
        h = layer(h, emb, cond) if isinstance(layer, _ResBlock) else layer(h)
    return h


class _SemanticEncoder(nn.Module):
    """The half-UNet from images ``[-1, 1]`` to the semantic code ``(N, out_channels)``."""

    def __init__(self, in_channels: int, model_channels: int, out_channels: int, channel_mult: tuple[int, ...],
                 num_res_blocks: int, attention_resolutions: tuple[int, ...], sample_size: int, num_heads: int,
                 head_channels: int, resblock_updown: bool) -> None:
        super().__init__()
        ch = int(channel_mult[0] * model_channels)
        self.down = nn.ModuleList([nn.ModuleList([nn.Conv2d(in_channels, ch, 3, padding=1)])])
        res = sample_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [_ResBlock(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if res in attention_resolutions:
                    layers.append(_Attention(ch, num_heads, head_channels))
                self.down.append(nn.ModuleList(layers))
            if level != len(channel_mult) - 1:
                res //= 2
                self.down.append(nn.ModuleList([_ResBlock(ch, ch, resample="down") if resblock_updown
                                                else _Resample(ch, "down", conv=True)]))
        self.mid = nn.ModuleList([_ResBlock(ch, ch), _Attention(ch, num_heads, head_channels), _ResBlock(ch, ch)])
        self.norm_out = _GroupNorm(ch)
        self.proj_out = nn.Conv2d(ch, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for block in self.down:
            h = _run(block, h, None, None)
        h = F.silu(self.norm_out(_run(self.mid, h, None, None)))
        return self.proj_out(F.adaptive_avg_pool2d(h, 1)).flatten(1)


class BeatGANsAutoencoder(ModelMixin, ConfigMixin):
    r"""The official Diffusion Autoencoder network: a semantic encoder and a code-conditioned noise predictor.

    Build it from an official template with
    :func:`captum_cfx.generators.diffae_official.beatgans_config` (``"ffhq256_autoenc"``, ...); load released
    weights with :func:`captum_cfx.generators.diffae_official.convert_diffae_checkpoint`.

    Args:
        sample_size: image side (square images).
        in_channels, out_channels: image channels (3 in every release).
        model_channels: base width; level ``i`` has ``model_channels * channel_mult[i]`` channels.
        channel_mult: widths of the UNet levels.
        num_res_blocks: residual blocks per level on the way up (``num_input_res_blocks`` on the way down,
            default the same).
        attention_resolutions: resolutions with self-attention in the UNet.
        embed_channels: width of the time embedding.
        cond_channels: width the semantic code enters the residual blocks with (default ``embed_channels``;
            must equal ``enc_out_channels``).
        num_heads, head_channels: attention heads (``head_channels = -1``: ``num_heads`` heads).
        dropout: dropout inside the conditioned residual blocks (training only).
        resblock_updown: resample with residual blocks (every release) instead of convs.
        enc_out_channels: size of the semantic code ``z_sem``.
        enc_channel_mult, enc_num_res_blocks, enc_attention_resolutions: the encoder's levels (defaults: the
            UNet's).

    Shape:
        - :meth:`encode`: ``(N, C, H, W)`` in ``[-1, 1]`` -> ``(N, enc_out_channels)``.
        - :meth:`forward`: ``x_t (N, C, H, W)``, ``t (N,)`` timesteps in ``[0, T)``, ``cond (N, enc_out_channels)``
          -> predicted noise ``(N, out_channels, H, W)``.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, sample_size: int = 64, in_channels: int = 3, out_channels: int = 3, model_channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 4, 8), num_res_blocks: int = 2,
                 num_input_res_blocks: int | None = None, attention_resolutions: tuple[int, ...] = (16,),
                 embed_channels: int = 512, cond_channels: int | None = None, num_heads: int = 1,
                 head_channels: int = -1, dropout: float = 0.1, resblock_updown: bool = True,
                 enc_out_channels: int = 512, enc_channel_mult: tuple[int, ...] | None = None,
                 enc_num_res_blocks: int = 2, enc_attention_resolutions: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if (cond_channels or embed_channels) != enc_out_channels:
            raise ValueError(f"the semantic code ({enc_out_channels} channels) enters the residual blocks as is: "
                             f"`cond_channels` (or `embed_channels`) must equal it; got "
                             f"{cond_channels or embed_channels}")
        attn = tuple(attention_resolutions)
        n_in = num_input_res_blocks or num_res_blocks
        mc = model_channels
        res_kw = {"emb_channels": embed_channels, "cond_channels": cond_channels, "dropout": dropout}
        self.time_embedding = nn.Sequential(nn.Linear(mc, embed_channels), nn.SiLU(),
                                            nn.Linear(embed_channels, embed_channels))
        ch = int(channel_mult[0] * mc)
        self.down = nn.ModuleList([nn.ModuleList([nn.Conv2d(in_channels, ch, 3, padding=1)])])
        self._down_levels = [0]
        skips: list[list[int]] = [[ch]] + [[] for _ in channel_mult[1:]]
        res = sample_size
        for level, mult in enumerate(channel_mult):
            for _ in range(n_in):
                layers: list[nn.Module] = [_ResBlock(ch, int(mult * mc), **res_kw)]
                ch = int(mult * mc)
                if res in attn:
                    layers.append(_Attention(ch, num_heads, head_channels))
                self.down.append(nn.ModuleList(layers))
                self._down_levels.append(level)
                skips[level].append(ch)
            if level != len(channel_mult) - 1:
                res //= 2
                self.down.append(nn.ModuleList([_ResBlock(ch, ch, resample="down", **res_kw) if resblock_updown
                                                else _Resample(ch, "down", conv=True)]))
                self._down_levels.append(level + 1)
                skips[level + 1].append(ch)
        self.mid = nn.ModuleList([_ResBlock(ch, ch, **res_kw), _Attention(ch, num_heads, head_channels),
                                  _ResBlock(ch, ch, **res_kw)])
        self.up = nn.ModuleList()
        self._up_levels: list[int] = []
        for level in reversed(range(len(channel_mult))):
            out_ch = int(mc * channel_mult[level])
            for i in range(num_res_blocks + 1):
                skip = skips[level].pop() if skips[level] else 0
                layers = [_ResBlock(ch + skip, out_ch, **res_kw)]
                ch = out_ch
                if res in attn:
                    layers.append(_Attention(ch, num_heads, head_channels))
                if level and i == num_res_blocks:
                    res *= 2
                    layers.append(_ResBlock(ch, ch, resample="up", **res_kw) if resblock_updown
                                  else _Resample(ch, "up", conv=True))
                self.up.append(nn.ModuleList(layers))
                self._up_levels.append(level)
        self.norm_out = _GroupNorm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        self.encoder = _SemanticEncoder(
            in_channels, mc, enc_out_channels, tuple(enc_channel_mult or channel_mult), enc_num_res_blocks,
            tuple(enc_attention_resolutions or attn), sample_size, num_heads, head_channels, resblock_updown)

    def encode(self, x: Tensor) -> Tensor:
        """The semantic code of images in ``[-1, 1]``, ``(N, enc_out_channels)``."""
        return self.encoder(x)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """Predicted noise of ``x`` at (original-scale) timesteps ``t`` given the semantic code ``cond``."""
        emb = self.time_embedding(timestep_embedding(t, self.config.model_channels))
        skips: list[list[Tensor]] = [[] for _ in self.config.channel_mult]
        h = x
        for block, level in zip(self.down, self._down_levels):
            h = _run(block, h, emb, cond)
            skips[level].append(h)
        h = _run(self.mid, h, emb, cond)
        for block, level in zip(self.up, self._up_levels):
            if skips[level]:
                h = torch.cat([h, skips[level].pop()], dim=1)
            h = _run(block, h, emb, cond)
        return self.conv_out(F.silu(self.norm_out(h)))


#: Official parameter names (regex) -> ours, applied in order to every key of the official ``model``/``ema_model``.
OFFICIAL_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"^time_embed\.time_embed\.", "time_embedding."),
    (r"^(encoder\.)?input_blocks\.", r"\1down."),
    (r"^(encoder\.)?middle_block\.", r"\1mid."),
    (r"^output_blocks\.", "up."),
    (r"^out\.0\.", "norm_out."),
    (r"^out\.2\.", "conv_out."),
    (r"^encoder\.out\.0\.", "encoder.norm_out."),
    (r"^encoder\.out\.3\.", "encoder.proj_out."),
    (r"\.in_layers\.0\.", ".norm1."),
    (r"\.in_layers\.2\.", ".conv1."),
    (r"\.emb_layers\.1\.", ".time_emb_proj."),
    (r"\.cond_emb_layers\.1\.", ".cond_emb_proj."),
    (r"\.out_layers\.0\.", ".norm2."),
    (r"\.out_layers\.3\.", ".conv2."),
    (r"\.skip_connection\.", ".conv_shortcut."),
    (r"\.op\.", ".conv."),  # conv down-sampling (net_resblock_updown=False)
)


def map_official_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Rename the keys of an official ``BeatGANsAutoencModel`` state dict (without the ``model.`` prefix) to ours.

    Keys the table does not know pass through unchanged (the latent DPM's ``latent_net.*``, say), so a
    ``load_state_dict`` against our model names them; the caller decides what to drop.
    """
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in OFFICIAL_KEY_MAP:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out
