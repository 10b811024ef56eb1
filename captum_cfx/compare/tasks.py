"""The tasks of ``captum-cfx compare``: one data set, model, oracle and set of targets each, fixed seeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DATASETS", "SEEDS", "SQUARES_TOLERANCE", "Task", "build_tasks"]

DATASETS = ("mnist", "world", "squares")
#: seeds of the drawn data (worlds) and of every stochastic step; fixed so that runs are comparable
SEEDS = {"world": 20_001, "world_fit": 20_002, "squares": 20_003, "metrics": 0}
SQUARES_TOLERANCE = 0.05  # seed 003's success radius on [0, 1] targets


@dataclass(kw_only=True)
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
        distance: perceptual distance for GCD (``None``: its generic default, the pixel distance).
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
    from captum_cfx.datasets import interleaved_mnist

    return interleaved_mnist(n)


def _mirror(y: Tensor) -> Tensor:
    """Seed 003's mirrored regression target: ``y + 0.5`` below 0.5, ``y - 0.5`` otherwise."""
    return torch.where(y < 0.5, y + 0.5, y - 0.5)


@torch.no_grad()
def predict(model: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000) -> Tensor:
    """``model(x)`` in batches of ``batch_size``, without gradients."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _mnist_task(n: int, dev: torch.device) -> Task:
    from captum_cfx.datasets import load_mnist
    from captum_cfx.datasets.mnist import NUM_CLASSES as K
    from captum_cfx.zoo import load_generator, load_pretrained, mnist_distance, mnist_features

    x, y = _interleaved_mnist(n)
    xf, yf = load_mnist("train")
    return Task(
        name="mnist", family="mnist", images=x.to(dev), sources=y.to(dev), goals=((y + 1) % K).to(dev),
        model=load_pretrained("mnist-classifier").to(dev), oracle=load_pretrained("mnist-oracle").to(dev),
        features=mnist_features().to(dev), generator=load_generator("mnist-vae").to(dev),
        distance=mnist_distance().to(dev), fit_images=xf.to(dev), fit_descriptors=F.one_hot(yf, K).float(),
        descriptor_names=tuple(f"digit_{k}" for k in range(K)),
        class_edit={k: (f"digit_{k}", 0.75) for k in range(K)},
        description=f"{n} embedded MNIST test digits (class-interleaved), mnist-classifier, target = label + 1; "
                    "oracle mnist-oracle; generator mnist-vae")


def _world_tasks(n: int, dev: torch.device, shipped: set[str]) -> list[Task]:
    from captum_cfx.datasets import AttributeWorld
    from captum_cfx.metrics import intervention_effects
    from captum_cfx.zoo import load_generator, load_pretrained, world_features

    world = AttributeWorld()
    x, f = world.sample(n, generator=torch.Generator().manual_seed(SEEDS["world"]))
    xf, ff = world.sample(2000, generator=torch.Generator().manual_seed(SEEDS["world_fit"]))
    w_oracle = load_pretrained("world-oracle").to(dev)
    vae = load_generator("world-vae").to(dev)
    feats = world_features().to(dev)
    smile = world.index("smile")
    shared: dict[str, Any] = {}  # the world tasks share images, generator and fitted probes
    tasks = []
    for clf_name, label in (("world-smile-spurious", "spurious"), ("world-smile-decorrelated", "decorrelated")):
        if clf_name not in shipped:
            continue
        clf = load_pretrained(clf_name).to(dev)
        pred = predict(clf, x.to(dev)).argmax(1)
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
    return tasks


def _squares_task(n: int, dev: torch.device, shipped: set[str]) -> Task:
    from captum_cfx.datasets import Squares
    from captum_cfx.zoo import load_generator, load_pretrained, squares_features

    sq = Squares()
    x, _, f = sq.sample(n, generator=torch.Generator().manual_seed(SEEDS["squares"]))
    reg = load_pretrained("squares-regressor").to(dev)
    pred = predict(reg, x.to(dev)).reshape(n)
    gen = load_generator("squares-vae").to(dev) if "squares-vae" in shipped else None
    return Task(
        name="squares", family="squares", images=x.to(dev), sources=pred, goals=_mirror(pred), model=reg,
        oracle=load_pretrained("squares-oracle").to(dev), features=squares_features().to(dev), generator=gen,
        tolerance=SQUARES_TOLERANCE, world=sq, factors=f.to(dev), right_factor="intensity",
        description=f"{n} squares, squares-regressor, mirrored target = prediction ± 0.5 (reached within "
                    f"{SQUARES_TOLERANCE}); oracle squares-oracle; generator "
                    + ("squares-vae" if gen is not None else "none shipped"))


def build_tasks(n: int, datasets: Sequence[str] = DATASETS, device: str | torch.device = "cpu") -> list[Task]:
    """The tasks of a compare run: ``n`` images per data set, fixed seeds.

    Tasks whose models are not shipped are left out (the world tasks need ``world-vae`` and ``world-oracle``;
    squares needs ``squares-regressor`` and ``squares-oracle``).

    Args:
        n: images per data set (at least 4: sFID splits them in halves).
        datasets: any of ``"mnist"``, ``"world"``, ``"squares"``.
        device: where models and images live.
    """
    from captum_cfx.zoo import available

    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ValueError(f"`n` must be an int >= 4 (sFID splits the images in halves); got {n!r}")
    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise ValueError(f"`datasets` must be a non-empty subset of {DATASETS}; got {list(datasets)!r}")
    dev = torch.device(device)
    shipped = set(available())
    tasks: list[Task] = []
    if "mnist" in datasets:
        tasks.append(_mnist_task(n, dev))
    if "world" in datasets and {"world-vae", "world-oracle"} <= shipped:
        tasks += _world_tasks(n, dev, shipped)
    if "squares" in datasets and {"squares-regressor", "squares-oracle"} <= shipped:
        tasks.append(_squares_task(n, dev, shipped))
    return tasks
