"""Per-sample optimisers for latent search.

Each optimiser keeps its state as tensors with one row per sample, so that finished samples can be
dropped from the batch ("compaction") without disturbing the others: ``state = {k: v[keep]}``.
The step count ``t`` is shared, because every active sample has taken the same number of steps.

Shape:
    - z, grad: ``(N, *)``; every state tensor: ``(N, *)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["LatentAdam", "LatentOptimizer", "NormalizedGradient", "SignGradient", "get_optimizer"]


def _per_sample_norm(g: Tensor) -> Tensor:
    return g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


class LatentOptimizer(ABC):
    """A gradient-descent rule on a batch of latents with per-sample state."""

    def __init__(self, lr: float) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"`lr` must be a positive number; got {lr!r}")
        self.lr = float(lr)

    def init_state(self, z: Tensor) -> dict[str, Tensor]:
        """Fresh per-sample state for latents ``z``."""
        return {}

    @abstractmethod
    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], t: int) -> Tensor:
        """Return the updated latents (``t`` is the 1-based step number); may update ``state`` in place."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr})"


class LatentAdam(LatentOptimizer):
    """Adam (Kingma & Ba) with per-sample moments; the paper's choice (lr 0.1 on an MNIST VAE)."""

    def __init__(self, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(lr)
        self.betas, self.eps = betas, eps

    def init_state(self, z: Tensor) -> dict[str, Tensor]:
        return {"m": torch.zeros_like(z), "v": torch.zeros_like(z)}

    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], t: int) -> Tensor:
        b1, b2 = self.betas
        m, v = state["m"], state["v"]
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        mhat = m / (1 - b1**t)
        vhat = v / (1 - b2**t)
        return z - self.lr * mhat / (vhat.sqrt() + self.eps)


class NormalizedGradient(LatentOptimizer):
    """L2 steps of fixed length ``lr`` along the per-sample normalised gradient."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__(lr)

    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], t: int) -> Tensor:
        return z - self.lr * grad / _per_sample_norm(grad)


class SignGradient(LatentOptimizer):
    """L-infinity steps: ``z - lr * sign(grad)`` (FGSM/PGD-style)."""

    def __init__(self, lr: float = 0.02) -> None:
        super().__init__(lr)

    def step(self, z: Tensor, grad: Tensor, state: dict[str, Tensor], t: int) -> Tensor:
        return z - self.lr * grad.sign()


_NAMES = {"adam": LatentAdam, "l2": NormalizedGradient, "sign": SignGradient}


def get_optimizer(optimizer: LatentOptimizer | str, lr: float | None = None) -> LatentOptimizer:
    """An optimiser from an instance or a name (``adam``, ``l2``, ``sign``)."""
    if isinstance(optimizer, LatentOptimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer in _NAMES:
        return _NAMES[optimizer](lr) if lr is not None else _NAMES[optimizer]()
    raise ValueError(f"`optimizer` must be a LatentOptimizer or one of {sorted(_NAMES)}; got {optimizer!r}")
