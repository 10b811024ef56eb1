"""Cells of tutorial 03: global counterfactual directions and latent integrated gradients (issue J, item 3).

Picked up by ``tutorials/make_notebooks.py``; ``CFX_TUTORIAL_N`` scales the data (100 by default, 20 in CI).
"""

NAME = "03_directions.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """# Global counterfactual directions and latent integrated gradients

A counterfactual attack (tutorial 01) searches a new latent code for *every* image. Sobieski & Biecek
(*Global Counterfactual Directions*, ECCV 2024) ask a different question: is there **one** direction in the
generator's latent space, found from a **single** image, that flips the classifier's decision for most
images of a class? Such a direction is a global explanation: it shows what the model needs changed between
two classes. They then integrate the classifier's gradients along a path of *decoded* images towards that
counterfactual (Latent Integrated Gradients), which reads like Captum's `IntegratedGradients` but never
leaves the image manifold.

We ask the shipped MNIST classifier a binary question, **3 vs 8** (`classes=(3, 8)`: the score is
`logit[8] - logit[3]`), fit directions on one test 8, and apply them to held-out 8s. Everything runs on CPU
with the shipped models ([docs](../docs/global_directions.md), [Latent IG docs](../docs/latent_ig.md))."""),
    ("code", """import os

import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients, Saliency

from captum_cfx import GlobalCounterfactualDirections, LatentIntegratedGradients
from captum_cfx.datasets import load_mnist
from captum_cfx.visualization import direction_grid, plot_attribution
from captum_cfx.zoo import load_generator, load_pretrained, mnist_distance

%matplotlib inline
torch.set_num_threads(1)
N = int(os.environ.get("CFX_TUTORIAL_N", 100))  # CI runs a smaller N
model = load_pretrained("mnist-classifier")
oracle = load_pretrained("mnist-oracle")      # an independent classifier, the judge
generator = load_generator("mnist-vae")       # 32-d latent
xte, yte = load_mnist("test")
xtr, ytr = load_mnist("train")
eights = torch.cat([xte[yte == 8], xtr[ytr == 8]])  # 500 embedded 8s, test 8s first
source, heldout = eights[1:2], torch.cat([eights[:1], eights[2:]])[: 5 * N]
with torch.no_grad():  # the shared step size: the median latent norm over the data set
    alpha = float(generator.encode(torch.cat([xtr, xte])).free.norm(dim=1).median())
print(f"{len(heldout)} held-out 8s; alpha = median ||z0|| = {alpha:.2f}")"""),
    ("md", """## Fit directions on one image

The default **white-box** mode takes the gradient of two losses at the source's latent code `z0`, the score
alone and the score plus a perceptual distance (`loss_weights={(1, 0), (0.05, 1)}`: *g-directions*), and the
top eigenvectors of each loss's Hessian (*h-directions*), then runs a line search along each on the source.
Every decoded image, gradient pass and Hessian-vector product counts as a **render**: the paper's black-box
proxy mode (`mode="proxy"`) spends thousands of them; the white-box mode a few hundred."""),
    ("code", """gcd = GlobalCounterfactualDirections(model, generator, classes=(3, 8), distance=mnist_distance())
gcd.fit(source)
print(f"{gcd.renders_} renders, {gcd.fit_seconds_:.1f}s; best direction: {gcd.direction_kinds_[gcd.best_index_]}")
for kind, s in zip(gcd.direction_kinds_, gcd.scores_):
    print(f"  {kind:10s} flips the source at alpha {s['alpha']:.2f}" if s["flipped"] else f"  {kind:10s} no flip")"""),
    ("md", """## One direction, many images

`transfer` moves every image along the same direction (sign flipped for images on the other side of the
decision); each panel is titled with the classifier's probabilities of 3 and 8. The digits should turn into
3s, not into noise."""),
    ("code", """steps = [0.0, 0.25 * alpha, 0.5 * alpha, 0.75 * alpha, alpha]
fig = direction_grid(gcd, model, heldout[[9, 19, 29, 39]], steps)"""),
    ("md", """**Globality** is the fraction of held-out images whose decision flips at a step `alpha`. The oracle
checks the flips (does it also answer "3"?). The control: random unit directions at the same steps."""),
    ("code", """grid = torch.linspace(0, alpha, 11)[1:]
res = gcd.globality(heldout, alphas=grid, oracle=oracle, label="white-box GCD")
dirs = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
rand = torch.stack([gcd.globality(heldout, alphas=grid, direction=d).flip_rate for d in dirs])
cosine = torch.nn.functional.normalize(dirs, dim=1) @ gcd.direction()
print("best direction:", {k: round(v, 3) for k, v in res.at(alpha).items()})
print("10 random directions at the same alpha:", rand[:, -1].numpy().round(3))
print("their cosine with the best direction:  ", cosine.numpy().round(2))
fig = res.plot(vline=alpha)
fig.axes[0].plot(grid, rand.T, color="gray", lw=0.6, alpha=0.6)
fig.axes[0].plot(grid, rand.mean(0), color="k", label="10 random directions: mean")
fig.axes[0].legend(fontsize=7, loc="upper left")"""),
    ("md", """The direction found from one 8 flips almost every held-out 8 at the shared step, and the oracle agrees
with nearly all of those flips. Random directions flip few on average, but not all of them: in a 32-d latent
space a random direction is sometimes well aligned with the 8 → 3 direction (compare the flip rates with the
cosines above). `benchmarks/global_directions.py` reports the distribution over random directions next to
the fitted ones."""),
    ("md", """## In Captum's shape

`attribute` returns, for each input, the pixel change the direction makes (counterfactual minus
reconstruction), shaped like the input, so it goes through Captum's visualization like any attribution.
Below it sits next to `IntegratedGradients` and `Saliency` of the logit of 3."""),
    ("code", """x4 = heldout[[9, 19, 29, 39]]
three = torch.full((4,), 3)
maps = {"GCD change": gcd.attribute(x4),
        "Captum IG": IntegratedGradients(model).attribute(x4, target=three, n_steps=32),
        "Saliency": Saliency(model).attribute(x4, target=three, abs=False)}
fig, axes = plt.subplots(4, 3, figsize=(5, 7))
for i in range(4):
    for j, (name, m) in enumerate(maps.items()):
        plot_attribution(m[i].detach(), x4[i], ax=axes[i, j])
        axes[0, j].set_title(name, fontsize=8)
fig.tight_layout()"""),
    ("md", """## Latent integrated gradients

`LatentIntegratedGradients` explains the logit of 8 along a path of decoded images. Its baseline is found by
walking along the fitted direction (`direction=gcd`) until `p(8) < 0.01`; the path runs from that baseline
to the input's reconstruction. With the exact path sum (default) the attributions add up to
`f(start) - f(baseline)`: the **convergence delta** is the completeness error, and it shrinks as `n_steps`
grows. The reference code's straight-line multiplier (`method="straight"`) does not."""),
    ("code", """lig = LatentIntegratedGradients(model, generator)
eight = torch.full((4,), 8)
for method in ("path", "straight"):
    for n_steps in (16, 64):
        out = lig.explain(x4, target=eight, direction=gcd, n_steps=n_steps, method=method)
        print(f"{method:9s} n_steps={n_steps:3d}: mean relative completeness error {out.relative_error.mean():.4%}")
attr, delta = lig.attribute(x4, target=eight, direction=gcd, n_steps=64, return_convergence_delta=True)
print("deltas:", delta.detach().numpy().round(4))"""),
    ("code", """base = lig.explain(x4, target=eight, direction=gcd, n_steps=4).baseline_images
ig8 = IntegratedGradients(model).attribute(x4, target=eight, n_steps=32)
fig, axes = plt.subplots(4, 4, figsize=(6.4, 6.6))
for i in range(4):
    axes[i, 0].imshow(x4[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[i, 1].imshow(base[i, 0], cmap="gray", vmin=0, vmax=1)
    plot_attribution(attr[i].detach(), x4[i], ax=axes[i, 2])
    plot_attribution(ig8[i].detach(), x4[i], ax=axes[i, 3])
for j, t in enumerate(["input", "LIG baseline (GCD)", "Latent IG", "Captum IG"]):
    axes[0, j].set_title(t, fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()"""),
    ("md", """Latent IG puts the evidence for 8 mostly on the left side of the loops, the strokes that a 3 does not
have, because its baseline is a 3 made by the same decoder; Captum's IG with a black baseline spreads it
over every stroke of the digit. The directions can be saved with `gcd.save_pretrained(folder)` and reloaded
with `GlobalCounterfactualDirections.from_pretrained(folder, model, generator)`.
`benchmarks/global_directions.py` measures globality on all 499 held-out 8s for three sources and both
modes, with 20 random control directions."""),
]
