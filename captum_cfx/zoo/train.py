"""Reproduce every shipped model from seeds, on CPU.

Usage::

    python -m captum_cfx.zoo.train                 # list the trainable models
    python -m captum_cfx.zoo.train mnist-classifier  # train, evaluate, save, print metrics
    python -m captum_cfx.zoo.train mnist-vae --out /tmp/zoo

"Reproduces" means that a retrained model meets the metrics recorded in its config within the
tolerance stated in ``TOLERANCE`` (CPU kernels are not bit-deterministic across machines).
Training never happens inside tests.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from captum_cfx._io import save_safetensors_atomic, write_json_atomic
from captum_cfx.datasets import load_mnist
from captum_cfx.zoo import models as _models

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: A retrained model reproduces a shipped one when it meets the recipe's targets and each recorded
#: metric is within this many points of the shipped model's.
TOLERANCE = 0.01


def random_affine(x: torch.Tensor, g: torch.Generator, rot: float = 10.0, scale: float = 0.1,
                  *, shift: float = 2.0) -> torch.Tensor:
    """Batched random rotation / scale / translation (degrees, fraction, pixels) with bilinear resampling."""
    n = x.shape[0]
    ang = (torch.rand(n, generator=g) * 2 - 1) * math.radians(rot)
    s = 1 + (torch.rand(n, generator=g) * 2 - 1) * scale
    t = (torch.rand(n, 2, generator=g) * 2 - 1) * shift * 2 / x.shape[-1]
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def epochs_loop(model: nn.Module, step: Callable[[torch.Tensor], torch.Tensor], *, epochs: int, lr: float, n: int,
                batch: int, g: torch.Generator, log: str) -> None:
    """Train ``model`` for ``epochs`` passes over ``n`` examples in shuffled batches: Adam + one-cycle schedule,
    ``step(indices) -> loss``; one log line per epoch, prefixed with ``log``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch):
            loss = step(perm[i : i + batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(perm[i : i + batch])
        print(f"[{log}] epoch {ep + 1}/{epochs} loss {total / n:.4f} ({time.time() - t0:.0f}s)", file=sys.stderr)


def train_classifier(seed: int, epochs: int, cls: type[nn.Module], config: dict, *, lr: float = 3e-3,
                     label_smoothing: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = load_mnist("train")
    model = cls(**config)

    def step(idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(random_affine(x[idx], g)), y[idx], label_smoothing=label_smoothing)

    epochs_loop(model, step, epochs=epochs, lr=lr, n=len(x), batch=64, g=g, log=cls.__name__)
    return model.eval()


def train_vae(seed: int, epochs: int, config: dict, beta: float = 1.0, *, lr: float = 2e-3) -> nn.Module:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, _ = load_mnist("train")
    model = _models.MNISTVAE(**config)

    def step(idx: torch.Tensor) -> torch.Tensor:
        xb = random_affine(x[idx], g, rot=8.0, scale=0.08, shift=1.5)
        mean, logvar = model.encode(xb)
        z = mean + torch.randn(mean.shape, generator=g) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy_with_logits(model.decode_logits(z), xb, reduction="sum")
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum()
        return (rec + beta * kl) / len(idx)

    epochs_loop(model, step, epochs=epochs, lr=lr, n=len(x), batch=64, g=g, log="MNISTVAE")
    return model.eval()


@dataclass(frozen=True)
class Recipe:
    cls: str
    config: dict
    seed: int
    epochs: int
    train: Callable[[Recipe, int], nn.Module]
    evaluate: Callable[[nn.Module], dict]
    targets: dict  # metric -> minimum required
    #: for generative models: how ``load_generator`` wraps it, ``{"wrapper": ..., **kwargs}``
    generator: dict | None = None
    #: extra keyword arguments of ``train`` (batch size, learning-rate schedule, ...), saved with the weights
    train_kwargs: dict = field(default_factory=dict)


def _merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, recursively for nested dicts."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _eval_classifier(model: nn.Module) -> dict:
    x, y = load_mnist("test")
    return {"test_accuracy": accuracy(model, x, y)}


def _eval_vae(model: nn.Module) -> dict:
    from captum_cfx.zoo import load_pretrained

    x, y = load_mnist("test")
    with torch.no_grad():
        rec = model.decode(model.encode(x)[0])
    clf = load_pretrained("mnist-classifier")
    return {
        "classifier_accuracy_on_reconstructions": accuracy(clf, rec, y),
        "reconstruction_mse": float(F.mse_loss(rec, x)),
    }


RECIPES: dict[str, Recipe] = {
    "mnist-classifier": Recipe(
        "MNISTClassifier", {"width": 32, "hidden": 128, "dropout": 0.3}, seed=0, epochs=40,
        train=lambda r, e: train_classifier(r.seed, e, _models.MNISTClassifier, r.config),
        evaluate=_eval_classifier, targets={"test_accuracy": 0.98},
    ),
    "mnist-oracle": Recipe(
        "MNISTOracle", {"width": 24, "num_features": 128}, seed=1, epochs=25,
        train=lambda r, e: train_classifier(r.seed, e, _models.MNISTOracle, r.config, label_smoothing=0.05),
        evaluate=_eval_classifier, targets={"test_accuracy": 0.96},
    ),
    "mnist-vae": Recipe(
        "MNISTVAE", {"latent_dim": 32, "width": 32}, seed=2, epochs=80,
        train=lambda r, e: train_vae(r.seed, e, r.config),
        evaluate=_eval_vae, targets={"classifier_accuracy_on_reconstructions": 0.95},
    ),
}


def _all_recipes() -> dict[str, Recipe]:
    """Recipes of this file plus those of the other recipe modules (one per family of models)."""
    from captum_cfx.zoo import recipes_causal, recipes_diffusion, recipes_gan, recipes_regression, recipes_worlds

    out = dict(RECIPES)
    for mod in (recipes_worlds, recipes_gan, recipes_diffusion, recipes_causal, recipes_regression):
        out.update(mod.RECIPES)
    return out


def save_model(name: str, model: nn.Module, recipe: Recipe, metrics: dict, *, seconds: float, out: Path,
               epochs: int | None = None, device: str = "cpu") -> None:
    """Write ``<name>.safetensors`` (fp16) and ``<name>.json`` atomically."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if v.is_floating_point()}
    state.update({k: v.detach().contiguous() for k, v in model.state_dict().items() if not v.is_floating_point()})
    save_safetensors_atomic(state, out / f"{name}.safetensors")
    extra = {"generator": recipe.generator} if recipe.generator else {}
    cfg = {"class": recipe.cls, "config": recipe.config, **extra, "seed": recipe.seed,
           "epochs": epochs or recipe.epochs, **({"train_kwargs": recipe.train_kwargs} if recipe.train_kwargs else {}),
           "metrics": metrics, "targets": recipe.targets}
    if device == "cpu":
        cfg.update(train_seconds_cpu=round(seconds, 1), train_threads=torch.get_num_threads())
    else:
        name_ = torch.cuda.get_device_name() if str(device).startswith("cuda") else str(device)
        cfg.update(train_seconds=round(seconds, 1), train_device=name_)
    write_json_atomic(out / f"{name}.json", cfg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m captum_cfx.zoo.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="model to train; omit to list them")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for the weights")
    p.add_argument("--device", default="cpu",
                   help="where to train, for recipes that support it (the diffusion models): cpu or cuda")
    p.add_argument("--config", type=json.loads, default=None, metavar="JSON",
                   help="merged into the recipe's model config, e.g. '{\"unet\": {\"norm_num_groups\": 16}}'")
    p.add_argument("--train-kwargs", type=json.loads, default=None, metavar="JSON",
                   help='extra keyword arguments of the recipe\'s train function, e.g. \'{"batch": 128}\'')
    a = p.parse_args(argv)
    recipes = _all_recipes()
    if a.name is None:
        for n, r in recipes.items():
            print(f"{n:20s} {r.cls:16s} seed={r.seed} epochs={r.epochs} targets={r.targets}")
        return 0
    if a.name not in recipes:
        p.error(f"unknown model {a.name!r}; choose from {sorted(recipes)}")
    r = recipes[a.name]
    for flag, value in (("--config", a.config), ("--train-kwargs", a.train_kwargs)):
        if value is not None and not isinstance(value, dict):
            p.error(f"{flag} must be a JSON object; got {type(value).__name__} {value!r}")
    if a.config:
        r = replace(r, config=_merge(r.config, a.config))
    if a.train_kwargs:
        r = replace(r, train_kwargs={**r.train_kwargs, **a.train_kwargs})
    t0 = time.time()
    kwargs = dict(r.train_kwargs)
    train_params = inspect.signature(r.train).parameters
    unknown = sorted(set(kwargs) - set(train_params))
    if unknown:
        p.error(f"--train-kwargs: the {a.name!r} recipe's train function takes no {unknown}")
    if a.device != "cpu":
        if "device" not in train_params:
            p.error(f"--device: the {a.name!r} recipe trains on CPU only")
        kwargs["device"] = a.device
    model = r.train(r, a.epochs or r.epochs, **kwargs)
    seconds = time.time() - t0
    epochs = getattr(model, "trained_steps", None) or a.epochs or r.epochs
    # evaluate the fp16-rounded weights that are actually shipped
    model.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    ev_kwargs = {"device": a.device} if "device" in inspect.signature(r.evaluate).parameters else {}
    metrics = r.evaluate(model.eval(), **ev_kwargs)
    save_model(a.name, model, r, metrics, seconds=seconds, out=a.out, epochs=epochs, device=a.device)
    ok = all(metrics[k] >= v for k, v in r.targets.items())
    print(json.dumps({"name": a.name, "metrics": metrics, "targets": r.targets, "meets_targets": ok,
                      "train_seconds": round(seconds, 1)}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
