"""The built-in rows of ``captum-cfx compare``: one adapter per method, and :func:`default_registry`.

Each adapter is a function ``Task -> CFResult | None`` (counterfactual methods) or
``Task -> attribute(inputs, target=...) | None`` (attribution methods); ``None`` means it does not apply
to that task. :func:`default_registry` returns a new :class:`~captum_cfx.compare.Registry` holding them
in table order.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_cfx.compare.registry import CFResult, Registry, timed
from captum_cfx.compare.tasks import Task

__all__ = ["PGD", "default_registry"]

PGD = {"radius": 0.3, "step_size": 0.01, "step_num": 100}  # as in benchmarks/latent_attack.py


def _latent_attack_vae(task: Task) -> CFResult | None:
    from captum_cfx import LatentCounterfactualAttack, RegressionTarget

    if task.generator is None:
        return None
    attack = LatentCounterfactualAttack(task.model, task.generator)
    kw = {"objective": RegressionTarget(tolerance=task.tolerance)} if task.tolerance is not None else {}
    out, seconds = timed(lambda: attack.generate(task.images, target=task.goals, **kw))
    return CFResult.from_output(out, seconds)


def _latent_attack_minimal(task: Task) -> CFResult | None:
    """The latent attack at ``LatentAttackConfig.preset("minimal")`` (steepest descent in the latent L2 norm;
    docs/latent_attack.md, "Minimal counterfactuals")."""
    from captum_cfx import LatentAttackConfig, LatentCounterfactualAttack, RegressionTarget

    if task.generator is None:
        return None
    attack = LatentCounterfactualAttack(task.model, task.generator)
    kw = LatentAttackConfig.preset("minimal").to_dict()
    if task.tolerance is not None:
        kw["objective"] = RegressionTarget(tolerance=task.tolerance)
    out, seconds = timed(lambda: attack.generate(task.images, target=task.goals, **kw))
    return CFResult.from_output(out, seconds, note="minimal preset")


def _coordinate_search(task: Task) -> CFResult:
    """:class:`~captum_cfx.LatentCoordinateSearch` in the attribute-coded ``world-factor-ae`` (default settings:
    quantile candidates, at most 3 coordinates, SEDC's selection; docs/coordinate_search.md)."""
    from captum_cfx import LatentCoordinateSearch
    from captum_cfx.zoo import load_generator

    search = LatentCoordinateSearch(task.model, load_generator("world-factor-ae").to(task.images.device))
    out, seconds = timed(lambda: search.generate(task.images, target=task.goals))
    return CFResult.from_output(out, seconds, note="coordinates changed, at most 3")


def _latent_attack_gan(task: Task) -> CFResult:
    from captum_cfx import LatentCounterfactualAttack
    from captum_cfx.zoo import load_generator

    gen = load_generator("mnist-gan").to(task.images.device)
    attack = LatentCounterfactualAttack(task.model, gen)
    out, seconds = timed(lambda: attack.generate(task.images, target=task.goals))
    note = ""
    if out.projection_ok is not None:
        note = f"projection ok {float(out.projection_ok.float().mean()):.0%}"
    return CFResult.from_output(out, seconds, note)


def _interfacegan(task: Task) -> CFResult | None:
    from captum_cfx import InterFaceGANEdit, LatentProbes

    if task.generator is None or task.fit_images is None or task.fit_descriptors is None:
        return None
    x, goals = task.images, task.goals

    def run() -> tuple[Tensor, Tensor, Any]:
        key = ("interfacegan-probes", id(task.generator), id(task.fit_images))  # the model plays no part
        if key not in task.cache:
            with torch.no_grad():
                z = torch.cat([task.generator.encode(task.fit_images[i : i + 1000]).free.flatten(1).cpu()
                               for i in range(0, len(task.fit_images), 1000)])
            task.cache[key] = LatentProbes().fit(z, task.fit_descriptors.cpu(), list(task.descriptor_names),
                                                 kinds="binary")
        probes = task.cache[key]
        edit = InterFaceGANEdit(task.model, task.generator, probes)
        cf, start = torch.empty_like(x), torch.empty_like(x)
        for c in goals.unique().tolist():
            m = goals == c
            descriptor, p = task.class_edit[int(c)]
            out = edit.generate(x[m], target=goals[m], descriptor=descriptor, probability=p)
            cf[m], start[m] = out.counterfactuals, out.reconstructions
        return cf, start, probes

    (cf, start, _), seconds = timed(run)
    return CFResult(cf, seconds, n_steps=torch.ones(len(x), dtype=torch.long), start=start,
                    note="probes fitted on held-out data")


def _gcd_transfer(task: Task) -> CFResult | None:
    from captum_cfx import GlobalCounterfactualDirections

    if task.generator is None or task.fit_images is None:
        return None
    x, src, goals = task.images, task.sources, task.goals

    def run() -> tuple[Tensor, Tensor, int]:
        with torch.no_grad():
            fit_pred = torch.cat([task.model(task.fit_images[i : i + 1000]).argmax(1)
                                  for i in range(0, len(task.fit_images), 1000)])
        cf, start = torch.empty_like(x), torch.empty_like(x)
        pairs = sorted({(min(a, b), max(a, b)) for a, b in zip(src.tolist(), goals.tolist())})
        for neg, pos in pairs:
            m = ((src == neg) & (goals == pos)) | ((src == pos) & (goals == neg))
            gcd = GlobalCounterfactualDirections(task.model, task.generator, classes=(neg, pos),
                                                 distance=task.distance)
            cand = (fit_pred == neg).nonzero()
            if not len(cand):
                cand = (fit_pred == pos).nonzero()
            i = int(cand[0]) if len(cand) else 0
            gcd.fit(task.fit_images[i : i + 1], generator=task.rng(1))  # one source image per question
            out = gcd.transfer(x[m], target=goals[m])
            cf[m], start[m] = out.counterfactuals, out.reconstructions
        return cf, start, len(pairs)

    (cf, start, n_fits), seconds = timed(run)
    plural = "s" if n_fits != 1 else ""
    return CFResult(cf, seconds, start=start, note=f"{n_fits} direction{plural}, one source image each")


_DIFFAE = {"mnist": "mnist-diffae", "squares": "squares-diffae"}
_DIFFAE_REQUIRES = {f: (m,) for f, m in _DIFFAE.items()}

def _latent_attack_diffae(task: Task) -> CFResult | None:
    """The latent attack in a shipped diffusion autoencoder's ``z_sem`` (Diff-AE-RE style), with 10 DDIM steps
    inside the attack. For classifiers: normalised-gradient steps of half ``z_sem``'s measured spread (``z_sem``
    has no prior; Adam's per-dimension steps of the whole spread made the counterfactuals less real than the
    VAE's: docs/latent_attack.md, "The diffusion autoencoder's realism gap"); for the squares regressor Adam at
    0.02, as in ``benchmarks/regression.py``. About 10 s per counterfactual on one CPU thread: slow."""
    from captum_cfx import LatentCounterfactualAttack, RegressionTarget
    from captum_cfx.zoo import available, load_generator

    name = _DIFFAE.get(task.family)
    if name is None or name not in available():
        return None
    gen = load_generator(name).to(task.images.device)
    gen.sampler.num_inference_steps = 10
    kw: dict[str, Any] = {"max_steps": 150}
    if task.regression:  # the squares recipe of benchmarks/regression.py (docs/regression.md): a step of
        kw.update(lr=0.02, objective=RegressionTarget(tolerance=task.tolerance))  # z_sem's spread overshoots
        note = "10 DDIM steps, Adam 0.02, at most 150 attack steps"
    else:
        with torch.no_grad():
            kw.update(optimizer="l2", lr=0.5 * float(gen.encode_semantic(task.images).std(0).mean()))
        note = "10 DDIM steps, normalised-gradient steps of half z_sem's spread, at most 150"
    attack = LatentCounterfactualAttack(task.model, gen)
    out, seconds = timed(lambda: attack.generate(task.images, target=task.goals, **kw))
    return CFResult.from_output(out, seconds, note=note)


def _pixel_diffusion(task: Task) -> CFResult:
    """:class:`~captum_cfx.DiffusionPixelCounterfactual` with the shipped squares DDPM as its filter, at the
    settings of ``benchmarks/regression.py`` (4/255 scaled steps, 2 filter steps: faster than ACE's 1/255, 5)."""
    from captum_cfx import DiffusionPixelCounterfactual, RegressionTarget
    from captum_cfx.zoo import load_generator

    ddpm = load_generator("squares-ddpm").to(task.images.device)
    kw: dict[str, Any] = {"objective": RegressionTarget(tolerance=task.tolerance)} if task.regression else {}
    method = DiffusionPixelCounterfactual(task.model, ddpm)
    out, seconds = timed(lambda: method.generate(
        task.images, target=task.goals, generator=task.rng(7), step_size=4 / 255, step_rule="scaled", max_steps=200,
        noise_level=0.2, filter_steps=2, mask_threshold=0.1, dilation=3, **kw))
    return CFResult(out.counterfactuals.detach(), seconds, n_steps=out.n_steps.detach(),
                    note="4/255 scaled steps, 2 filter steps")


def _pgd(task: Task) -> CFResult:
    from captum.robust import PGD as CaptumPGD

    if task.regression:
        def loss(out: Tensor, goal: Tensor) -> Tensor:
            return (out.reshape(len(out)) - goal).pow(2)
    else:
        def loss(out: Tensor, goal: Tensor) -> Tensor:
            return F.cross_entropy(out, goal, reduction="none")

    pgd = CaptumPGD(task.model, loss_func=loss, lower_bound=0.0, upper_bound=1.0)

    def run() -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Input Tensor 0 did not already require gradients"
            return pgd.perturb(task.images, target=task.goals, targeted=True, **PGD).detach()

    cf, seconds = timed(run)
    return CFResult(cf, seconds, n_steps=torch.full((len(cf),), PGD["step_num"], dtype=torch.long),
                    note=f"L-inf {PGD['radius']}, {PGD['step_num']} steps")


def _lig(task: Task) -> Callable[..., Tensor] | None:
    from captum_cfx import LatentIntegratedGradients

    if task.generator is None:
        return None
    return partial(LatentIntegratedGradients(task.model, task.generator).attribute, n_steps=32)


def _ig(task: Task) -> Callable[..., Tensor]:
    from captum.attr import IntegratedGradients

    return partial(IntegratedGradients(task.model).attribute, n_steps=32)


def _saliency(task: Task) -> Callable[..., Tensor]:
    from captum.attr import Saliency

    return partial(Saliency(task.model).attribute, abs=False)


def _occlusion(task: Task) -> Callable[..., Tensor]:
    from captum.attr import Occlusion

    c = task.images.shape[1]
    return partial(Occlusion(task.model).attribute, sliding_window_shapes=(c, 4, 4), strides=(c, 4, 4))


def default_registry() -> Registry:
    """A new :class:`~captum_cfx.compare.Registry` with every built-in row, in table order.

    Register your own adapters on it (or on a :meth:`~captum_cfx.compare.Registry.copy`) and pass it to
    :func:`~captum_cfx.compare.run_compare`; each call returns a fresh registry.
    """
    registry = Registry()
    every = ("mnist", "world", "squares")
    registry.register("latent attack (VAE)", every)(_latent_attack_vae)
    registry.register("latent attack, minimal (VAE)", every)(_latent_attack_minimal)
    registry.register("coordinate search (factor AE)", ("world",), requires=("world-factor-ae",))(_coordinate_search)
    registry.register("latent attack (GAN)", ("mnist",), requires=("mnist-gan",), slow=True)(_latent_attack_gan)
    registry.register("InterFaceGAN (VAE)", ("mnist", "world"))(_interfacegan)
    registry.register("GCD transfer (VAE)", ("mnist", "world"))(_gcd_transfer)
    registry.register("latent attack (DiffAE)", ("mnist", "squares"), requires=_DIFFAE_REQUIRES,
                      slow=True)(_latent_attack_diffae)
    registry.register("pixel diffusion (ACE)", ("squares",), requires=("squares-ddpm",),
                      slow=True)(_pixel_diffusion)
    registry.register("captum PGD (pixels)", every)(_pgd)
    registry.register_attribution("Latent IG (VAE)", ("mnist",))(_lig)
    registry.register_attribution("Integrated Gradients (zero baseline)", ("mnist",))(_ig)
    registry.register_attribution("Saliency (signed gradient)", ("mnist",))(_saliency)
    registry.register_attribution("Occlusion (4x4)", ("mnist",))(_occlusion)
    return registry
