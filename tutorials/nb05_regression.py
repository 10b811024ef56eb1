"""Cells of tutorial 05: counterfactuals for an image regressor, latent vs pixel-space diffusion (issue G).

Picked up by ``tutorials/make_notebooks.py``; ``CFX_TUTORIAL_N`` scales the data (100 by default, 20 in CI).
"""

NAME = "05_regression.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """# Counterfactuals for an image regressor

A regressor answers "how much?": an age, a severity score, a count. Its counterfactual question is
**"what would this image look like if the model predicted 0.8 instead of 0.3?"** Ha & Bender
(*Diffusion counterfactuals for image regressors*, 2025) answer it in two ways, both in captum_cfx:

- **latent** (Diff-AE-RE): `LatentCounterfactualAttack` with a `RegressionTarget` objective moves the
  generator's latent code until `|r(x') - y~| <= tau` (MSE loss, each sample frozen once it succeeds);
- **pixel space** (AC-RE, after ACE): `DiffusionPixelCounterfactual` takes sign-gradient steps on the
  *pixels*, the gradient flowing through a short DDPM filter, then regenerates only the changed region
  by inpainting, so that every other pixel stays exactly the original's.

We use the squares world, where the target is the grey level of the inner square and every factor can be
read back from the pixels exactly ([docs](../docs/regression.md))."""),
    ("code", """import os

import matplotlib.pyplot as plt
import torch

from captum_cfx import DiffusionPixelCounterfactual, LatentCounterfactualAttack, RegressionTarget
from captum_cfx.datasets import Squares
from captum_cfx.metrics import factor_changes, sparsity
from captum_cfx.visualization import counterfactual_grid
from captum_cfx.zoo import available, load_generator, load_pretrained

%matplotlib inline
torch.set_num_threads(1)
N = int(os.environ.get("CFX_TUTORIAL_N", 100))  # CI runs a smaller N
world = Squares()
x, intensity, factors = world.sample(N, generator=torch.Generator().manual_seed(31_000))
regressor = load_pretrained("squares-regressor")   # the model to explain, outputs (N, 1) in [0, 1]
oracle = load_pretrained("squares-oracle")         # an independent regressor, the judge
vae = load_generator("squares-vae")                # 16-d latent
with torch.no_grad():
    y = regressor(x)[:, 0]
print(f"regressor error on real images: {(y - intensity).abs().mean():.3f}")"""),
    ("md", """## Targets as users think of them
`RegressionTarget` takes an absolute value, a relative change, or the seed's "mirror" experiment
(`y~ = y + 0.5` below 0.5, `y - 0.5` above). NaN targets raise; targets outside the regressor's known
range (`value_range`, default `(0, 1)`) warn."""),
    ("code", """print(RegressionTarget().prepare(y[:3], 0.8))                       # absolute
print(RegressionTarget(mode="relative").prepare(y[:3], 0.1))        # relative change
print(RegressionTarget(mode="mirror").prepare(y[:3], None))         # mirror
try:
    RegressionTarget().prepare(y[:3], float("nan"))
except ValueError as e:
    print("ValueError:", e)"""),
    ("md", """## Latent counterfactuals (VAE)
The search stops each sample at the first step within `tau = 0.05` of its target. We then read the
factors back from the pixels: the inner intensity should move toward the target, and the nuisance
factors (background colour, position) should not move."""),
    ("code", """mirror = RegressionTarget(0.05, mode="mirror")
latent = LatentCounterfactualAttack(regressor, vae)
out = latent.generate(x, objective=mirror, optimizer="adam", lr=0.05, max_steps=200)
with torch.no_grad():
    o = oracle(out.counterfactuals)[:, 0]
fc = factor_changes(world, x, out.counterfactuals)
kept = ~fc.changed[:, 1:].any(1)
up = torch.sign(out.goals - y) == torch.sign(fc.delta[:, 0])
print(f"success {out.success_rate:.0%}, mean steps {out.n_steps.float().mean():.1f}")
print(f"oracle error |o(x') - y~| {(o - out.goals).abs().mean():.3f}; "
      f"intensity moved toward y~ in {up.float().mean():.0%}; "
      f"background and position unchanged in {kept.float().mean():.0%}")
print(f"fraction of pixels changed > 0.1: {sparsity(out.counterfactuals, x).value:.3f}")
labels = [f"{a:.2f} → {b:.2f}" for a, b in zip(y.tolist(), out.predictions[:, 0].tolist())]
fig = counterfactual_grid(x, out.reconstructions, out.counterfactuals, out.counterfactuals - x, row_labels=labels,
                          max_rows=4)"""),
    ("md", """## Larger changes need more steps
The seed's second finding: the further the target, the larger the change. Asking the same images for
increasing changes shows the number of steps (and the number of pixels changed) growing with `|y~ - y|`."""),
    ("code", """changes = [0.1, 0.2, 0.3, 0.4, 0.5]
steps, changed = [], []
low = y < 0.4   # images that can move up by 0.5 and stay in range
for d in changes:
    o_d = latent.generate(x[low], target=d, objective=RegressionTarget(0.05, mode="relative"), optimizer="adam",
                          lr=0.05, max_steps=200)
    steps.append(o_d.n_steps.float().mean().item())
    changed.append(sparsity(o_d.counterfactuals, x[low]).value)
fig, ax = plt.subplots(1, 2, figsize=(7, 2.6))
ax[0].plot(changes, steps, marker="o")
ax[0].set_xlabel("requested change |y~ - y|")
ax[0].set_ylabel("steps")
ax[1].plot(changes, changed, marker="o")
ax[1].set_xlabel("requested change |y~ - y|")
ax[1].set_ylabel("fraction of pixels changed")
fig.tight_layout()"""),
    ("md", """## Pixel-space counterfactuals (AC-RE)
`DiffusionPixelCounterfactual` needs an unconditional DDPM of the image domain (`squares-ddpm`) as its
filter and inpainter. The reference settings (sign steps of 1/255, noise level 0.2, 5 DDIM steps) are the
defaults. A sign step moves every pixel by the same amount, so a large change of a regression target
spreads over the whole image; `step_rule="scaled"` moves pixels in proportion to the model's sensitivity
and keeps the change on the inner square. A few images with coarser steps keep the notebook fast on a CPU.
Outside the returned mask the counterfactual is the input, bit for bit."""),
    ("code", """if "squares-ddpm" in available():
    ddpm = load_generator("squares-ddpm")
    pixel = DiffusionPixelCounterfactual(regressor, ddpm)
    k = min(N, 4)
    pout = pixel.generate(x[:k], objective=mirror, step_rule="scaled", step_size=4 / 255, filter_steps=2,
                          max_steps=100, generator=torch.Generator().manual_seed(0))
    m = pout.masks.expand_as(x[:k])
    print(f"success {pout.success_rate:.0%}; mask covers {pout.masks.float().mean():.1%} of the pixels")
    print("outside the mask, bit-identical to the input:", torch.equal(pout.counterfactuals[~m], x[:k][~m]))
    fig = counterfactual_grid(x[:k], x[:k], pout.counterfactuals, pout.counterfactuals - x[:k], row_labels=
                              [f"{a:.2f} → {b:.2f}" for a, b in zip(y[:k].tolist(), pout.predictions[:, 0].tolist())])
else:
    print("squares-ddpm is not among the shipped weights of this installation; see docs/regression.md")"""),
    ("md", """## Latent vs pixel space, measured
`benchmarks/regression.py` runs both methods on 200 test images with mirrored targets and reports success,
the oracle's error, sparsity, realism (distance to the squares manifold, domain FID) and the exact factor
changes, plus success and steps as a function of `|y~ - y|` (`docs/images/regression_sweep.png`). See
[the user guide](../docs/regression.md) for the table and which of the seed's findings hold."""),
]
