"""Pixel-space diffusion counterfactuals: ACE (Jeanneret et al. 2023) and its regression form AC-RE.

The search moves the *pixels*, not a latent code, but the model is shown the image only after a short
DDPM "filter" ``F``: noise the image to a level ``tau`` of the diffusion, then denoise it in a few DDIM
steps. Gradients of the objective flow back through ``F`` (gradient-checkpointed, so memory stays flat
in the number of steps) to the pixels, which take sign-gradient steps; the filter removes the
high-frequency adversarial noise an attack on the bare model would find. Then:

1. **mask**: ``m = dilate(max_c |x - F(x_adv)| > threshold)``, the region the attack changed (ACE's
   pre-explanation ``F(x_adv)``; ``mask_from="adversarial"`` uses ``|x - x_adv|``);
2. **inpainting** (RePaint, Lugmayr et al. 2022): noise ``where(m, x_adv, x)`` to ``tau`` and denoise,
   replacing the known region (outside ``m``) at every step by the original noised to that step's level;
3. **composite**: ``x_cf = where(m, inpainted, x)``, so every pixel outside the mask is *bit-identical*
   to the input.

Ha & Bender (2025) apply this to image regressors (AC-RE) with the regression objective
(:class:`~captum_cfx.objectives.RegressionTarget`): reach ``|r(x') - y~| <= tolerance`` with an MSE loss.
With a classification objective it is ACE itself.

How this implementation differs from the reference code (one image at a time):

- **Batched with compaction**: each sample stops at its first successful step and leaves the batch.
- **Success judged on the returned image** (``stop_on="counterfactual"``): every step also masks and
  inpaints (forward passes only) and a sample stops when the model accepts the *inpainted* image, so
  the inpainting cannot undo a success. ``stop_on="filtered"`` stops on ``F(x_adv)`` and inpaints once
  at the end, as ACE does.
- **Fixed filter noise** by default (``noise="fixed"``): one Gaussian draw per sample serves every
  filter pass and the inpainting, so the attack optimises a deterministic function. ``noise="fresh"``
  draws new noise for every step, as ACE does.
- **DDIM steps** (``eta = 0``) for the filter and for the inpainting, whose known region follows the
  same noise draw (RePaint's resampling jumps are not used).
- **Step rule**: ``"sign"`` (the reference) moves every pixel with a non-zero gradient by the same
  amount, so a large change of a regression target spreads over the whole image; ``"scaled"`` divides
  each sample's gradient by its largest entry, so pixels move in proportion to the model's sensitivity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from torch import Tensor

from captum_cfx._config import Config, Interval, Options, Satisfies
from captum_cfx._search import ActiveSet, Step, rows_finite
from captum_cfx._utils import index_args
from captum_cfx.attr._base import CounterfactualMethod, Inputs
from captum_cfx.generators.ddim import DDIMGenerator, DDIMSampler, from_model_range, to_model_range
from captum_cfx.objectives import LogitMargin, Objective, get_objective

__all__ = ["DiffusionPixelCounterfactual", "PixelCounterfactualConfig", "PixelCounterfactualOutput"]

@dataclass(frozen=True, kw_only=True)
class PixelCounterfactualConfig(Config):
    """The pixel method's settings, validated once; the defaults are the reference settings (DESIGN §1.4,
    after ACE / AC-RE) for images in ``[0, 1]``. The fields mean what the arguments of
    :meth:`DiffusionPixelCounterfactual.generate` of the same names mean."""

    margin: float = 0.0
    step_size: float = 1 / 255
    step_rule: str = "sign"
    max_steps: int = 200
    noise_level: float = 0.2
    filter_steps: int = 5
    mask_threshold: float = 0.1
    dilation: int = 3
    mask_from: str = "filtered"
    noise: str = "fixed"
    stop_on: str = "counterfactual"
    inpaint_trials: int = 1

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "margin": [Interval(float, 0, None)],
        "step_size": [Interval(float, 0, None, low_open=True)],
        "step_rule": [Options("sign", "scaled")],
        "max_steps": [Interval(int, 0, None)],
        "noise_level": [Interval(float, 0, 1, low_open=True)],
        "filter_steps": [Interval(int, 1, None)],
        "mask_threshold": [Interval(float, 0, None)],
        "dilation": [Satisfies(int, "an odd positive int", lambda v: v >= 1 and v % 2 == 1)],
        "mask_from": [Options("filtered", "adversarial")],
        "noise": [Options("fixed", "fresh")],
        "stop_on": [Options("counterfactual", "filtered")],
        "inpaint_trials": [Interval(int, 1, None)],
    }


_DEFAULT = PixelCounterfactualConfig()


@dataclass(kw_only=True)
class PixelCounterfactualOutput:
    """Everything the pixel-space search produced, one row per input.

    The search space is the pixels, so there is no latent: the adversarial images ``x_adv`` and the
    regenerated masks take its place.

    Attributes:
        counterfactuals: the returned images ``(N, C, H, W)``: inpainted inside ``masks``, the input outside.
        inputs: the input images ``(N, C, H, W)`` (what :meth:`attribute` subtracts; also
            :attr:`reconstructions`, the name the latent methods' outputs use).
        original_predictions: the model's output on the inputs, ``(N, *)``.
        predictions: the model's output on the counterfactuals, ``(N, *)``.
        success: bool ``(N,)``: the objective is met on the counterfactual.
        n_steps: int ``(N,)``: attack steps each sample took.
        goals: the per-sample goal (target class or value), ``(N,)``.
        nonfinite: bool ``(N,)``: the search produced NaN/Inf for this sample and was stopped.
        masks: bool ``(N, 1, H, W)``: the region that was regenerated; outside it
            ``counterfactuals == inputs`` exactly.
        adversarials: ``x_adv`` after the attack, ``(N, C, H, W)``.
        filtered: ``F(x_adv)``, the filtered image the model saw at the last attack step.
        attack_success: bool ``(N,)``: the objective was met on ``F(x_adv)`` (before inpainting).
        active_batch_sizes: ``(samples, with gradients)`` of every pass of the search.
        seconds: wall time of the search.
    """

    counterfactuals: Tensor
    inputs: Tensor
    original_predictions: Tensor
    predictions: Tensor
    success: Tensor
    n_steps: Tensor
    goals: Tensor
    nonfinite: Tensor
    masks: Tensor
    adversarials: Tensor
    filtered: Tensor
    attack_success: Tensor
    active_batch_sizes: list[tuple[int, bool]] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return self.counterfactuals.shape[0]

    @property
    def reconstructions(self) -> Tensor:
        """The inputs (a pixel search reconstructs nothing; the name matches the latent methods' outputs)."""
        return self.inputs

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else float("nan")

    @staticmethod
    def cat(outputs: list[PixelCounterfactualOutput]) -> PixelCounterfactualOutput:
        """Concatenate outputs along the batch dimension."""
        if len(outputs) == 1:
            return outputs[0]
        first = outputs[0]
        tensors = {k: torch.cat([getattr(o, k) for o in outputs]) for k, v in vars(first).items()
                   if isinstance(v, Tensor)}
        sizes = [s for o in outputs for s in o.active_batch_sizes]
        return PixelCounterfactualOutput(**tensors, active_batch_sizes=sizes, seconds=sum(o.seconds for o in outputs))


def dilate(mask: Tensor, size: int) -> Tensor:
    """Binary dilation of ``(N, 1, H, W)`` masks with a ``size x size`` square (odd ``size``; 1 = none)."""
    if size <= 1:
        return mask
    return F.max_pool2d(mask.float(), size, stride=1, padding=size // 2) > 0


class DiffusionPixelCounterfactual(CounterfactualMethod):
    r"""Counterfactual images by sign-gradient steps on pixels through a DDPM filter, then inpainting.

    ACE (Jeanneret et al., *Adversarial Counterfactual Visual Explanations*, CVPR 2023) for
    classifiers; AC-RE (Ha & Bender, *Diffusion counterfactuals for image regressors*, 2025) with
    :class:`~captum_cfx.objectives.RegressionTarget` for regressors. See the module docstring for the
    algorithm and how it differs from the reference code.

    :meth:`attribute` returns ``counterfactual - input`` (exactly zero outside the mask);
    :meth:`generate` returns a :class:`PixelCounterfactualOutput`; :meth:`perturb` returns the
    counterfactual images (the ``captum.robust.Perturbation`` interface).

    Args:
        forward_func: the model to explain; returns logits ``(N, K)`` or regression values
            ``(N,)``/``(N, 1)``.
        generator: a :class:`~captum_cfx.generators.DDIMGenerator` (an unconditional diffusers
            ``UNet2DModel`` with its ``DDIMScheduler``) trained on the model's image domain; its
            ``input_range`` is the model's.

    Shape:
        - inputs: ``(N, C, H, W)`` in ``generator.input_range`` (or a tuple whose first tensor is the
          image; the others are passed to ``forward_func`` unchanged).
        - target: classes (``TargetType``) or regression values/changes, as the objective expects.
        - attribute returns ``(N, C, H, W)``, values in ``[-(hi - lo), hi - lo]``, zero outside the mask.

    Examples::

        >>> import torch
        >>> from diffusers import DDIMScheduler, UNet2DModel
        >>> from captum_cfx import DDIMGenerator, DiffusionPixelCounterfactual, RegressionTarget
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
        ...                    norm_num_groups=4, layers_per_block=1,
        ...                    down_block_types=("DownBlock2D", "DownBlock2D"),
        ...                    up_block_types=("UpBlock2D", "UpBlock2D"))
        >>> gen = DDIMGenerator(unet, DDIMScheduler(num_train_timesteps=100))
        >>> regressor = lambda x: x.mean((1, 2, 3))           # brightness in [0, 1]
        >>> method = DiffusionPixelCounterfactual(regressor, gen)
        >>> x = torch.rand(2, 1, 8, 8) * 0.2 + 0.4
        >>> out = method.generate(x, target=0.1, objective=RegressionTarget(mode="relative"),
        ...                       step_size=0.02, max_steps=20, filter_steps=2)
        >>> bool(((out.counterfactuals == x) | out.masks).all())   # unchanged outside the mask
        True
    """

    def __init__(self, forward_func: Callable[..., Tensor], generator: DDIMGenerator) -> None:
        super().__init__(forward_func, generator)
        if not isinstance(generator, DDIMGenerator):
            raise TypeError("`generator` must be a captum_cfx.generators.DDIMGenerator (an unconditional diffusers "
                            f"UNet2DModel with a DDIMScheduler); got {type(generator).__name__}")
        if generator.input_range is None:
            raise ValueError("`generator.input_range` must be set (the model's image range); got None")

    def generate(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType | float = None,
        additional_forward_args: Any = None,
        *,
        objective: Objective | str | None = None,
        margin: float = _DEFAULT.margin,
        step_size: float = _DEFAULT.step_size,
        step_rule: str = _DEFAULT.step_rule,
        max_steps: int = _DEFAULT.max_steps,
        noise_level: float = _DEFAULT.noise_level,
        filter_steps: int = _DEFAULT.filter_steps,
        mask_threshold: float = _DEFAULT.mask_threshold,
        dilation: int = _DEFAULT.dilation,
        mask_from: str = _DEFAULT.mask_from,
        noise: str = _DEFAULT.noise,
        stop_on: str = _DEFAULT.stop_on,
        inpaint_trials: int = _DEFAULT.inpaint_trials,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> PixelCounterfactualOutput:
        """Search counterfactuals and return every result.

        Args:
            inputs: images ``(N, C, H, W)`` or a tuple whose first member is the image.
            target: what the objective needs: the class to reach (``TargetType``), or the regression
                value (``RegressionTarget``; a change with ``mode="relative"``, nothing with ``"mirror"``).
            additional_forward_args: extra arguments for ``forward_func``; tensors with the batch size
                are indexed per sample.
            objective: an :class:`~captum_cfx.objectives.Objective` or its name; default
                ``LogitMargin(margin)``, i.e. the target class becomes the prediction (ACE's criterion).
            margin: margin of the default objective; ignored when ``objective`` is given.
            step_size: size of each sign-gradient step, in the input's units (``1/255`` for ``[0, 1]``).
            step_rule: ``"sign"`` (the reference): every pixel moves by ``step_size`` against the sign
                of its gradient; ``"scaled"``: each sample's gradient divided by its largest absolute
                entry, so the most sensitive pixel moves by ``step_size`` and the others in proportion
                (the change concentrates where the model looks; see the docs for when it matters).
            max_steps: attack steps per sample (int ``>= 0``).
            noise_level: the filter's noise level ``tau`` as a fraction of the diffusion, in ``(0, 1]``
                (0.2 = timestep 200 of 1,000).
            filter_steps: DDIM steps from ``tau`` back to a clean image (filter and inpainting).
            mask_threshold: a pixel is changed when ``max_c |x - x_adv|`` exceeds this (input units).
            dilation: side of the square dilating the mask (odd int; 1 = no dilation).
            mask_from: ``"filtered"`` (default, ACE's pre-explanation): the mask thresholds
                ``|x - F(x_adv)|``, where the filter has removed the attack's spread-out sign noise;
                ``"adversarial"`` thresholds ``|x - x_adv|`` (every pixel a sign step moved counts).
            noise: ``"fixed"`` (one draw per sample for every filter pass and the inpainting) or
                ``"fresh"`` (a new draw per step, as in ACE).
            stop_on: what a sample's stop is judged on: ``"counterfactual"`` (default) masks and inpaints
                at every step (forward only) and stops when the model accepts the *final* image, so the
                inpainting never loses a success; ``"filtered"`` stops on ``F(x_adv)`` and inpaints once
                at the end (ACE's order; the model may reject the inpainted image).
            inpaint_trials: inpaint up to this many times with new noise while the model rejects the
                result (1 = the reference's single inpainting); the first accepted (or the last) is kept.
            internal_batch_size: process the inputs in chunks of this size.
            generator: a ``torch.Generator`` (on the inputs' device) for the filter and inpainting noise.
            progress: show a tqdm progress bar over steps.

        Returns:
            :class:`PixelCounterfactualOutput`.
        """
        cfg = PixelCounterfactualConfig(
            margin=margin, step_size=step_size, step_rule=step_rule, max_steps=max_steps, noise_level=noise_level,
            filter_steps=filter_steps, mask_threshold=mask_threshold, dilation=dilation, mask_from=mask_from,
            noise=noise, stop_on=stop_on, inpaint_trials=inpaint_trials)
        obj = get_objective(objective) if objective is not None else LogitMargin(cfg.margin)
        batch = self._prepare(inputs, target, additional_forward_args, obj)
        base = self.generator.sampler
        sampler = DDIMSampler(base.unet, base.scheduler, filter_steps, encode_level=float(noise_level),
                              checkpoint=base.checkpoint, autocast=base.autocast)
        settings = {**cfg.to_dict(), "step_size": float(step_size), "mask_threshold": float(mask_threshold),
                    "rng": generator, "progress": progress}
        return PixelCounterfactualOutput.cat(self._per_chunk(
            batch, internal_batch_size, lambda chunk: self._search_chunk(chunk, obj, sampler, settings)))

    # ------------------------------------------------------------------ the filter and the inpainting
    def _noised(self, sampler: DDIMSampler, x: Tensor, eps: Tensor, t: int) -> Tensor:
        """``x`` (input range) noised to timestep ``t`` with ``eps``, in model range ``[-1, 1]``."""
        a = sampler.alpha_bar(t, x)
        return a.sqrt() * to_model_range(x, self.generator.input_range) + (1 - a).sqrt() * eps

    def _filter(self, sampler: DDIMSampler, x: Tensor, eps: Tensor) -> Tensor:
        """``F(x)``: noise to ``tau``, then DDIM back to a clean image (differentiable, checkpointed)."""
        return from_model_range(sampler.sample(self._noised(sampler, x, eps, sampler.timesteps()[-1])),
                                self.generator.input_range)

    @torch.no_grad()
    def _inpaint(self, sampler: DDIMSampler, x: Tensor, x_adv: Tensor, mask: Tensor, eps: Tensor) -> Tensor:
        """RePaint with DDIM steps: regenerate inside ``mask``, the known region follows ``x`` noised with
        ``eps``; the result equals ``x`` exactly outside ``mask``."""
        if x.shape[0] == 0:
            return x.clone()
        ts = sampler.timesteps()
        cur = self._noised(sampler, torch.where(mask, x_adv, x), eps, ts[-1])
        for i in range(len(ts) - 1, -1, -1):
            t, t_next = ts[i], (ts[i - 1] if i > 0 else -1)
            cur = sampler.step(cur, t, t_next)  # one DDIM step, as in the filter
            if t_next >= 0:
                cur = torch.where(mask, cur, self._noised(sampler, x, eps, t_next))
        return torch.where(mask, from_model_range(cur, self.generator.input_range), x)

    @staticmethod
    def _mask(x: Tensor, filtered: Tensor, adv: Tensor, s: dict[str, Any]) -> Tensor:
        """``dilate(max_c |x - pre| > threshold)`` with ``pre = F(x_adv)`` or ``x_adv``: ``(N, 1, H, W)`` bool."""
        pre = filtered if s["mask_from"] == "filtered" else adv
        return dilate((x - pre).abs().amax(1, keepdim=True) > s["mask_threshold"], s["dilation"])

    # ------------------------------------------------------------------ the search
    def _step(self, a: ActiveSet, last: bool, obj: Objective, sampler: DDIMSampler, s: dict[str, Any]) -> Step:
        """Filter the active images and ask the model; with ``stop_on="counterfactual"`` also mask, inpaint
        and judge the image that would be returned."""
        v = a.vars
        eps = v["eps"] if s["noise"] == "fixed" or a.t == 0 else s["draw"](len(a))
        xr = v["adv"].detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            filt = self._filter(sampler, xr, eps)
            out = self._model(filt, v["others"], v["extra"])
        if a.t == 0 and not last and not out.requires_grad:
            raise TypeError("`forward_func` is not differentiable: its output does not depend on the image "
                            "through autograd (no_grad, detach or numpy inside?)")
        out_d = out.detach()
        done = filt_ok = obj.done(out_d, v["goal"])
        finite = rows_finite(out_d)
        values = {"adv": v["adv"], "filt": filt.detach(), "attack_ok": filt_ok}
        if s["stop_on"] == "counterfactual":  # judge the image that would be returned
            with torch.no_grad():
                m = self._mask(v["x"], filt.detach(), v["adv"], s)
                cf_now = self._inpaint(sampler, v["x"], v["adv"], m, eps)
                out_cf = self._model(cf_now, v["others"], v["extra"]).detach()
            done = obj.done(out_cf, v["goal"])
            finite = finite & rows_finite(out_cf)
            values.update(cf=cf_now, mask=m, pred=out_cf)
        loss = None if last else obj.loss(out, v["goal"])
        return Step(done=done, finite=finite, values=values, loss=loss, wrt=xr)

    @staticmethod
    def _update(a: ActiveSet, grad: Tensor, s: dict[str, Any], bounds: tuple[float, float]) -> None:
        """One sign (or max-scaled) gradient step on the active images, clamped to the input range."""
        if s["step_rule"] == "sign":
            d = grad.sign()
        else:
            d = grad / grad.flatten(1).abs().amax(1).clamp_min(1e-30).view(-1, *[1] * (grad.dim() - 1))
        a.vars["adv"] = (a.vars["adv"] - s["step_size"] * d).clamp(*bounds)

    def _search_chunk(self, b: Inputs, obj: Objective, sampler: DDIMSampler,
                      s: dict[str, Any]) -> PixelCounterfactualOutput:
        t_start = time.perf_counter()
        x = b.x
        with torch.no_grad():
            src_pred = self._model(x, b.others, b.extra).detach()
        goal = obj.prepare(src_pred, b.target)

        def draw(m: int) -> Tensor:
            return torch.randn((m, *x.shape[1:]), generator=s["rng"], device=x.device, dtype=x.dtype)

        s = {**s, "draw": draw}
        eps_all = draw(len(b))
        adv = x.detach().clone()
        a = ActiveSet(len(b), x.device,
                      vars={"adv": adv, "x": x, "eps": eps_all, "goal": goal, "others": b.others, "extra": b.extra},
                      results={"adv": adv.clone(), "filt": adv.clone(), "cf": adv.clone(),
                               "mask": torch.zeros((len(b), 1, *x.shape[2:]), dtype=torch.bool, device=x.device),
                               "pred": torch.zeros_like(src_pred),
                               "attack_ok": torch.zeros(len(b), dtype=torch.bool, device=x.device)})
        a.run(lambda a, last: self._step(a, last, obj, sampler, s),
              lambda a, grad: self._update(a, grad, s, self.generator.input_range),
              s["max_steps"], progress=s["progress"], desc="pixel counterfactual")
        r = a.results
        with torch.no_grad():
            cf, mask, pred, success = self._finalise(b, obj, sampler, s, a, goal, eps_all)
        return PixelCounterfactualOutput(
            counterfactuals=cf, inputs=x.detach(), original_predictions=src_pred, predictions=pred.detach(),
            success=success, n_steps=a.n_steps, goals=goal, nonfinite=a.nonfinite, masks=mask,
            adversarials=r["adv"], filtered=r["filt"], attack_success=r["attack_ok"] & ~a.nonfinite,
            active_batch_sizes=a.sizes, seconds=time.perf_counter() - t_start)

    def _finalise(self, b: Inputs, obj: Objective, sampler: DDIMSampler, s: dict[str, Any], a: ActiveSet,
                  goal: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mask, inpainting and composite (outside the mask: the input, bit for bit), and up to
        ``inpaint_trials - 1`` new inpaintings of the rejected: ``(counterfactuals, masks, predictions,
        success)``."""
        x, r, nonfinite = b.x, a.results, a.nonfinite
        if s["stop_on"] == "counterfactual":
            mask, cf, pred, success = r["mask"], r["cf"], r["pred"], a.success
        else:
            mask = self._mask(x, r["filt"], r["adv"], s)
            cf = self._inpaint(sampler, x, r["adv"], mask, eps)
            pred = self._model(cf, b.others, b.extra)
            success = obj.done(pred, goal) & ~nonfinite
        for _ in range(s["inpaint_trials"] - 1):
            redo = ~success & ~nonfinite & mask.flatten(1).any(1)
            if not redo.any():
                break
            i = redo.nonzero().flatten()
            cf_i = self._inpaint(sampler, x[i], r["adv"][i], mask[i], s["draw"](len(i)))
            pred_i = self._model(cf_i, tuple(o[i] for o in b.others), index_args(b.extra, len(b), i))
            cf[i], pred[i] = cf_i, pred_i
            success[i] = obj.done(pred_i, goal[i])
        return cf, mask, pred, success
