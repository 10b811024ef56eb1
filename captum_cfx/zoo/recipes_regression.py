"""Training recipes for the regression experiments (merged into `python -m captum_cfx.zoo.train`).

- ``squares-vae``: :class:`~captum_cfx.zoo.world_models.WorldVAE` (16-d latent) on the squares world,
  the VAE that the latent regression counterfactuals (issue G) are compared with next to the diffusion
  autoencoder ``squares-diffae``. Training images are drawn fresh for every batch from the world with a
  seeded ``torch.Generator``; an "epoch" is ``STEPS_PER_EPOCH`` batches of ``BATCH``. It is judged on
  a fixed squares test draw by the exact pixel measurements of :meth:`Squares.measure` and by the shipped
  ``squares-regressor`` on the reconstructions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_cfx.datasets import Squares
from captum_cfx.zoo.train import Recipe, epochs_loop

__all__ = ["RECIPES"]

STEPS_PER_EPOCH = 100
BATCH = 64


def _train_squares_vae(r: Recipe, epochs: int, sigma: float = 0.05) -> nn.Module:
    """A Gaussian likelihood with a small ``sigma`` (rather than the world VAE's Bernoulli one): the
    inner square's grey level, the regression target, must be reconstructed to within a few hundredths."""
    from captum_cfx.zoo._registry import resolve_class

    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    world = Squares()
    model = resolve_class(r.cls)(**r.config)

    def step(idx: Tensor) -> Tensor:
        x = world.sample(len(idx), generator=g).images
        mean, logvar = model.encode(x)
        z = mean + torch.randn(mean.shape, generator=g) * (0.5 * logvar).exp()
        rec = (model.decode(z) - x).pow(2).sum() / (2 * sigma**2)
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum()
        return (rec + kl) / len(idx)

    epochs_loop(model, step, epochs=epochs, lr=3e-3, n=STEPS_PER_EPOCH * BATCH, batch=BATCH, g=g, log="SquaresVAE")
    return model.eval()


@torch.no_grad()
def _eval_squares_vae(model: nn.Module, n: int = 2000) -> dict:
    from captum_cfx.zoo import load_pretrained

    world = Squares()
    x, y, _ = world.sample(n, generator=torch.Generator().manual_seed(30_000))
    rec = torch.cat([model(x[i : i + 500]) for i in range(0, n, 500)])
    fx, fr = world.measure(x), world.measure(rec)
    reg = load_pretrained("squares-regressor")
    mae = float((fr[:, 0] - y).abs().mean())
    return {"reconstruction_mse": round(float(F.mse_loss(rec, x)), 5),
            "intensity_mae": round(mae, 4), "one_minus_intensity_mae": round(1 - mae, 4),
            "regressor_mae_on_reconstructions": round(float((reg(rec)[:, 0] - y).abs().mean()), 4),
            "background_mae": round(float((fr[:, 1:4] - fx[:, 1:4]).abs().mean()), 4),
            "position_kept": round(float((fx[:, 4:6] == fr[:, 4:6]).all(1).float().mean()), 4),
            "eval_images": n}


RECIPES: dict[str, Recipe] = {
    "squares-vae": Recipe(
        "WorldVAE", {"latent_dim": 16, "width": 16}, seed=53, epochs=24,
        train=_train_squares_vae, evaluate=_eval_squares_vae,
        targets={"one_minus_intensity_mae": 0.95, "position_kept": 0.95},
        generator={"wrapper": "VAEGenerator", "input_range": [0, 1], "image_shape": [3, 32, 32]},
    ),
}
