"""Training recipes for the synthetic-world models (merged into `python -m captum_cfx.zoo.train`).

Every model trains on CPU in minutes. Except for the two smile classifiers (which train on fixed
finite splits so that the planted correlation is a property of their data), training images are drawn
fresh for every batch from the world with a seeded ``torch.Generator``; an "epoch" is
``STEPS_PER_EPOCH`` batches. Test sets are fresh draws with seeds that training never uses.

Models:

- ``world-oracle``: :class:`WorldOracle`, one output per factor of :class:`AttributeWorld`, trained with
  blur and noise augmentation so that it also reads VAE reconstructions.
- ``world-vae``: :class:`WorldVAE`, 64-d latent; judged by the oracle on its reconstructions.
- ``world-factor-ae``: :class:`WorldFactorAE`, whose nine latent coordinates are the factors (supervised).
- ``world-smile-spurious``: smile classifier trained where eyeglasses agree with smile 90 % of the time.
- ``world-smile-decorrelated``: the same recipe on data where eyeglasses are independent of smile.
- ``squares-regressor``: :class:`SquaresRegressor` (``arch="cnn"``) for the inner intensity.
- ``squares-oracle``: an independent regressor (``arch="pool"``, another seed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_cfx.datasets import AttributeWorld, Squares
from captum_cfx.zoo.train import Recipe, epochs_loop

__all__ = ["RECIPES", "smile_split", "world_test_set"]

STEPS_PER_EPOCH = 100
BATCH = 64

#: continuous factors count as kept when the oracle reads them within this distance
CONTINUOUS_TOLERANCE = 0.1


def _world_augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Half the batch blurred with a random-strength 3x3 kernel, plus Gaussian noise (sd up to 0.03)."""
    n = x.shape[0]
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3).contiguous(), groups=3)
    a = (torch.rand(n, 1, 1, 1, generator=g) < 0.5).float() * torch.rand(n, 1, 1, 1, generator=g)
    x = (1 - a) * x + a * blurred
    return (x + torch.randn(x.shape, generator=g) * 0.03 * torch.rand(n, 1, 1, 1, generator=g)).clamp(0, 1)


def world_test_set(n: int = 4000, seed: int = 10_000) -> tuple[Tensor, Tensor]:
    """The fixed attribute-world test set used in the recorded metrics (natural, graph-following draws)."""
    return tuple(AttributeWorld().sample(n, generator=torch.Generator().manual_seed(seed)))  # type: ignore[return-value]


def smile_split(n: int, agreement: float | None, seed: int) -> tuple[Tensor, Tensor]:
    """A smile data set where eyeglasses equal smile with probability ``agreement`` (``None``: natural, independent).

    Returns ``(images, factors)``; the label is ``factors[:, world.index("smile")]``.
    """
    world = AttributeWorld()
    g = torch.Generator().manual_seed(seed)
    if agreement is None:
        return tuple(world.sample(n, generator=g))  # type: ignore[return-value]
    return tuple(world.sample_correlated(n, "smile", "eyeglasses", agreement=agreement, generator=g))  # type: ignore[return-value]


def _train_oracle(r: Recipe, epochs: int) -> nn.Module:
    from captum_cfx.zoo._registry import resolve_class

    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    world = AttributeWorld()
    model = resolve_class(r.cls)(**r.config)

    def step(idx: Tensor) -> Tensor:
        x, f = world.sample(len(idx), generator=g)
        return F.binary_cross_entropy_with_logits(model(_world_augment(x, g)), f)

    epochs_loop(model, step, epochs=epochs, lr=3e-3, n=STEPS_PER_EPOCH * BATCH, batch=BATCH, g=g, log="WorldOracle")
    return model.eval()


@torch.no_grad()
def factor_agreement(pred: Tensor, truth: Tensor) -> Tensor:
    """Per-factor agreement ``(9,)``: binary exact, continuous within :data:`CONTINUOUS_TOLERANCE`."""
    binary = AttributeWorld().is_binary
    ok = torch.where(binary, pred == truth, (pred - truth).abs() <= CONTINUOUS_TOLERANCE)
    return ok.float().mean(0)


def _eval_oracle(model: nn.Module) -> dict:
    x, f = world_test_set()
    acc = factor_agreement(model.predict(x), f)
    names = AttributeWorld.factor_names
    out = {f"agreement_{n}": round(float(a), 4) for n, a in zip(names, acc)}
    with torch.no_grad():
        mae = (torch.sigmoid(model(x)) - f).abs().mean(0)
    cont = AttributeWorld.continuous_factors
    out.update({f"mae_{n}": round(float(mae[i]), 4) for i, n in enumerate(names) if n in cont})
    out["min_binary_accuracy"] = min(out[f"agreement_{n}"] for n in AttributeWorld.binary_factors)
    return out


def train_world_vae(r: Recipe, epochs: int, beta: float = 0.1) -> nn.Module:
    from captum_cfx.zoo._registry import resolve_class

    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    world = AttributeWorld()
    model = resolve_class(r.cls)(**r.config)

    def step(idx: Tensor) -> Tensor:
        x, _ = world.sample(len(idx), generator=g)
        mean, logvar = model.encode(x)
        z = mean + torch.randn(mean.shape, generator=g) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="sum")
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum()
        return (rec + beta * kl) / len(idx)

    epochs_loop(model, step, epochs=epochs, lr=3e-3, n=STEPS_PER_EPOCH * BATCH, batch=BATCH, g=g, log="WorldVAE")
    return model.eval()


def eval_world_vae(model: nn.Module) -> dict:
    from captum_cfx.zoo import load_pretrained

    x, f = world_test_set()
    with torch.no_grad():
        rec = torch.cat([model(x[i : i + 500]) for i in range(0, len(x), 500)])
    oracle = load_pretrained("world-oracle")
    acc = factor_agreement(oracle.predict(rec), f)
    out = {f"agreement_{n}": round(float(a), 4) for n, a in zip(AttributeWorld.factor_names, acc)}
    out["oracle_factor_agreement_on_reconstructions"] = round(float(acc.mean()), 4)
    out["reconstruction_mse"] = round(float(F.mse_loss(rec, x)), 5)
    return out


def independent_factors(n: int, g: torch.Generator) -> Tensor:
    """``(n, 9)`` factor tables with every factor independent: continuous ones uniform, binary ones fair coins
    (every combination appears, whatever the causal graph makes rare)."""
    f = torch.rand(n, len(AttributeWorld.factor_names), generator=g)
    return torch.where(AttributeWorld().is_binary, (f < 0.5).float(), f)


def train_world_factor_ae(r: Recipe, epochs: int, noise: float = 0.1, code_weight: float = 100.0) -> nn.Module:
    """The encoder regresses the code ``2 f - 1`` of independent factor draws; the decoder renders the image
    from the true code plus Gaussian noise of sd ``noise`` (so that it is smooth between codes)."""
    from captum_cfx.zoo._registry import resolve_class

    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    world = AttributeWorld()
    model = resolve_class(r.cls)(**r.config)

    def step(idx: Tensor) -> Tensor:
        f = independent_factors(len(idx), g)
        x, code = world.render(f), 2 * f - 1
        z = code + noise * torch.randn(code.shape, generator=g)
        rec = F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="sum")
        return (rec + code_weight * F.mse_loss(model.encode(x), code, reduction="sum")) / len(idx)

    epochs_loop(model, step, epochs=epochs, lr=3e-3, n=STEPS_PER_EPOCH * BATCH, batch=BATCH, g=g,
                log="WorldFactorAE")
    return model.eval()


def eval_world_factor_ae(model: nn.Module) -> dict:
    out = eval_world_vae(model)
    x, f = world_test_set()
    with torch.no_grad():
        code = torch.cat([model.encode(x[i : i + 500]) for i in range(0, len(x), 500)])
    mae = ((code + 1) / 2 - f).abs().mean(0)
    out.update({f"code_mae_{n}": round(float(m), 4) for n, m in zip(AttributeWorld.factor_names, mae)})
    return out


def _train_smile(r: Recipe, epochs: int, agreement: float | None) -> nn.Module:
    from captum_cfx.zoo._registry import resolve_class

    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    x, f = smile_split(4000, agreement, seed=r.seed + 1000)
    y = f[:, AttributeWorld().index("smile")].long()
    model = resolve_class(r.cls)(**r.config)

    def step(idx: Tensor) -> Tensor:
        return F.cross_entropy(model(x[idx]), y[idx])

    epochs_loop(model, step, epochs=epochs, lr=2e-3, n=len(x), batch=64, g=g, log="WorldClassifier")
    return model.eval()


@torch.no_grad()
def _smile_accuracy(model: nn.Module, x: Tensor, f: Tensor) -> float:
    y = f[:, AttributeWorld().index("smile")].long()
    return round(float((model(x).argmax(1) == y).float().mean()), 4)


def _eval_smile(model: nn.Module) -> dict:
    correlated = _smile_accuracy(model, *smile_split(4000, 0.9, seed=20_000))
    decorrelated = _smile_accuracy(model, *smile_split(4000, 0.5, seed=20_001))
    return {"correlated_test_accuracy": correlated, "decorrelated_test_accuracy": decorrelated,
            "accuracy_drop": round(correlated - decorrelated, 4),
            "one_minus_abs_accuracy_drop": round(1 - abs(correlated - decorrelated), 4),
            "anticorrelated_test_accuracy": _smile_accuracy(model, *smile_split(4000, 0.0, seed=20_002))}


def squares_test_set(n: int = 4000, seed: int = 30_000) -> tuple[Tensor, Tensor, Tensor]:
    """The fixed squares test set of the recorded metrics."""
    return tuple(Squares().sample(n, generator=torch.Generator().manual_seed(seed)))  # type: ignore[return-value]


def _train_squares(r: Recipe, epochs: int) -> nn.Module:
    from captum_cfx.zoo._registry import resolve_class

    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    world = Squares()
    model = resolve_class(r.cls)(**r.config)

    def step(idx: Tensor) -> Tensor:
        x, y, _ = world.sample(len(idx), generator=g)
        return F.mse_loss(model(x)[:, 0], y)

    epochs_loop(model, step, epochs=epochs, lr=3e-3, n=STEPS_PER_EPOCH * BATCH, batch=BATCH, g=g,
                log="SquaresRegressor")
    return model.eval()


def _eval_squares(model: nn.Module) -> dict:
    x, y, _ = squares_test_set()
    with torch.no_grad():
        mae = float((model(x)[:, 0] - y).abs().mean())
    return {"test_mae": round(mae, 5), "one_minus_test_mae": round(1 - mae, 5)}


RECIPES: dict[str, Recipe] = {
    "world-oracle": Recipe(
        "WorldOracle", {"width": 12, "num_factors": 9, "binary": [1, 2, 3, 4, 5]}, seed=40, epochs=12,
        train=_train_oracle, evaluate=_eval_oracle, targets={"min_binary_accuracy": 0.95},
    ),
    "world-vae": Recipe(
        "WorldVAE", {"latent_dim": 64, "width": 16}, seed=41, epochs=25,
        train=train_world_vae, evaluate=eval_world_vae,
        targets={"oracle_factor_agreement_on_reconstructions": 0.90},
        generator={"wrapper": "VAEGenerator", "input_range": [0, 1], "image_shape": [3, 32, 32]},
    ),
    "world-factor-ae": Recipe(
        "WorldFactorAE", {"num_factors": 9, "width": 16}, seed=45, epochs=50,
        train=train_world_factor_ae, evaluate=eval_world_factor_ae,
        targets={"oracle_factor_agreement_on_reconstructions": 0.90},
        generator={"wrapper": "VAEGenerator", "input_range": [0, 1], "image_shape": [3, 32, 32]},
    ),
    "world-smile-spurious": Recipe(
        "WorldClassifier", {"width": 16, "hidden": 64, "pool": 2}, seed=42, epochs=2,
        train=lambda r, e: _train_smile(r, e, 0.9), evaluate=_eval_smile,
        targets={"accuracy_drop": 0.10},
    ),
    "world-smile-decorrelated": Recipe(
        "WorldClassifier", {"width": 16, "hidden": 64, "pool": 2}, seed=42, epochs=2,
        train=lambda r, e: _train_smile(r, e, 0.5), evaluate=_eval_smile,
        targets={"decorrelated_test_accuracy": 0.90, "one_minus_abs_accuracy_drop": 0.90},
    ),
    "squares-regressor": Recipe(
        "SquaresRegressor", {"width": 16, "arch": "cnn"}, seed=43, epochs=20,
        train=_train_squares, evaluate=_eval_squares, targets={"one_minus_test_mae": 0.97},
    ),
    "squares-oracle": Recipe(
        "SquaresRegressor", {"width": 16, "arch": "pool"}, seed=44, epochs=20,
        train=_train_squares, evaluate=_eval_squares, targets={"one_minus_test_mae": 0.97},
    ),
}
