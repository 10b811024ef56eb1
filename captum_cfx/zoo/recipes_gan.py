"""Training recipes for the gan models (merged into `python -m captum_cfx.zoo.train`).

``mnist-gan``: a DCGAN-size generator with a StyleGAN-style mapping network (so it has a W space),
trained with the non-saturating loss on the 4,000 embedded MNIST training digits. Both real and
generated images pass through the same differentiable random affine augmentation before the
discriminator (DiffAugment, Zhao et al. 2020), which keeps the discriminator from memorising so few
digits. The shipped weights are an exponential moving average of the generator's (as in StyleGAN),
with batch-norm statistics re-estimated for those averaged weights.
"""

from __future__ import annotations

import copy
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from captum_cfx.datasets import load_mnist
from captum_cfx.zoo.train import Recipe, accuracy, random_affine

__all__ = ["RECIPES", "train_gan"]


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return random_affine(x, g, rot=8.0, scale=0.08, shift=2.0)


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, z_dim: int, g: torch.Generator, batches: int = 100,
                           batch: int = 256) -> None:
    """Re-estimate batch-norm running statistics as a plain average over ``batches`` random batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for _ in range(batches):
        model(torch.randn(batch, z_dim, generator=g))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def train_gan(seed: int, epochs: int, config: dict, lr: float = 2e-4, *, batch: int = 64, ema: float = 0.999,
              d_width: int = 32) -> nn.Module:
    """Train the MNIST GAN; returns the EMA generator in eval mode."""
    from captum_cfx.zoo.gan_models import MNISTGAN, MNISTGANDiscriminator

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, _ = load_mnist("train")
    gen, disc = MNISTGAN(**config), MNISTGANDiscriminator(d_width)
    gen_ema = copy.deepcopy(gen).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    n, z_dim = len(x), gen.z_dim
    t0 = time.time()
    for ep in range(epochs):
        gen.train()
        perm = torch.randperm(n, generator=g)
        d_total = g_total = 0.0
        steps = math.ceil(n / batch)
        for i in range(0, n, batch):
            real = x[perm[i : i + batch]]
            b = len(real)
            # discriminator step
            with torch.no_grad():
                fake = gen(torch.randn(b, z_dim, generator=g))
            d_loss = F.softplus(-disc(_augment(real, g))).mean() + F.softplus(disc(_augment(fake, g))).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # generator step (non-saturating)
            g_loss = F.softplus(-disc(_augment(gen(torch.randn(b, z_dim, generator=g)), g))).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            with torch.no_grad():
                for pe, p in zip(gen_ema.parameters(), gen.parameters()):
                    pe.lerp_(p, 1 - ema)
            d_total += d_loss.item() / steps
            g_total += g_loss.item() / steps
        print(f"[MNISTGAN] epoch {ep + 1}/{epochs} d {d_total:.3f} g {g_total:.3f} ({time.time() - t0:.0f}s)",
              file=sys.stderr)
    _recalibrate_batchnorm(gen_ema, z_dim, g)
    return gen_ema


def _eval_gan(model: nn.Module, n: int = 200) -> dict:
    """Classifier accuracy on projections of ``n`` test digits (evenly spaced: the split is class-sorted)."""
    from captum_cfx.generators import GANGenerator
    from captum_cfx.zoo import load_pretrained
    from captum_cfx.zoo._registry import generator_kwargs

    x, y = load_mnist("test")
    idx = torch.linspace(0, len(x) - 1, n).long()
    x, y = x[idx], y[idx]
    clf = load_pretrained("mnist-classifier")
    gan = GANGenerator(model, **generator_kwargs(RECIPES["mnist-gan"].generator)).eval()
    lat = gan.encode(x)
    with torch.no_grad():
        proj = gan.decode(lat)
        samples = model(torch.randn(2000, model.z_dim, generator=torch.Generator().manual_seed(0)))
        probs = clf(samples).softmax(1)
    counts = torch.bincount(probs.argmax(1), minlength=10).float() / len(samples)
    return {
        "classifier_accuracy_on_projections": accuracy(clf, proj, y),
        "median_projection_mse": float(lat.diagnostics["projection_error"].median()),
        "projections_flagged": float((~lat.diagnostics["projection_ok"]).float().mean()),
        "sample_confidence": float(probs.max(1).values.mean()),
        "sample_class_entropy_bits": float(-(counts * counts.clamp_min(1e-12).log2()).sum()),
    }


RECIPES: dict[str, Recipe] = {
    "mnist-gan": Recipe(
        "MNISTGAN", {"z_dim": 64, "w_dim": 64, "width": 32, "mapping_layers": 3},
        seed=3, epochs=80,
        train=lambda r, e: train_gan(r.seed, e, r.config),
        evaluate=_eval_gan, targets={"classifier_accuracy_on_projections": 0.9},
        generator={"wrapper": "GANGenerator", "latent_space": "w", "input_range": [0.0, 1.0],
                   "image_shape": [1, 28, 28], "steps": 150, "lr": 0.1,
                   "feature_network": "mnist-oracle", "feature_weight": 0.3,
                   "error_threshold": 0.05},
    ),
}
