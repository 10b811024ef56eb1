"""InterFaceGAN: a closed-form edit along a descriptor probe's normal (Shen et al., 2020).

The baseline that Goldwasser & Hooker (2025) compare their counterfactual attack with. A linear probe
``w . z + b`` on the latent space defines a hyperplane; moving ``z`` along its normal ``w`` changes the
probe's score linearly, so the step that reaches a target probability ``p*`` is closed-form:

    z' = z + eta * w,   eta = (logit(p*) - (w . z + b)) / ||w||^2

For continuous (standardised linear) probes the target is a value ``y*`` in standard deviations:
``eta = (y* - (w . z + b)) / ||w||^2``. The edit never looks at the explained model; :meth:`generate`
only *evaluates* the model on the edited images, which is what makes it a baseline for model-driven
counterfactuals.

How ours differs from InterFaceGAN: it uses our latent probes (logistic or standardised linear regression)
rather than a linear SVM, and optionally projects the normal off other descriptors' normals
(``condition_on``, InterFaceGAN's "conditional manipulation").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor

from captum_cfx._utils import as_tuple, call_model, eval_mode, predicted_classes
from captum_cfx._validation import format_inputs, parse_target
from captum_cfx.attr._common import check_model_and_generator, generate_on, like_inputs
from captum_cfx.attr.output import CounterfactualOutput
from captum_cfx.descriptors.probes import LatentProbes, logit
from captum_cfx.generators.base import LatentGenerator

__all__ = ["InterFaceGANEdit", "interfacegan_step"]


def interfacegan_step(latents: Tensor, weight: Tensor, bias: float | Tensor, target_score: float | Tensor) -> Tensor:
    """Closed-form move of each latent along ``weight`` until ``weight . z + bias == target_score``.

    Args:
        latents: ``(N, d)`` latent codes.
        weight: ``(d,)`` probe normal (not necessarily unit length).
        bias: the probe's intercept.
        target_score: the linear score to reach (``logit(p*)`` for a logistic probe), a float or ``(N,)``.

    Returns:
        ``(N, d)`` edited latents, same device and dtype as ``latents``.
    """
    if not isinstance(latents, Tensor) or latents.dim() != 2:
        raise ValueError(f"`latents` must be an (N, d) tensor; got {getattr(latents, 'shape', type(latents).__name__)}")
    if not isinstance(weight, Tensor) or weight.shape != (latents.shape[1],):
        raise ValueError(f"`weight` must be a ({latents.shape[1]},) tensor, the latent size; "
                         f"got {getattr(weight, 'shape', type(weight).__name__)}")
    w = weight.to(latents.device, latents.dtype)
    norm2 = (w * w).sum()
    if not norm2 > 0:
        raise ValueError("`weight` must be non-zero")
    score = latents @ w + torch.as_tensor(bias, device=latents.device, dtype=latents.dtype)
    eta = (torch.as_tensor(target_score, device=latents.device, dtype=latents.dtype) - score) / norm2
    return latents + eta[:, None] * w


class InterFaceGANEdit(PerturbationAttribution):
    r"""Edit images along one descriptor probe's normal to a target probability (InterFaceGAN baseline).

    Encode ``x`` to ``z0``, step in closed form along the probe normal of ``descriptor`` until the probe reads
    ``probability`` (binary probes) or ``value`` standard deviations (continuous probes), decode, and run the
    model on the result.

    Reference: Shen et al., *Interpreting the Latent Space of GANs for Semantic Face Editing* (CVPR 2020);
    used as a baseline by Goldwasser & Hooker, *Counterfactual Attacks* (2025).

    Args:
        forward_func: the model evaluated on the edited images.
        generator: the :class:`~captum_cfx.generators.LatentGenerator` the probes were fitted in.
        probes: fitted :class:`~captum_cfx.descriptors.LatentProbes`.

    Shape:
        - inputs: ``(N, C, H, W)``; attribute returns ``edited - reconstruction``, ``(N, C, H, W)``.

    Examples::

        >>> import torch
        >>> from captum_cfx import InterFaceGANEdit
        >>> from captum_cfx.datasets import load_mnist
        >>> from captum_cfx.descriptors import LatentProbes, Morphometry
        >>> from captum_cfx.zoo import load_generator, load_pretrained
        >>> model, generator = load_pretrained("mnist-classifier"), load_generator("mnist-vae")
        >>> xtr, _ = load_mnist("train"); x, _ = load_mnist("test")
        >>> morpho = Morphometry()
        >>> probes = LatentProbes().fit(generator.encode(xtr[::8]).free.detach(), morpho(xtr[::8]), morpho.names)
        >>> edit = InterFaceGANEdit(model, generator, probes)
        >>> out = edit.generate(x[::125], descriptor="thickness", value=2.0)   # +2 std of thickness
        >>> thickness = probes.predict(out.latents.free)[:, probes.index("thickness")]
        >>> torch.allclose(thickness, torch.full((8,), 2.0), atol=1e-4)
        True
        >>> maps = edit.attribute(x[::125], descriptor="thickness", value=2.0)   # edited - reconstruction
        >>> maps.shape
        torch.Size([8, 1, 28, 28])
    """

    def __init__(self, forward_func: Callable[..., Tensor], generator: LatentGenerator, probes: LatentProbes) -> None:
        check_model_and_generator(forward_func, generator)
        if not isinstance(probes, LatentProbes):
            raise TypeError(f"`probes` must be LatentProbes; got {type(probes).__name__}")
        probes.check_fitted()
        PerturbationAttribution.__init__(self, forward_func)
        self.generator = generator
        self.probes = probes

    def direction(self, descriptor: str | int, condition_on: Sequence[str | int] = ()) -> Tensor:
        """The (un-normalised) probe normal ``(d,)``, projected off the normals of ``condition_on``."""
        j = self.probes.index(descriptor)
        w = self.probes.weight_[j].clone()
        others = [self.probes.index(c) for c in condition_on]
        if j in others:
            raise ValueError(f"`condition_on` must not contain the edited descriptor {self.probes.names_[j]!r}")
        if others:
            q, _ = torch.linalg.qr(self.probes.weight_[others].T)
            w = w - q @ (q.T @ w)
        return w

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Pixel map ``edited - reconstruction`` shaped like ``inputs`` (see :meth:`generate` for ``kwargs``)."""
        out, tup, is_tuple = generate_on(self, inputs, target, additional_forward_args, **kwargs)
        return like_inputs((out.counterfactuals - out.reconstructions).detach(), tup, is_tuple)

    def generate(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        descriptor: str | int = 0,
        probability: float | None = None,
        value: float | None = None,
        condition_on: Sequence[str | int] = (),
    ) -> CounterfactualOutput:
        """Edit every input along ``descriptor`` and evaluate the model on the edited images.

        Args:
            inputs: images ``(N, C, H, W)`` (or a tuple, first member the image).
            target: the class the edit should produce; success = the model predicts it. ``None``: success =
                the predicted class changed.
            additional_forward_args: extra model arguments.
            descriptor: the descriptor (name or column) to edit.
            probability: target probability of a binary probe (default 0.75, the paper's threshold).
            value: target value, in standard deviations, of a continuous probe (required for those).
            condition_on: descriptors whose probe scores the edit must keep (projected-out normals).

        Returns:
            :class:`~captum_cfx.CounterfactualOutput` (``n_steps`` is 1 for every sample).
        """
        t0 = time.perf_counter()
        tup, _ = format_inputs(inputs)
        x = self.generator.check_images(tup[0], "inputs")
        others, extra = tup[1:], as_tuple(additional_forward_args)
        j = self.probes.index(descriptor)
        if self.probes.kinds_[j] == "binary":
            if value is not None:
                raise ValueError(f"`value` is for continuous descriptors; {self.probes.names_[j]!r} is binary "
                                 "(give `probability`)")
            goal_score = logit(0.75 if probability is None else float(probability))
        else:
            if probability is not None or value is None:
                raise ValueError(f"descriptor {self.probes.names_[j]!r} is continuous: give `value` (in standard "
                                 "deviations), not `probability`")
            goal_score = float(value)
        w = self.direction(j, condition_on)
        n = x.shape[0]
        with torch.no_grad(), eval_mode(self.forward_func, self.generator):
            lat0 = self.generator.encode(x)
            z0 = lat0.free
            flat = z0.flatten(1)
            if flat.shape[1] != self.probes.latent_dim_:
                raise ValueError(f"the generator's latents have {flat.shape[1]} features but the probes were fitted "
                                 f"on {self.probes.latent_dim_}")
            # the projected normal changes the score by w_j . w per unit step
            wj = self.probes.weight_[j].to(flat.device, flat.dtype)
            wd = w.to(flat.device, flat.dtype)
            score = flat @ wj + float(self.probes.bias_[j])
            gain = float(wj @ wd)
            if abs(gain) < 1e-12:
                raise ValueError("`condition_on` removes the whole direction of the edited descriptor")
            z = (flat + ((goal_score - score) / gain)[:, None] * wd).view_as(z0)
            lat = lat0.replace(z)
            recon = self.generator.decode(lat0)
            edited = self.generator.decode(lat)
            pred0 = call_model(self.forward_func, x, others, extra)
            pred = call_model(self.forward_func, edited, others, extra)
        k = pred.shape[1] if pred.dim() == 2 else None
        tgt = parse_target(target, n, k if k and k > 1 else None, x.device)
        c0, c1 = predicted_classes(pred0), predicted_classes(pred)
        success = (c1 == tgt) if tgt is not None else (c1 != c0)
        return CounterfactualOutput(
            counterfactuals=edited, latents=lat, original_latents=lat0, reconstructions=recon,
            original_predictions=pred0, predictions=pred, success=success,
            n_steps=torch.ones(n, dtype=torch.long, device=x.device),
            goals=tgt if tgt is not None else c0, nonfinite=~torch.isfinite(edited.flatten(1)).all(1),
            active_batch_sizes=[(n, False)], seconds=time.perf_counter() - t0)
