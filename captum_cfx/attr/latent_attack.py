"""Counterfactual Attacks: an adversarial attack on the latent code of a generative model.

Goldwasser & Hooker (2025) optimise a latent code with Adam on the classifier's output, through the
decoder, and stop as soon as the target is reached. The decoder keeps every step on the image
manifold, so the change is semantic rather than adversarial noise.

How this implementation differs from the reference code (one image at a time, in a notebook):

- **Batched with compaction.** Each step computes only the samples still searching; a finished
  sample leaves the batch and its latent is frozen (Adam's momentum cannot move it further).
- **Default objective: a clamped logit margin** (:class:`~captum_cfx.objectives.LogitMargin`, margin
  6.25) instead of a probability threshold. The reference's thresholds are available as
  :class:`~captum_cfx.objectives.TargetClass` / :class:`~captum_cfx.objectives.ProbabilityThreshold`.
- **Source of the starting class.** By default the class to move away from is the model's prediction
  on the *input* (what the user asks to explain). ``source="reconstruction"`` uses the prediction on
  ``G(E(x))``, as the paper does.
- The reference's other choices are options: ``start="sample"`` starts from a reparameterised
  posterior sample, ``skip_zero_grad=True`` gives up on samples whose first gradient is exactly zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from captum.robust import Perturbation
from torch import Tensor
from tqdm.auto import tqdm

from captum_cfx._utils import as_tuple, call_model, check_same_device, eval_mode, index_args
from captum_cfx._validation import check_positive, format_inputs
from captum_cfx.attr._common import check_model_and_generator, generate_on, like_inputs
from captum_cfx.attr.output import CounterfactualOutput
from captum_cfx.generators.base import LatentGenerator
from captum_cfx.objectives import LogitMargin, Objective, get_objective
from captum_cfx.optim import LatentOptimizer, get_optimizer

__all__ = ["LatentCounterfactualAttack"]

#: The documented default configuration (benchmarked in ``benchmarks/latent_attack.py``).
DEFAULTS: dict[str, Any] = {"margin": 6.25, "optimizer": "adam", "lr": 0.3, "max_steps": 500}


class LatentCounterfactualAttack(GradientAttribution, Perturbation):
    r"""Counterfactual images by gradient search in a generator's latent space.

    Encode ``x`` to ``z0``, then move ``z`` until the model's output on ``decode(z)`` meets the
    objective (by default: the target class leads every other logit by ``margin = 6.25``). Each sample
    stops at the first step where it meets the objective; finished samples are removed from the batch.

    :meth:`attribute` returns ``counterfactual - reconstruction`` (or ``- input``), a pixel map shaped
    like the input; :meth:`generate` returns every intermediate result as a
    :class:`~captum_cfx.CounterfactualOutput`; :meth:`perturb` returns the counterfactual images, so
    the class works as a ``captum.robust.Perturbation`` in ``AttackComparator`` and
    ``MinParamPerturbation``.

    Reference: Goldwasser & Hooker, *Counterfactual Attacks* (2025).

    Args:
        forward_func: the model to explain; returns logits ``(N, K)`` (or ``(N,)``/``(N, 1)`` for
            one-logit binary models and regressors).
        generator: a :class:`~captum_cfx.generators.LatentGenerator` whose images are in the model's
            input range.

    Shape:
        - inputs: ``(N, C, H, W)`` in ``generator.input_range`` (or a tuple whose first tensor is
          the image; the other tensors are passed to ``forward_func`` unchanged).
        - target: int, list or ``(N,)`` tensor of classes; ``None`` for untargeted objectives.
        - attribute returns ``(N, C, H, W)``, values in ``[-(hi - lo), hi - lo]``.

    Examples::

        >>> from captum_cfx import LatentCounterfactualAttack
        >>> from captum_cfx.datasets import load_mnist
        >>> from captum_cfx.zoo import load_generator, load_pretrained
        >>> x, y = load_mnist("test")
        >>> x, y = x[::125], y[::125]                                 # 8 digits of 8 classes
        >>> attack = LatentCounterfactualAttack(load_pretrained("mnist-classifier"), load_generator("mnist-vae"))
        >>> out = attack.generate(x, target=(y + 1) % 10)
        >>> bool(out.success.all()), out.counterfactuals.shape
        (True, torch.Size([8, 1, 28, 28]))
        >>> maps = attack.attribute(x, target=(y + 1) % 10)          # counterfactual - reconstruction
        >>> maps.shape
        torch.Size([8, 1, 28, 28])
    """

    def __init__(self, forward_func: Callable[..., Tensor], generator: LatentGenerator) -> None:
        check_model_and_generator(forward_func, generator)
        GradientAttribution.__init__(self, forward_func)
        self.generator = generator

    # ------------------------------------------------------------------ public API
    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        baseline: str = "reconstruction",
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, ...]:
        """Pixel map ``counterfactual - reconstruction`` (default) or ``counterfactual - input``.

        Args:
            inputs, target, additional_forward_args: as in Captum.
            baseline: ``"reconstruction"`` subtracts ``G(E(x))``, separating what the model needed
                changed from the generator's reconstruction error; ``"input"`` subtracts ``x``.
            kwargs: search settings, see :meth:`generate`.

        Returns:
            A tensor (or tuple) shaped like ``inputs``; extra tuple members get zeros.
        """
        if baseline not in ("reconstruction", "input"):
            raise ValueError(f"`baseline` must be 'reconstruction' or 'input'; got {baseline!r}")
        out, tup, is_tuple = generate_on(self, inputs, target, additional_forward_args, **kwargs)
        ref = out.reconstructions if baseline == "reconstruction" else tup[0]
        return like_inputs((out.counterfactuals - ref).detach(), tup, is_tuple)

    def perturb(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, ...]:
        """Counterfactual images shaped like ``inputs`` (the ``captum.robust.Perturbation`` interface)."""
        out, tup, is_tuple = generate_on(self, inputs, target, additional_forward_args, **kwargs)
        return (out.counterfactuals, *tup[1:]) if is_tuple else out.counterfactuals

    def generate(
        self,
        inputs: Tensor | tuple[Tensor, ...],
        target: Any = None,
        additional_forward_args: Any = None,
        objective: Objective | str | None = None,
        margin: float | None = None,
        optimizer: LatentOptimizer | str = DEFAULTS["optimizer"],
        lr: float | None = None,
        max_steps: int = DEFAULTS["max_steps"],
        source: str = "input",
        start: str = "mean",
        distance_penalty: float = 0.0,
        radius: float | None = None,
        skip_zero_grad: bool = False,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> CounterfactualOutput:
        """Search counterfactuals and return every result.

        Args:
            inputs: images ``(N, C, H, W)`` or a tuple whose first member is the image.
            target: the class to reach per example (``TargetType``), or the regression value; may be
                ``None`` for :class:`~captum_cfx.objectives.Flip` and
                :class:`~captum_cfx.objectives.ProbabilityThreshold`.
            additional_forward_args: extra arguments for ``forward_func``; tensors with the batch size
                are indexed per sample.
            objective: an :class:`~captum_cfx.objectives.Objective` or its name; default
                ``LogitMargin(margin)``.
            margin: margin of the default objective (default 6.25); ignored when ``objective`` is given.
            optimizer: ``"adam"`` (default), ``"l2"``, ``"sign"`` or a
                :class:`~captum_cfx.optim.LatentOptimizer`.
            lr: step size (default 0.3 for Adam; the paper used 0.1 on its MNIST VAE).
            max_steps: step limit per sample (int ``>= 0``).
            source: where the starting prediction comes from: ``"input"`` (default) or
                ``"reconstruction"`` (the paper's choice). It decides the class that ``Flip`` leaves
                and the direction of ``ProbabilityThreshold``.
            start: ``"mean"`` (default) or ``"sample"``: a reparameterised posterior sample (needs a
                generator with ``encode_sample``, e.g. :class:`~captum_cfx.generators.VAEGenerator`).
            distance_penalty: weight of ``||z - z0||^2`` added to the loss (0 = the paper's choice).
            radius: if given, project ``z`` back onto the L2 ball of this radius around ``z0``.
            skip_zero_grad: stop samples whose first gradient is exactly zero (the reference skips
                them); they are reported as unsuccessful.
            internal_batch_size: process the inputs in chunks of this size.
            generator: a ``torch.Generator`` for the stochastic start.
            progress: show a tqdm progress bar over steps.

        Returns:
            :class:`~captum_cfx.CounterfactualOutput`.
        """
        tup, _ = format_inputs(inputs)
        x = self.generator.check_images(tup[0], "inputs")
        others = tup[1:]
        extra = as_tuple(additional_forward_args)
        check_same_device(x, generator=self.generator, forward_func=self.forward_func)
        obj = get_objective(objective) if objective is not None else LogitMargin(
            DEFAULTS["margin"] if margin is None else margin)
        opt = get_optimizer(optimizer, DEFAULTS["lr"] if lr is None and optimizer == "adam" else lr)
        check_positive(max_steps, "max_steps", integer=True, allow_zero=True)
        check_positive(distance_penalty, "distance_penalty", allow_zero=True)
        if radius is not None:
            check_positive(radius, "radius")
        if source not in ("input", "reconstruction"):
            raise ValueError(f"`source` must be 'input' or 'reconstruction'; got {source!r}")
        if start not in ("mean", "sample"):
            raise ValueError(f"`start` must be 'mean' or 'sample'; got {start!r}")
        if start == "sample" and not hasattr(self.generator, "encode_sample"):
            raise ValueError(f"`start='sample'` needs a generator with `encode_sample`; "
                             f"{type(self.generator).__name__} has none")
        if internal_batch_size is not None:
            check_positive(internal_batch_size, "internal_batch_size", integer=True)
        n = x.shape[0]
        if obj.needs_target and target is None:
            raise ValueError(f"`target` is required by {type(obj).__name__}")
        # a per-example target is split with the inputs; a scalar is shared
        tgt = target
        if isinstance(tgt, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in tgt):
            ints = all(isinstance(v, int) for v in tgt)
            tgt = torch.tensor(tgt, device=x.device, dtype=torch.long if ints else x.dtype)
        size = internal_batch_size or max(n, 1)
        outs = []
        with eval_mode(self.forward_func, self.generator), torch.enable_grad():
            for lo in range(0, max(n, 1), size):
                sl = slice(lo, min(lo + size, n))
                t_chunk = tgt[sl] if isinstance(tgt, Tensor) and tgt.dim() == 1 and tgt.shape[0] == n else tgt
                if isinstance(t_chunk, (list, tuple)) and len(t_chunk) == n:
                    t_chunk = list(t_chunk)[sl]
                outs.append(self._search_chunk(
                    x[sl], tuple(o[sl] for o in others), index_args(extra, n, sl), t_chunk, obj, opt,
                    max_steps, source, start, distance_penalty, radius, skip_zero_grad, generator, progress))
        return CounterfactualOutput.cat(outs)

    # ------------------------------------------------------------------ the search
    def _model(self, x: Tensor, others: tuple[Tensor, ...], extra: tuple[Any, ...]) -> Tensor:
        return call_model(self.forward_func, x, others, extra)

    def _search_chunk(
        self, x: Tensor, others: tuple[Tensor, ...], extra: tuple[Any, ...], target: Any, obj: Objective,
        opt: LatentOptimizer, max_steps: int, source: str, start: str, penalty: float,
        radius: float | None, skip_zero_grad: bool, rng: torch.Generator | None, progress: bool,
    ) -> CounterfactualOutput:
        t_start = time.perf_counter()
        gen = self.generator
        n = x.shape[0]
        with torch.no_grad():
            latent0 = gen.encode(x).detach()
            recon = gen.decode(latent0).detach()
            src_pred = self._model(recon if source == "reconstruction" else x, others, extra).detach()
        goal = obj.prepare(src_pred, target)
        if start == "sample":
            with torch.no_grad():
                z = gen.encode_sample(x, generator=rng).free.detach().clone()  # type: ignore[attr-defined]
        else:
            z = latent0.free.detach().clone()

        # per-sample results, filled in as samples stop
        final_z = z.clone()
        final_x = recon.clone()
        final_pred = torch.zeros_like(src_pred)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        nonfinite = torch.zeros(n, dtype=torch.bool, device=x.device)
        n_steps = torch.zeros(n, dtype=torch.long, device=x.device)
        sizes: list[tuple[int, bool]] = []

        active = torch.arange(n, device=x.device)
        cur_lat, cur_z0, cur_goal = latent0, latent0.free, goal
        cur_others, cur_extra = others, extra
        state = opt.init_state(z)
        bar = tqdm(total=max_steps, disable=not progress, desc="latent attack", leave=False)
        t = 0
        while active.numel() > 0:
            last = t == max_steps
            zr = z.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                img = gen.decode(cur_lat.replace(zr))
                out = self._model(img, cur_others, cur_extra)
            sizes.append((active.numel(), not last))
            if t == 0 and not last:
                if not img.requires_grad:
                    raise TypeError(f"`generator.decode` of {type(gen).__name__} is not differentiable: its output "
                                    "does not depend on the latent through autograd (no_grad, detach or numpy inside?)")
                if not out.requires_grad:
                    raise TypeError("`forward_func` is not differentiable: its output does not depend on the image "
                                    "through autograd (no_grad, detach or numpy inside?)")
            out_d = out.detach()
            done = obj.done(out_d, cur_goal)
            finite = torch.isfinite(out_d.reshape(out_d.shape[0], -1)).all(1) & torch.isfinite(z.flatten(1)).all(1)
            stop = done | ~finite
            grad = None
            if not last:
                loss = obj.loss(out, cur_goal)
                if penalty > 0:
                    loss = loss + penalty * (zr - cur_z0).flatten(1).pow(2).sum(1)
                # samples that stop now contribute nothing to the backward pass
                loss = torch.where(stop | ~torch.isfinite(loss), torch.zeros_like(loss), loss)
                (grad,) = torch.autograd.grad(loss.sum(), zr)
                gfin = torch.isfinite(grad.flatten(1)).all(1)
                nonfinite_now = ~gfin & ~stop
                finite = finite & (gfin | stop)
                stop = stop | nonfinite_now
                if skip_zero_grad and t == 0:
                    stop = stop | (grad.flatten(1).abs().amax(1) == 0)
            else:
                stop = torch.ones_like(stop)
            if stop.any():
                idx = active[stop]
                final_z[idx] = z.detach()[stop]
                final_x[idx] = img.detach()[stop]
                final_pred[idx] = out_d[stop]
                success[idx] = done[stop] & finite[stop]
                nonfinite[idx] = ~finite[stop]
                n_steps[idx] = t
                keep = ~stop
                active = active[keep]
                if active.numel() == 0:
                    break
                z, cur_z0, cur_goal = z[keep], cur_z0[keep], cur_goal[keep]
                cur_lat = cur_lat[keep]
                cur_others = tuple(o[keep] for o in cur_others)
                cur_extra = index_args(cur_extra, keep.numel(), keep)
                state = {k: v[keep] for k, v in state.items()}
                grad = grad[keep] if grad is not None else None
            t += 1
            with torch.no_grad():
                z = opt.step(z.detach(), grad, state, t)
                if radius is not None:
                    d = z - cur_z0
                    nrm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
                    scale = (radius / nrm).clamp(max=1.0).view(-1, *([1] * (d.dim() - 1)))
                    z = cur_z0 + d * scale
            bar.update(1)
            bar.set_postfix(active=int(active.numel()), refresh=False)
        bar.close()
        return CounterfactualOutput(
            counterfactuals=final_x,
            latents=latent0.replace(final_z),
            original_latents=latent0,
            reconstructions=recon,
            original_predictions=src_pred,
            predictions=final_pred,
            success=success,
            n_steps=n_steps,
            goals=goal,
            nonfinite=nonfinite,
            active_batch_sizes=sizes,
            seconds=time.perf_counter() - t_start,
            projection_ok=latent0.fixed.get("projection_ok"),
        )

