"""Per-sample optimisers for latent search.

Each optimiser keeps its state as tensors with one row per sample, so that finished samples can be
dropped from the batch ("compaction") without disturbing the others: ``state = {k: v[keep]}``.
The step number ``t`` is an int shared by the batch, or a long ``(N,)`` tensor of per-sample step numbers
(what the search engine passes, so that samples entering a running batch start at step 1); both give
bit-identical updates.

State and arithmetic are float32 (or float64 for float64 latents) whatever the latent's dtype: with float16 or
bfloat16 latents (a half-precision diffusers model), Adam's second moment and ``eps = 1e-8`` underflow in the
latent's own dtype and every step would come out non-finite; the update is computed in float32 and only the new
latent is rounded back to the latent's dtype. Float32 and float64 latents are computed exactly as before.

Shape:
    - z, grad: ``(N, *)``; every state tensor: ``(N, *)``; t: int or ``(N,)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache

import torch
from torch import Tensor

from captum_cfx._validation import check_float

__all__ = ["LatentAdam", "LatentOptimizer", "NormalizedGradient", "SignGradient", "get_optimizer"]


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype optimiser state and updates are computed in: float32 for half-precision latents (float16,
    bfloat16), the latent's own dtype otherwise (float32, float64)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _per_sample_norm(g: Tensor) -> Tensor:
    return g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


#: steps for which Adam's bias corrections are tabulated exactly; beyond, ``1 - beta**t`` is computed in
#: float64 by torch (for beta <= 0.999 it is 1.0 there either way)
_TABLE = 1 << 16


@lru_cache(maxsize=16)
def _bias_table(beta: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    # Python's float pow, exactly what ``1 - beta**t`` with an int ``t`` gives
    return torch.tensor([1 - beta**t for t in range(_TABLE)], dtype=torch.float64).to(device=device, dtype=dtype)


def _bias_correction(beta: float, t: int | Tensor, like: Tensor) -> float | Tensor:
    """``1 - beta**t``: a float for an int ``t``; for per-sample ``t`` an ``(N, 1, ...)`` tensor whose
    values equal the float's (so the division rounds the same)."""
    if not isinstance(t, Tensor):
        return 1 - beta**t
    table = _bias_table(float(beta), like.device, like.dtype)
    exact = table[t.clamp(max=_TABLE - 1)]
    c = torch.where(t < _TABLE, exact, (1 - beta ** t.double()).to(like.dtype))
    return c.view(-1, *([1] * (like.dim() - 1)))


class LatentOptimizer(ABC):
    """A gradient-descent rule on a batch of latents with per-sample state."""

    def __init__(self, lr: float) -> None:
        self.lr = float(check_float(lr, "lr", low=0, low_open=True))

    def init_state(self, z: Tensor) -> dict[str, Tensor]:
        """Fresh per-sample state for latents ``z``."""
        return {}

    @abstractmethod
    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], *, t: int | Tensor) -> Tensor:
        """Return the updated latents; may update ``state`` in place. ``t`` is the 1-based step number,
        shared (int) or per sample (long ``(N,)``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr})"


class LatentAdam(LatentOptimizer):
    """Adam (Kingma & Ba) with per-sample moments; the paper's choice (lr 0.1 on an MNIST VAE)."""

    def __init__(self, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(lr)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"`betas` must be a pair of numbers in [0, 1); got {betas!r}"[:300])
        self.betas = (check_float(betas[0], "betas[0]", low=0, high=1, high_open=True),
                      check_float(betas[1], "betas[1]", low=0, high=1, high_open=True))
        self.eps = check_float(eps, "eps", low=0, low_open=True)

    def init_state(self, z: Tensor) -> dict[str, Tensor]:
        dt = state_dtype(z.dtype)
        return {"m": torch.zeros_like(z, dtype=dt), "v": torch.zeros_like(z, dtype=dt)}

    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], *, t: int | Tensor) -> Tensor:
        b1, b2 = self.betas
        m, v = state["m"], state["v"]
        g = grad.to(m.dtype)  # no-ops for float32/float64 latents: bit-identical to computing in their dtype
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        mhat = m / _bias_correction(b1, t, m)
        vhat = v / _bias_correction(b2, t, v)
        return (z.to(m.dtype) - self.lr * mhat / (vhat.sqrt() + self.eps)).to(z.dtype)


class NormalizedGradient(LatentOptimizer):
    """L2 steps of fixed length ``lr`` along the per-sample normalised gradient."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__(lr)

    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], *, t: int | Tensor) -> Tensor:
        dt = state_dtype(z.dtype)  # the norm's clamp (1e-12) would be 0 in float16
        g = grad.to(dt)
        return (z.to(dt) - self.lr * g / _per_sample_norm(g)).to(z.dtype)


class SignGradient(LatentOptimizer):
    """L-infinity steps: ``z - lr * sign(grad)`` (FGSM/PGD-style)."""

    def __init__(self, lr: float = 0.02) -> None:
        super().__init__(lr)

    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], *, t: int | Tensor) -> Tensor:
        return z - self.lr * grad.sign()


_NAMES = {"adam": LatentAdam, "l2": NormalizedGradient, "sign": SignGradient}


def get_optimizer(optimizer: LatentOptimizer | str, lr: float | None = None) -> LatentOptimizer:
    """An optimiser from an instance or a name (``adam``, ``l2``, ``sign``)."""
    if isinstance(optimizer, LatentOptimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer in _NAMES:
        return _NAMES[optimizer](lr) if lr is not None else _NAMES[optimizer]()
    raise ValueError(f"`optimizer` must be a LatentOptimizer or one of {sorted(_NAMES)}; got {optimizer!r}")
