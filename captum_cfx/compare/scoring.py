"""Scoring of ``captum-cfx compare``: every row through the same :mod:`captum_cfx.metrics`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from captum_cfx.compare.registry import CFResult, timed
from captum_cfx.compare.tasks import SEEDS, Task, predict

__all__ = ["score_attribution", "score_counterfactuals", "score_ground_truth", "score_reference", "valid_outputs"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@torch.no_grad()
def valid_outputs(task: Task, images: Tensor) -> tuple[Tensor, Tensor]:
    """(valid mask, model outputs) of the explained model on ``images``."""
    out = predict(task.model, images)
    if task.tolerance is not None:
        return (out.reshape(len(out)) - task.goals).abs() <= task.tolerance, out.reshape(len(out))
    return out.argmax(1) == task.goals, out.argmax(1)


def score_counterfactuals(task: Task, res: CFResult) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Every metric of one method on one task: (row, valid mask, model outputs on the counterfactuals)."""
    from captum_cfx.metrics import (
        cout,
        fid,
        latent_proximity,
        manifold_distance,
        oracle_agreement,
        proximity,
        seconds_per_counterfactual,
        sfid,
        sparsity,
        steps_per_counterfactual,
    )

    x, cf = task.images, res.counterfactuals.to(task.images)
    if cf.shape != x.shape:
        raise ValueError(f"a method must return counterfactuals shaped like the task's images {tuple(x.shape)}; "
                         f"got {tuple(cf.shape)}")
    valid, outs = valid_outputs(task, cf)
    g = torch.Generator().manual_seed(SEEDS["metrics"])
    row: dict[str, Any] = {
        "n": len(x),
        "validity": float(valid.float().mean()),
        "oracle_agreement": oracle_agreement(task.oracle, cf, task.goals, valid, tolerance=task.tolerance).value,
        "l1_pixels": proximity(cf, x, p=1).value,
        "l2_pixels": proximity(cf, x, p=2).value,
        "l2_latent": latent_proximity(task.generator, x, cf).value if task.generator is not None else None,
        "sparsity": sparsity(cf, x).value,
        "fid": fid(x, cf, task.features).value if len(x) >= 2 else None,
        "sfid": sfid(x, cf, task.features, generator=g).value if len(x) >= 4 else None,
        "manifold_distance": manifold_distance(task.generator, cf).value if task.generator is not None else None,
        "cout": None if task.regression else cout(task.model, x, cf, task.sources, target=task.goals).value,
        "seconds_per_cf": seconds_per_counterfactual(res.seconds, len(x)),
        "steps_per_cf": steps_per_counterfactual(res.n_steps).value if res.n_steps is not None else None,
        "seconds": res.seconds,
        "note": res.note,
    }
    return {k: _clean(v) for k, v in row.items()}, valid, outs


def score_ground_truth(task: Task, res: CFResult, valid: Tensor) -> dict[str, Any] | None:
    """Which factors the counterfactuals changed, against the truth of what the model depends on."""
    from captum_cfx.metrics import factor_changes, mnac, right_factor_rate

    if task.world is None or task.right_factor is None:
        return None
    start = res.start if res.start is not None else task.images
    ch = factor_changes(task.world, start.to(task.images), res.counterfactuals.to(task.images),
                        oracle=task.factor_oracle)
    right = task.right_factor
    rates_valid = {n: float(ch.changed[valid, ch.index(n)].float().mean()) if bool(valid.any()) else None
                   for n in ch.names}
    row: dict[str, Any] = {
        "n": len(valid),
        "validity": float(valid.float().mean()),
        "right_factor": right,
        "right_factor_rate": right_factor_rate(ch, right, valid).value,
        "right_factor_only_rate": right_factor_rate(ch, right, valid, only=True).value,
        "mnac": mnac(ch, exclude=right).values[valid.cpu()].mean().item() if bool(valid.any()) else None,
        "change_rate_among_valid": rates_valid,
        "compared_with": "reconstruction" if res.start is not None else "input",
    }
    if task.spurious_factor is not None:
        sp = rates_valid.get(task.spurious_factor)
        row["spurious_factor"] = task.spurious_factor
        row["spurious_change_rate"] = sp
        row["reveals_spurious"] = (sp is not None and sp >= 0.5) if task.right_factor == task.spurious_factor \
            else None
    return {k: _clean(v) for k, v in row.items()}


def _perturb_gaussian(std: float, g: torch.Generator) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    def fn(inputs: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.randn(inputs.shape, generator=g, device=inputs.device, dtype=inputs.dtype) * std
        return noise, inputs - noise

    return fn


def _perturb_uniform(g: torch.Generator) -> Callable[[Tensor, float], Tensor]:
    def fn(inputs: Tensor, perturb_radius: float = 0.02) -> Tensor:
        u = torch.rand(inputs.shape, generator=g, device=inputs.device, dtype=inputs.dtype)
        return inputs + (2 * u - 1) * perturb_radius

    return fn


def score_attribution(task: Task, attribute: Callable[..., Tensor], n_perturb: int) -> dict[str, Any]:
    """Time, infidelity (Yeh et al. 2019) and max-sensitivity of one attribution method on the task's images."""
    from captum.metrics import infidelity, sensitivity_max

    x, tgt = task.images, task.sources
    c0 = time.process_time()
    attr, seconds = timed(lambda: attribute(x, target=tgt))
    cpu = time.process_time() - c0
    g = torch.Generator(device=x.device).manual_seed(SEEDS["metrics"])
    infid = infidelity(task.model, _perturb_gaussian(0.1, g), x, attr.detach(), target=tgt,
                       n_perturb_samples=10, normalize=True)
    sens = sensitivity_max(attribute, x, target=tgt, perturb_func=_perturb_uniform(g), perturb_radius=0.02,
                           n_perturb_samples=n_perturb)
    return {"n": len(x), "infidelity": float(infid.mean()), "sensitivity_max": float(sens.mean()),
            "seconds_per_image": seconds / len(x), "cpu_seconds_per_image": cpu / len(x),
            "sensitivity_samples": n_perturb}


def score_reference(task: Task) -> dict[str, Any]:
    """Figures for real images, to read the realism columns against."""
    from captum_cfx.metrics import fid, manifold_distance

    x = task.images
    half = len(x) // 2
    ref: dict[str, Any] = {"fid_between_halves_of_real_images": fid(x[:half], x[half:], task.features).value}
    if task.generator is not None:
        ref["manifold_distance_of_real_images"] = manifold_distance(task.generator, x).value
    valid, _ = valid_outputs(task, x)
    ref["already_at_target"] = float(valid.float().mean())
    return {k: _clean(v) for k, v in ref.items()}
