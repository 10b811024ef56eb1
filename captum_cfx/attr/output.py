"""Result containers shared by the counterfactual methods."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from captum_cfx.generators.base import Latent

__all__ = ["CounterfactualOutput"]


@dataclass
class CounterfactualOutput:
    """Everything a counterfactual search produced, one row per input.

    Attributes:
        counterfactuals: decoded counterfactual images ``(N, C, H, W)``.
        latents: the counterfactual latents (free part moved, fixed part as encoded).
        original_latents: the encoded inputs.
        reconstructions: ``decode(encode(x))``, ``(N, C, H, W)``.
        original_predictions: the model's output on the source of the search (the inputs, or their
            reconstructions with ``source="reconstruction"``), ``(N, *)``.
        predictions: the model's output on the counterfactuals, ``(N, *)``.
        success: bool ``(N,)``: the objective was reached.
        n_steps: int ``(N,)``: optimisation steps each sample took.
        goals: the per-sample goal the objective worked towards (target class or value), ``(N,)``.
        nonfinite: bool ``(N,)``: the search produced NaN/Inf for this sample and was stopped; its
            batch completed normally.
        active_batch_sizes: for each forward pass of the search, how many samples it computed
            (with gradients, then the final check); used to measure the loop's overhead.
        seconds: wall time of the search.
        projection_ok: bool ``(N,)`` or ``None``: for generators that encode by optimisation (e.g.
            :class:`~captum_cfx.generators.GANGenerator`), whether the input was projected within the
            generator's error threshold; a counterfactual of a failed projection explains the projection,
            not the input. ``None`` for generators that do not report it.
    """

    counterfactuals: Tensor
    latents: Latent
    original_latents: Latent
    reconstructions: Tensor
    original_predictions: Tensor
    predictions: Tensor
    success: Tensor
    n_steps: Tensor
    goals: Tensor
    nonfinite: Tensor
    active_batch_sizes: list[tuple[int, bool]] = field(default_factory=list)
    seconds: float = 0.0
    projection_ok: Tensor | None = None

    def __len__(self) -> int:
        return self.counterfactuals.shape[0]

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else float("nan")

    @staticmethod
    def cat(outputs: list[CounterfactualOutput]) -> CounterfactualOutput:
        """Concatenate outputs along the batch dimension."""
        if len(outputs) == 1:
            return outputs[0]
        return CounterfactualOutput(
            counterfactuals=torch.cat([o.counterfactuals for o in outputs]),
            latents=Latent.cat([o.latents for o in outputs]),
            original_latents=Latent.cat([o.original_latents for o in outputs]),
            reconstructions=torch.cat([o.reconstructions for o in outputs]),
            original_predictions=torch.cat([o.original_predictions for o in outputs]),
            predictions=torch.cat([o.predictions for o in outputs]),
            success=torch.cat([o.success for o in outputs]),
            n_steps=torch.cat([o.n_steps for o in outputs]),
            goals=torch.cat([o.goals for o in outputs]),
            nonfinite=torch.cat([o.nonfinite for o in outputs]),
            active_batch_sizes=[s for o in outputs for s in o.active_batch_sizes],
            seconds=sum(o.seconds for o in outputs),
            projection_ok=(torch.cat([o.projection_ok for o in outputs])
                           if all(o.projection_ok is not None for o in outputs) else None),
        )
