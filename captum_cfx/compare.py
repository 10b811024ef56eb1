"""``captum-cfx compare``: every available method on the same images and targets, in one table.

The command builds one :class:`Task` per data set (the images, the model to explain, the targets, an
independent oracle, a feature network for realism, the data set's reference generator), runs every
registered method that applies and whose models are shipped, scores every result with the same
:mod:`captum_cfx.metrics`, and writes ``compare.json``, ``compare.md`` and one figure grid per task.

Tasks (fixed seeds; ``--quick`` = 100 images per data set, 8 for slow methods):

- ``mnist``: class-interleaved embedded MNIST test digits; ``mnist-classifier``; target = label + 1 (mod 10);
  oracle ``mnist-oracle``; generator ``mnist-vae``. One target per digit keeps the binary questions that
  GCD needs to 10 (one per class pair) instead of up to 90 with random targets.
- ``world (spurious smile)`` / ``world (decorrelated smile)``: attribute-world faces; the two smile
  classifiers; target = the other class; oracle = ``world-oracle``'s smile reading; generator ``world-vae``.
  Scored against the ground truth too (which factor each counterfactual changed, MNAC, and the factor the
  classifier truly depends on, measured by single-factor interventions).
- ``squares``: the regressor; mirrored targets as in seed 003 (the prediction moved by 0.5 towards the
  other half of ``[0, 1]``, reached within 0.05); oracle ``squares-oracle``; generator ``squares-vae`` when
  it is shipped (otherwise only pixel methods run there).

Adding a method
---------------
A counterfactual method is one adapter, a function ``Task -> CFResult`` (or ``None`` when it does not
apply to that task), registered with :func:`register`. Rows for methods whose ``requires`` models are
not shipped are absent from the table (listed under "not run" with the reason), never faked. For
example, the latent attack in a diffusion autoencoder's latent space::

    from captum_cfx.compare import CFResult, Task, register, timed

    @register("latent attack (my DiffAE)", families=("mnist",), requires=("mnist-diffae",), slow=True)
    def latent_attack_diffae(task: Task) -> CFResult:
        from captum_cfx import LatentCounterfactualAttack
        from captum_cfx.zoo import load_generator

        gen = load_generator("mnist-diffae").to(task.images.device)
        attack = LatentCounterfactualAttack(task.model, gen)
        out, seconds = timed(lambda: attack.generate(task.images, target=task.goals))
        return CFResult.from_output(out, seconds)

and a pixel-space diffusion method (ACE-style) that returns images only::

    @register("pixel diffusion (ACE)", families=("mnist", "squares"), requires=("squares-ddpm",), slow=True)
    def pixel_diffusion(task: Task) -> CFResult:
        method = ...                      # build it from task.model
        cf, seconds = timed(lambda: method(task.images, task.goals))
        return CFResult(cf, seconds)      # start=None: changes are read against the inputs

``slow=True`` methods run on only the first ``QUICK_SLOW_N`` (8) images of each task under ``--quick``
(the table's ``n`` column says so). Registration order is table order. Attribution methods register the
same way with :func:`register_attribution`: a builder ``Task -> attribute(inputs, target) -> attributions``;
they are scored with ``captum.metrics.infidelity`` and ``captum.metrics.sensitivity_max``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTRIBUTIONS",
    "METHODS",
    "AttributionMethod",
    "CFResult",
    "Method",
    "Task",
    "build_tasks",
    "register",
    "register_attribution",
    "run_compare",
    "timed",
    "to_markdown",
    "update_readme",
]

DATASETS = ("mnist", "world", "squares")
QUICK_N = 100
#: ``--quick`` runs ``slow`` methods on this many of each task's images (the first ones: MNIST is
#: class-interleaved, so they cover every class); their rows say so in the ``n`` column
QUICK_SLOW_N = 8
DEFAULT_N = 1000
#: seeds of the drawn data (worlds) and of every stochastic step; fixed so that runs are comparable
SEEDS = {"world": 20_001, "world_fit": 20_002, "squares": 20_003, "metrics": 0}
PGD = {"radius": 0.3, "step_size": 0.01, "step_num": 100}  # as in benchmarks/latent_attack.py
SQUARES_TOLERANCE = 0.05  # seed 003's success radius on [0, 1] targets
SHOW = 8  # images per figure grid

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn()`` and return its result and wall time in seconds (CUDA work included)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- containers
@dataclass
class Task:
    """One data set, model and set of targets that every method is run on.

    Attributes:
        name: the table's name for the task.
        family: ``"mnist"``, ``"world"`` or ``"squares"``; methods register for families.
        images: ``(N, C, H, W)`` inputs in ``[0, 1]``.
        sources: ``(N,)`` the class each input is moved away from (regression: the original value).
        goals: ``(N,)`` the target class (regression: the target value).
        model: the model to explain.
        oracle: an independent judge with the model's outputs (class logits or a value).
        features: the feature network of FID / sFID.
        generator: the data set's reference :class:`~captum_cfx.generators.LatentGenerator` (latent
            proximity, manifold distance, latent methods), or ``None``.
        seed: seed of the stochastic steps.
        tolerance: regression: the largest ``|f(x') - goal|`` that counts as reached; ``None`` for classifiers.
        distance: perceptual distance for GCD (``None``: its default, MNIST oracle features).
        fit_images, fit_descriptors, descriptor_names: data that fitted methods learn from (latent probes,
            GCD sources), never the task's images; binary descriptor table ``(M, k)``.
        class_edit: class -> (descriptor, target probability) for InterFaceGAN's edit towards that class.
        world, factors: the synthetic world and the factor table of ``images`` (ground-truth scoring).
        factor_oracle: reads factor tables from images (the world's attribute oracle).
        truth: ground truth of what the model depends on: ``{factor: decision flip rate under do(factor)}``.
        right_factor: the factor the model truly depends on; ``spurious_factor``: the planted one.
        description: one line for the report.
        cache: state shared between adapters and between tasks that share a generator (e.g. fitted probes).
    """

    name: str
    family: str
    images: Tensor
    sources: Tensor
    goals: Tensor
    model: nn.Module
    oracle: Callable[[Tensor], Tensor]
    features: nn.Module
    generator: Any = None
    seed: int = 0
    tolerance: float | None = None
    distance: Callable[[Tensor, Tensor], Tensor] | None = None
    fit_images: Tensor | None = None
    fit_descriptors: Tensor | None = None
    descriptor_names: tuple[str, ...] = ()
    class_edit: dict[int, tuple[str, float]] = field(default_factory=dict)
    world: Any = None
    factors: Tensor | None = None
    factor_oracle: Any = None
    truth: dict[str, float] = field(default_factory=dict)
    right_factor: str | None = None
    spurious_factor: str | None = None
    description: str = ""
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def regression(self) -> bool:
        return self.tolerance is not None

    def rng(self, offset: int = 0) -> torch.Generator:
        """A fresh seeded ``torch.Generator`` on the images' device."""
        return torch.Generator(device=self.images.device).manual_seed(self.seed + offset)

    def subset(self, n: int) -> Task:
        """The same task on its first ``n`` images (fit data, models and truth unchanged; a fresh cache)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"`n` must be a positive int; got {n!r}")
        if n >= len(self.images):
            return self
        return replace(self, images=self.images[:n], sources=self.sources[:n], goals=self.goals[:n],
                       factors=self.factors[:n] if self.factors is not None else None, cache={})


@dataclass
class CFResult:
    """What an adapter returns.

    Attributes:
        counterfactuals: ``(N, C, H, W)``, row ``i`` made from ``task.images[i]``.
        seconds: wall time of the method (fits it needs included; metrics excluded).
        n_steps: ``(N,)`` optimisation steps or model queries per counterfactual, if the method counts them.
        start: the image the method edits, ``(N, C, H, W)`` (the generator's reconstruction for latent
            methods); ground-truth changes are read against it. ``None``: the inputs.
        note: a short remark shown in the table.
    """

    counterfactuals: Tensor
    seconds: float
    n_steps: Tensor | None = None
    start: Tensor | None = None
    note: str = ""

    @staticmethod
    def from_output(out: Any, seconds: float | None = None, note: str = "") -> CFResult:
        """From a :class:`~captum_cfx.CounterfactualOutput`."""
        return CFResult(out.counterfactuals.detach(), out.seconds if seconds is None else seconds,
                        out.n_steps.detach(), out.reconstructions.detach(), note)


@dataclass(frozen=True)
class Method:
    """A registered counterfactual method (see :func:`register`)."""

    name: str
    run: Callable[[Task], CFResult | None]
    families: tuple[str, ...]
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    slow: bool = False


@dataclass(frozen=True)
class AttributionMethod:
    """A registered attribution method (see :func:`register_attribution`)."""

    name: str
    build: Callable[[Task], Callable[..., Tensor] | None]
    families: tuple[str, ...]
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    slow: bool = False


METHODS: list[Method] = []
ATTRIBUTIONS: list[AttributionMethod] = []


Requires = Sequence[str] | Mapping[str, Sequence[str]]


def _requires_by_family(requires: Requires, families: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``requires`` as ``{family: zoo models}``: one list for every family, or a mapping per family."""
    if isinstance(requires, str):
        raise TypeError(f"`requires` must be a sequence of zoo model names or a mapping family -> names; "
                        f"got the str {requires!r}")
    if isinstance(requires, Mapping):
        bad = [f for f in requires if f not in families]
        if bad:
            raise ValueError(f"`requires` names families the method does not register for: {bad!r}")
        return {f: tuple(requires.get(f, ())) for f in families}
    return {f: tuple(requires) for f in families}


def _check_registration(name: str, families: Sequence[str], registry: Sequence[Any]) -> tuple[str, ...]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty str; got {name!r}")
    if any(m.name == name for m in registry):
        raise ValueError(f"`name` must be new; {name!r} is already registered")
    fams = tuple(families)
    bad = [f for f in fams if f not in DATASETS]
    if not fams or bad:
        raise ValueError(f"`families` must be a non-empty subset of {DATASETS}; got {fams!r}")
    return fams


def register(name: str, families: Sequence[str], requires: Requires = (), slow: bool = False
             ) -> Callable[[Callable[[Task], CFResult | None]], Callable[[Task], CFResult | None]]:
    """Register a counterfactual adapter ``Task -> CFResult | None`` (a decorator).

    Args:
        name: the row name.
        families: data set families it runs on (``"mnist"``, ``"world"``, ``"squares"``).
        requires: zoo model names it needs, for every family or as a mapping ``{family: names}``; the row
            is absent when one is not shipped (and listed under "not run" with the missing names).
        slow: ``--quick`` runs it on only the first :data:`QUICK_SLOW_N` images of each task.
    """
    fams = _check_registration(name, families, METHODS)
    req = _requires_by_family(requires, fams)

    def deco(fn: Callable[[Task], CFResult | None]) -> Callable[[Task], CFResult | None]:
        METHODS.append(Method(name, fn, fams, req, slow))
        return fn

    return deco


def register_attribution(name: str, families: Sequence[str], requires: Requires = (), slow: bool = False
                         ) -> Callable[[Callable[[Task], Any]], Callable[[Task], Any]]:
    """Register an attribution builder ``Task -> attribute(inputs, target=...) | None`` (a decorator)."""
    fams = _check_registration(name, families, ATTRIBUTIONS)
    req = _requires_by_family(requires, fams)

    def deco(fn: Callable[[Task], Any]) -> Callable[[Task], Any]:
        ATTRIBUTIONS.append(AttributionMethod(name, fn, fams, req, slow))
        return fn

    return deco


# ---------------------------------------------------------------------------------------------- adapters
@register("latent attack (VAE)", families=("mnist", "world", "squares"))
def _latent_attack_vae(task: Task) -> CFResult | None:
    from captum_cfx import LatentCounterfactualAttack, RegressionTarget

    if task.generator is None:
        return None
    attack = LatentCounterfactualAttack(task.model, task.generator)
    kw = {"objective": RegressionTarget(tolerance=task.tolerance)} if task.tolerance is not None else {}
    out, seconds = timed(lambda: attack.generate(task.images, target=task.goals, **kw))
    return CFResult.from_output(out, seconds)


@register("latent attack (GAN)", families=("mnist",), requires=("mnist-gan",), slow=True)
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


@register("InterFaceGAN (VAE)", families=("mnist", "world"))
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
    return CFResult(cf, seconds, torch.ones(len(x), dtype=torch.long), start,
                    note="probes fitted on held-out data")


@register("GCD transfer (VAE)", families=("mnist", "world"))
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
    return CFResult(cf, seconds, None, start, note=f"{n_fits} direction{plural}, one source image each")


_DIFFAE = {"mnist": "mnist-diffae", "squares": "squares-diffae"}
_DIFFAE_REQUIRES = {f: (m,) for f, m in _DIFFAE.items()}


@register("latent attack (DiffAE)", families=("mnist", "squares"), requires=_DIFFAE_REQUIRES, slow=True)
def _latent_attack_diffae(task: Task) -> CFResult | None:
    """The unchanged latent attack in a shipped diffusion autoencoder's ``z_sem`` (Diff-AE-RE style), with
    10 DDIM steps inside the attack. Adam's step is ``z_sem``'s measured spread for classifiers (the VAE's 0.3
    is in units of its unit prior; ``z_sem`` has no prior) and 0.02 for the squares regressor, as in
    ``benchmarks/regression.py``. About 10 s per counterfactual on one CPU thread: slow."""
    from captum_cfx import LatentCounterfactualAttack, RegressionTarget
    from captum_cfx.zoo import available, load_generator

    name = _DIFFAE.get(task.family)
    if name is None or name not in available():
        return None
    gen = load_generator(name).to(task.images.device)
    gen.sampler.num_inference_steps = 10
    if task.regression:  # the squares recipe of benchmarks/regression.py (docs/regression.md): a step of
        lr = 0.02  # z_sem's spread (0.53) overshoots a regression target and changes the background too
    else:
        with torch.no_grad():
            lr = float(gen.encode_semantic(task.images).std(0).mean())
    attack = LatentCounterfactualAttack(task.model, gen)
    kw: dict[str, Any] = {"objective": RegressionTarget(tolerance=task.tolerance)} if task.regression else {}
    out, seconds = timed(lambda: attack.generate(task.images, target=task.goals, lr=lr, max_steps=150, **kw))
    return CFResult.from_output(out, seconds, note="10 DDIM steps, at most 150 attack steps")


@register("pixel diffusion (ACE)", families=("squares",), requires=("squares-ddpm",), slow=True)
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
    return CFResult(out.counterfactuals.detach(), seconds, out.n_steps.detach(), None,
                    note="4/255 scaled steps, 2 filter steps")


@register("captum PGD (pixels)", families=("mnist", "world", "squares"))
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
    return CFResult(cf, seconds, torch.full((len(cf),), PGD["step_num"], dtype=torch.long),
                    note=f"L-inf {PGD['radius']}, {PGD['step_num']} steps")


@register_attribution("Latent IG (VAE)", families=("mnist",))
def _lig(task: Task) -> Callable[..., Tensor] | None:
    from captum_cfx import LatentIntegratedGradients

    if task.generator is None:
        return None
    return partial(LatentIntegratedGradients(task.model, task.generator).attribute, n_steps=32)


@register_attribution("Integrated Gradients (zero baseline)", families=("mnist",))
def _ig(task: Task) -> Callable[..., Tensor]:
    from captum.attr import IntegratedGradients

    return partial(IntegratedGradients(task.model).attribute, n_steps=32)


@register_attribution("Saliency (signed gradient)", families=("mnist",))
def _saliency(task: Task) -> Callable[..., Tensor]:
    from captum.attr import Saliency

    return partial(Saliency(task.model).attribute, abs=False)


@register_attribution("Occlusion (4x4)", families=("mnist",))
def _occlusion(task: Task) -> Callable[..., Tensor]:
    from captum.attr import Occlusion

    c = task.images.shape[1]
    return partial(Occlusion(task.model).attribute, sliding_window_shapes=(c, 4, 4), strides=(c, 4, 4))


# ---------------------------------------------------------------------------------------------- tasks
class _SmileOracle(nn.Module):
    """The world oracle's smile reading as two logits ``[-s, s]`` (class 1 = smiling)."""

    def __init__(self, oracle: nn.Module, index: int) -> None:
        super().__init__()
        self.oracle, self.index = oracle, index

    def forward(self, x: Tensor) -> Tensor:
        s = self.oracle(x)[:, self.index]
        return torch.stack([-s, s], 1)


def _pixel_mse(images: Tensor, reference: Tensor) -> Tensor:
    return (images - reference).pow(2).flatten(1).mean(1)


def _interleaved_mnist(n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` test digits in class-interleaved order (0, 1, ..., 9, 0, ...), as ``captum-cfx explain``."""
    from captum_cfx.datasets import load_mnist

    x, y = load_mnist("test")
    if not 0 < n <= len(x):
        raise ValueError(f"`n` must be in 1..{len(x)} for MNIST; got {n}")
    order = torch.argsort(torch.arange(len(y)) % 100 * 10 + y, stable=True)
    return x[order[:n]], y[order[:n]]


def _mirror(y: Tensor) -> Tensor:
    """Seed 003's mirrored regression target: ``y + 0.5`` below 0.5, ``y - 0.5`` otherwise."""
    return torch.where(y < 0.5, y + 0.5, y - 0.5)


@torch.no_grad()
def _predict(model: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def build_tasks(n: int, datasets: Sequence[str] = DATASETS, device: str | torch.device = "cpu") -> list[Task]:
    """The tasks of a compare run: ``n`` images per data set, fixed seeds.

    Args:
        n: images per data set (at least 4: sFID splits them in halves).
        datasets: any of ``"mnist"``, ``"world"``, ``"squares"``.
        device: where models and images live.
    """
    from captum_cfx.datasets import AttributeWorld, Squares, load_mnist
    from captum_cfx.metrics import intervention_effects, mnist_features, squares_features, world_features
    from captum_cfx.zoo import available, load_generator, load_pretrained

    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ValueError(f"`n` must be an int >= 4 (sFID splits the images in halves); got {n!r}")
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise ValueError(f"`datasets` must be a non-empty subset of {DATASETS}; got {list(datasets)!r}")
    dev = torch.device(device)
    shipped = set(available())
    tasks: list[Task] = []
    if "mnist" in datasets:
        x, y = _interleaved_mnist(n)
        xf, yf = load_mnist("train")
        tasks.append(Task(
            name="mnist", family="mnist", images=x.to(dev), sources=y.to(dev), goals=((y + 1) % 10).to(dev),
            model=load_pretrained("mnist-classifier").to(dev), oracle=load_pretrained("mnist-oracle").to(dev),
            features=mnist_features().to(dev), generator=load_generator("mnist-vae").to(dev),
            fit_images=xf.to(dev), fit_descriptors=F.one_hot(yf, 10).float(),
            descriptor_names=tuple(f"digit_{k}" for k in range(10)),
            class_edit={k: (f"digit_{k}", 0.75) for k in range(10)},
            description=f"{n} embedded MNIST test digits (class-interleaved), mnist-classifier, target = label + 1; "
                        "oracle mnist-oracle; generator mnist-vae"))
    if "world" in datasets and {"world-vae", "world-oracle"} <= shipped:
        world = AttributeWorld()
        x, f = world.sample(n, generator=torch.Generator().manual_seed(SEEDS["world"]))
        xf, ff = world.sample(2000, generator=torch.Generator().manual_seed(SEEDS["world_fit"]))
        w_oracle = load_pretrained("world-oracle").to(dev)
        vae = load_generator("world-vae").to(dev)
        feats = world_features().to(dev)
        smile = world.index("smile")
        shared: dict[str, Any] = {}  # the world tasks share images, generator and fitted probes
        for clf_name, label in (("world-smile-spurious", "spurious"), ("world-smile-decorrelated", "decorrelated")):
            if clf_name not in shipped:
                continue
            clf = load_pretrained(clf_name).to(dev)
            pred = _predict(clf, x.to(dev)).argmax(1)
            truth = intervention_effects(world, clf, f.to(dev))
            tasks.append(Task(
                name=f"world ({label} smile)", family="world", images=x.to(dev), sources=pred, goals=1 - pred,
                model=clf, oracle=_SmileOracle(w_oracle, smile), features=feats, generator=vae,
                distance=_pixel_mse, fit_images=xf.to(dev), fit_descriptors=ff[:, smile : smile + 1],
                descriptor_names=("smile",), class_edit={0: ("smile", 0.25), 1: ("smile", 0.75)},
                world=world, factors=f.to(dev), factor_oracle=w_oracle, truth=truth,
                right_factor=max(truth, key=lambda k: truth[k]), spurious_factor="eyeglasses",
                description=f"{n} attribute-world faces, {clf_name}, target = the other class; oracle = "
                            "world-oracle's smile reading; generator world-vae", cache=shared))
    if "squares" in datasets and {"squares-regressor", "squares-oracle"} <= shipped:
        sq = Squares()
        x, _, f = sq.sample(n, generator=torch.Generator().manual_seed(SEEDS["squares"]))
        reg = load_pretrained("squares-regressor").to(dev)
        pred = _predict(reg, x.to(dev)).reshape(n)
        gen = load_generator("squares-vae").to(dev) if "squares-vae" in shipped else None
        tasks.append(Task(
            name="squares", family="squares", images=x.to(dev), sources=pred, goals=_mirror(pred), model=reg,
            oracle=load_pretrained("squares-oracle").to(dev), features=squares_features().to(dev), generator=gen,
            tolerance=SQUARES_TOLERANCE, world=sq, factors=f.to(dev), right_factor="intensity",
            description=f"{n} squares, squares-regressor, mirrored target = prediction ± 0.5 (reached within "
                        f"{SQUARES_TOLERANCE}); oracle squares-oracle; generator "
                        + ("squares-vae" if gen is not None else "none shipped")))
    return tasks


# ---------------------------------------------------------------------------------------------- scoring
def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@torch.no_grad()
def _valid(task: Task, images: Tensor) -> tuple[Tensor, Tensor]:
    """(valid mask, model outputs) of the explained model on ``images``."""
    out = _predict(task.model, images)
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
    valid, outs = _valid(task, cf)
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
        "cout": None if task.regression else cout(task.model, x, cf, task.sources, task.goals).value,
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


# ---------------------------------------------------------------------------------------------- the run
def _applicable(entry: Method | AttributionMethod, task: Task, shipped: set[str],
                only: Sequence[str] | None) -> str | None:
    """``None`` when ``entry`` runs on ``task``, else the reason it does not."""
    if task.family not in entry.families:
        return "n/a"
    if only and not any(s.lower() in entry.name.lower() for s in only):
        return "n/a"
    missing = [r for r in entry.requires.get(task.family, ()) if r not in shipped]
    if missing:
        return f"not shipped: {', '.join(missing)}"
    return None


def run_compare(out_dir: str | Path, n: int | None = None, quick: bool = False, datasets: Sequence[str] = DATASETS,
                methods: Sequence[str] | None = None, attributions: bool = True, device: str | torch.device = "cpu",
                progress: bool = True) -> dict[str, Any]:
    """Run every applicable method on every task and write ``compare.json``, ``compare.md`` and figure grids.

    Args:
        out_dir: output folder (created).
        n: images per data set; default 100 with ``quick``, else 1000.
        quick: 100 images per data set; ``slow`` methods on the first :data:`QUICK_SLOW_N` of them.
        datasets: which data sets (``"mnist"``, ``"world"``, ``"squares"``).
        methods: keep only methods whose names contain one of these substrings (case-insensitive).
        attributions: also score the attribution methods.
        device: where to run.
        progress: show a progress bar.

    Returns:
        The JSON written to ``compare.json``.
    """
    from tqdm.auto import tqdm

    import captum_cfx
    from captum_cfx.zoo import available

    n = n if n is not None else (QUICK_N if quick else DEFAULT_N)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    dev = torch.device(device)
    # per-method times: process CPU time for a one-thread CPU run (the wall time on an idle core, and
    # steady on a shared machine), wall time otherwise
    clock = "cpu" if dev.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    tasks, t_setup = timed(lambda: build_tasks(n, datasets, device))
    shipped = set(available())
    result: dict[str, Any] = {
        "command": "captum-cfx compare" + (" --quick" if quick else ""),
        "n_per_dataset": n, "quick": quick, "captum_cfx_version": captum_cfx.__version__,
        "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        "clock": clock, "seeds": SEEDS, "tasks": {}, "attributions": {}, "skipped": [], "setup_seconds": t_setup,
    }
    jobs = [(t, m) for t in tasks for m in METHODS]
    bar = tqdm(total=len(jobs), disable=not progress, desc="compare")
    for task in tasks:
        entry: dict[str, Any] = {"description": task.description, "rows": [], "ground_truth": [],
                                 "truth": task.truth, "right_factor": task.right_factor, "reference": {}}
        entry["reference"] = _reference(task)
        shown: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        for m in METHODS:
            bar.set_postfix_str(f"{task.name}: {m.name}")
            why = _applicable(m, task, shipped, methods)
            if why is None:
                sub = task.subset(QUICK_SLOW_N) if quick and m.slow else task
                c0 = time.process_time()
                res = m.run(sub)
                cpu = time.process_time() - c0
                if res is None:
                    why = "n/a"
                else:
                    row, valid, outs = score_counterfactuals(sub, res)
                    row["cpu_seconds"], row["cpu_seconds_per_cf"] = cpu, cpu / len(sub.images)
                    entry["rows"].append({"method": m.name, **row})
                    gt = score_ground_truth(sub, res, valid)
                    if gt is not None:
                        entry["ground_truth"].append({"method": m.name, **gt})
                    shown[m.name] = (res.counterfactuals[:SHOW].detach().cpu(), valid[:SHOW].cpu(),
                                     outs[:SHOW].cpu())
            if why is not None and why != "n/a":
                result["skipped"].append({"task": task.name, "method": m.name, "reason": why})
            bar.update(1)
        entry["ground_truth"].sort(key=lambda r: (-r["right_factor_rate"], r["mnac"] if r["mnac"] is not None
                                                  else math.inf))
        if shown:
            entry["figure"] = _figure(task, shown, out)
        result["tasks"][task.name] = entry
        if attributions:
            rows = []
            for a in ATTRIBUTIONS:
                why = _applicable(a, task, shipped, methods)
                sub = task.subset(QUICK_SLOW_N) if quick and a.slow else task
                fn = a.build(sub) if why is None else None
                if fn is not None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # LIG walks; captum's requires_grad notes
                        rows.append({"method": a.name, **score_attribution(sub, fn, n_perturb=5)})
                elif why is not None and why != "n/a":
                    result["skipped"].append({"task": task.name, "method": a.name, "reason": why})
            if rows:
                result["attributions"][task.name] = rows
    bar.close()
    result["seconds"] = time.perf_counter() - t_start
    result["cpu_seconds"] = time.process_time() - c_start
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "compare.md").write_text(to_markdown(result))
    return result


def _reference(task: Task) -> dict[str, Any]:
    """Figures for real images, to read the realism columns against."""
    from captum_cfx.metrics import fid, manifold_distance

    x = task.images
    half = len(x) // 2
    ref: dict[str, Any] = {"fid_between_halves_of_real_images": fid(x[:half], x[half:], task.features).value}
    if task.generator is not None:
        ref["manifold_distance_of_real_images"] = manifold_distance(task.generator, x).value
    valid, _ = _valid(task, x)
    ref["already_at_target"] = float(valid.float().mean())
    return {k: _clean(v) for k, v in ref.items()}


def _figure(task: Task, shown: dict[str, tuple[Tensor, Tensor, Tensor]], out: Path) -> str:
    import matplotlib.pyplot as plt

    x = task.images[:SHOW].cpu()
    cols = len(x)
    rows = [("input", x, None, None)] + [(k, *v) for k, v in shown.items()]
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.15 * cols + 1.6, 1.2 * len(rows)), squeeze=False)
    for r, (label, imgs, valid, outs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(imgs):  # a slow method run on fewer images under --quick
                ax.axis("off")
                continue
            img = imgs[c].clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if outs is None:
                g, s = task.goals[c].item(), task.sources[c].item()
                title = f"{s:.2f}→{g:.2f}" if task.regression else f"{int(s)}→{int(g)}"
                ax.set_title(title, fontsize=7)
            else:
                v = outs[c].item()
                ax.set_title(f"{v:.2f}" if task.regression else str(int(v)), fontsize=7,
                             color="green" if bool(valid[c]) else "red")
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{task.name}: model output (green: target reached)", fontsize=8)
    fig.tight_layout()
    name = "grid_" + "".join(ch if ch.isalnum() else "_" for ch in task.name).strip("_") + ".png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


# ---------------------------------------------------------------------------------------------- markdown
def _fmt(v: Any, kind: str = "f") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == "%":
        return f"{v:.0%}"
    if kind == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    if kind == "e":
        return f"{v:.3g}"
    return f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.4f}"


def to_markdown(result: dict[str, Any]) -> str:
    """The markdown report of a :func:`run_compare` result."""
    cpu = result["clock"] == "cpu"
    clock = "process CPU time" if cpu else "wall time"
    lines = [f"Produced by `{result['command']}` ({result['n_per_dataset']} images per data set, fixed seeds, "
             f"{result['threads']} thread(s) on {result['device']}; {result['seconds']:.0f} s wall, "
             f"{result['cpu_seconds']:.0f} s CPU in all; times per method are {clock}). "
             "Columns: docs/metrics.md.", ""]
    per_cf = "cpu_seconds_per_cf" if cpu else "seconds_per_cf"
    per_image = "cpu_seconds_per_image" if cpu else "seconds_per_image"
    for name, t in result["tasks"].items():
        lines += [f"### Counterfactuals: {name}", "", t["description"] + ".", "",
                  "| method | n | valid | oracle agrees | L1 px | L2 px | L2 latent | px changed | FID | sFID | "
                  "manifold dist. | COUT | time / CF | steps / CF |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in t["rows"]:
            note = f" ({r['note']})" if r["note"] else ""
            lines.append(f"| {r['method']}{note} | {r['n']} | {_fmt(r['validity'], '%')} | "
                         f"{_fmt(r['oracle_agreement'], '%')} | "
                         f"{_fmt(r['l1_pixels'])} | {_fmt(r['l2_pixels'])} | {_fmt(r['l2_latent'])} | "
                         f"{_fmt(r['sparsity'], '%')} | {_fmt(r['fid'])} | {_fmt(r['sfid'])} | "
                         f"{_fmt(r['manifold_distance'], 'e')} | {_fmt(r['cout'])} | "
                         f"{_fmt(r[per_cf], 's')} | {_fmt(r['steps_per_cf'])} |")
        ref = t["reference"]
        bits = [f"FID between two halves of the real images {_fmt(ref['fid_between_halves_of_real_images'])}"]
        if "manifold_distance_of_real_images" in ref:
            bits.append(f"manifold distance of the real images {_fmt(ref['manifold_distance_of_real_images'], 'e')}")
        bits.append(f"inputs already at their target {_fmt(ref['already_at_target'], '%')}")
        lines += ["", "Reference: " + "; ".join(bits) + ".", ""]
        if t.get("figure"):
            lines += [f"![{name}]({t['figure']})", ""]
        if t["ground_truth"]:
            lines += [f"#### Ground truth: {name}", ""]
            if t["truth"]:
                top = sorted(t["truth"].items(), key=lambda kv: -kv[1])[:4]
                lines += ["What the model truly depends on (decision flip rate under do(factor := 1 − factor)): "
                          + ", ".join(f"{k} {v:.0%}" for k, v in top) + f"; right factor: **{t['right_factor']}**.",
                          ""]
            else:
                lines += [f"Right factor: **{t['right_factor']}** (the regression target).", ""]
            sp = t["ground_truth"][0].get("spurious_factor")
            head = "| rank | method | n | valid | right factor changed | only the right factor | MNAC |"
            sep = "|---|---|---|---|---|---|---|"
            if sp:
                head += f" {sp} changed | reveals the planted {sp} reliance |"
                sep += "---|---|"
            lines += [head, sep]
            for i, r in enumerate(t["ground_truth"], 1):
                line = (f"| {i} | {r['method']} | {r['n']} | {_fmt(r['validity'], '%')} | "
                        f"{_fmt(r['right_factor_rate'], '%')} | "
                        f"{_fmt(r['right_factor_only_rate'], '%')} | {_fmt(r['mnac'])} |")
                if sp:
                    line += f" {_fmt(r['spurious_change_rate'], '%')} | {_fmt(r['reveals_spurious'])} |"
                lines.append(line)
            lines.append("")
    for name, rows in result["attributions"].items():
        lines += [f"### Attributions: {name}", "",
                  "Explaining the logit of the true label on the same images; lower is better for both scores.", "",
                  "| method | n | infidelity | sensitivity max | time / image |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['method']} | {r['n']} | {_fmt(r['infidelity'], 'e')} | "
                         f"{_fmt(r['sensitivity_max'], 'e')} | {_fmt(r[per_image], 's')} |")
        lines.append("")
    if result["skipped"]:
        lines += ["Not run: " + "; ".join(f"{s['method']} on {s['task']} ({s['reason']})" for s in result["skipped"])
                  + ".", ""]
    return "\n".join(lines)


README_START, README_END = "<!-- compare:start", "<!-- compare:end -->"


def update_readme(readme: str | Path, out_dir: str | Path) -> Path:
    """Paste ``out_dir/compare.md`` into ``readme`` between its ``<!-- compare:start ... -->`` and
    ``<!-- compare:end -->`` lines: headings one level down, figure paths relative to the README.

    Raises:
        ValueError: when the README lacks either marker or ``out_dir`` has no ``compare.md``.
    """
    import os
    import re

    path, out = Path(readme), Path(out_dir)
    if not path.is_file():
        raise ValueError(f"`readme` must be an existing file; got {str(path)!r}")
    md_path = out / "compare.md"
    if not md_path.is_file():
        raise ValueError(f"`out_dir` must hold a compare.md written by run_compare; {str(out)!r} has none")
    lines = path.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(README_START)), None)
    end = next((i for i, ln in enumerate(lines) if ln.startswith(README_END)), None)
    if start is None or end is None or end < start:
        raise ValueError(f"`readme` must hold a '{README_START} ... -->' line and a later '{README_END}' line; "
                         f"{str(path)!r} does not")
    rel = Path(os.path.relpath(out.resolve(), path.resolve().parent)).as_posix()
    body = md_path.read_text().rstrip("\n").splitlines()
    body = ["#" + ln if ln.startswith("#") else ln for ln in body]
    body = [re.sub(r"!\[([^\]]*)\]\((?!https?:|/)([^)]+)\)", lambda m: f"![{m[1]}]({rel}/{m[2]})", ln) for ln in body]
    path.write_text("\n".join([*lines[:start + 1], *body, *lines[end:]]) + "\n")
    return path
