"""Make ``search_golden.safetensors``: outputs of the per-sample searches on tiny seeded models.

The golden file was produced by the code *before* the search engine (``captum_cfx/_search.py``) replaced
the three hand-written loops (commit 85947c9); ``tests/test_search.py`` checks that the engine reproduces
it bit for bit. Re-run only when a change of results is intended:

    PYTHONPATH=. OMP_NUM_THREADS=1 python tests/data/make_search_golden.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DModel
from safetensors.torch import save_file
from torch import nn

from captum_cfx import (
    DDIMGenerator,
    DiffusionPixelCounterfactual,
    Flip,
    GANGenerator,
    LatentCounterfactualAttack,
    RegressionTarget,
    VAEGenerator,
)

PATH = Path(__file__).with_name("search_golden.safetensors")


class VAE(nn.Module):
    def __init__(self, d: int = 3, s: int = 8) -> None:
        super().__init__()
        self.s = s
        self.enc = nn.Linear(s * s, 2 * d)
        self.dec = nn.Linear(d, s * s)

    def encode(self, x):
        return self.enc(x.flatten(1)).chunk(2, dim=1)

    def decode(self, z):
        return torch.sigmoid(4 * self.dec(z)).view(-1, 1, self.s, self.s)


class Classifier(nn.Module):
    """A conv net; rows whose ``poison`` is 1 give NaN logits (the non-finite isolation case)."""

    def __init__(self, s: int = 8, k: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * s * s, k))

    def forward(self, x, poison=None):
        out = 10 * self.net(x - 0.5)
        if poison is not None:
            out = out + torch.where(poison[:, None] > 0, torch.nan, 0.0)
        return out


class Synthesis(nn.Module):
    def __init__(self, w_dim: int = 6) -> None:
        super().__init__()
        self.fc = nn.Linear(w_dim, 64)

    def forward(self, w):
        return torch.sigmoid(self.fc(w)).view(-1, 1, 8, 8)


def models() -> dict:
    torch.manual_seed(0)
    vae, clf = VAE(), Classifier()
    torch.manual_seed(1)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    torch.manual_seed(2)
    synthesis, mapping = Synthesis(), nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.2))
    torch.manual_seed(3)
    x = torch.rand(7, 1, 8, 8)
    return {"vae": VAEGenerator(vae, image_shape=(1, 8, 8)), "clf": clf,
            "ddim": DDIMGenerator(unet, DDIMScheduler(num_train_timesteps=100), num_inference_steps=2).eval(),
            "gan": GANGenerator(synthesis, mapping=mapping, z_dim=4, image_shape=(1, 8, 8), feature_network=None,
                                steps=30, num_starts=4, patience=3, tol=2e-3, n_mean_samples=256),
            "x": x}


def outputs() -> dict[str, torch.Tensor]:
    """Every search result the golden file holds, by name."""
    m = models()
    x, res = m["x"], {}

    def keep(prefix: str, out) -> None:
        for k in ("counterfactuals", "predictions", "success", "n_steps", "nonfinite"):
            res[f"{prefix}.{k}"] = getattr(out, k)
        # the pixel method's search space is the pixels: its "latents" are the adversarial images
        res[f"{prefix}.latents"] = out.adversarials if hasattr(out, "adversarials") else out.latents.free
        res[f"{prefix}.sizes"] = torch.tensor(out.active_batch_sizes)

    attack = LatentCounterfactualAttack(m["clf"], m["vae"])
    poison = torch.tensor([0, 0, 1, 0, 0, 0, 0.0])
    keep("attack", attack.generate(x, target=[1, 2, 0, 1, 2, 0, 1], max_steps=40, lr=0.2, margin=1.0))
    keep("attack_nan", attack.generate(x, target=[1, 2, 0, 1, 2, 0, 1], additional_forward_args=poison,
                                       max_steps=40, lr=0.2, margin=1.0))
    keep("attack_l2", attack.generate(x, objective=Flip(1.0), optimizer="l2", lr=0.2, radius=2.0,
                                      distance_penalty=0.05, max_steps=25, internal_batch_size=4))
    regressor = lambda img: img.mean((1, 2, 3))  # noqa: E731
    pixel = DiffusionPixelCounterfactual(regressor, m["ddim"])
    rel = RegressionTarget(mode="relative")
    for name, opts in {"pixel": {}, "pixel_filtered": {"stop_on": "filtered", "noise": "fresh", "inpaint_trials": 2,
                                                        "step_rule": "scaled"}}.items():
        out = pixel.generate(x[:4], target=0.15, objective=rel, step_size=0.03, max_steps=8, filter_steps=2,
                             generator=torch.Generator().manual_seed(5), **opts)
        keep(name, out)
        res[f"{name}.masks"], res[f"{name}.attack_success"] = out.masks, out.attack_success
    proj = m["gan"].project(x[:5])
    res.update({"gan.latent": proj.latent.free, "gan.error": proj.error, "gan.n_steps": proj.n_steps,
                "gan.start_error": proj.start_error})
    return {k: v.detach().contiguous() for k, v in res.items()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    save_file(outputs(), str(PATH))
    print(f"wrote {PATH}")
