"""Cells of tutorial 07: sparse counterfactuals, one named attribute at a time (issue R).

Picked up by ``tutorials/make_notebooks.py``; ``CFX_TUTORIAL_N`` scales the data (100 by default, 20 in CI).
"""

NAME = "07_sparse_counterfactuals.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """# Which attribute does the classifier need? Sparse counterfactuals

A counterfactual that changes face size, hair, skin and eyeglasses at once does not say which change the
classifier needed. On the attribute world every factor is known, so we can measure it: we explain two smile
classifiers, one trained where eyeglasses agree with smile 90 % of the time (it learned the shortcut) and
one trained on decorrelated data, and ask for counterfactuals that change **only what the classifier
needs**.

`LatentCoordinateSearch` changes whole latent coordinates, one at a time (SEDC's best-first search), in a
generator whose coordinates are the attributes (`world-factor-ae`). We put it next to the gradient search
(`LatentCounterfactualAttack`) in the entangled `world-vae` ([docs](../docs/coordinate_search.md))."""),
    ("code", """import os

import torch

from captum_cfx import LatentCoordinateSearch, LatentCounterfactualAttack
from captum_cfx.datasets import AttributeWorld
from captum_cfx.metrics import factor_changes, right_factor_rate
from captum_cfx.visualization import counterfactual_grid
from captum_cfx.zoo import load_generator, load_pretrained

%matplotlib inline
torch.set_num_threads(1)
N = int(os.environ.get("CFX_TUTORIAL_N", 100))  # CI runs a smaller N
world = AttributeWorld()
x, factors = world.sample(N, generator=torch.Generator().manual_seed(20_001))
oracle = load_pretrained("world-oracle")          # reads the nine factors from an image: the judge
factor_ae = load_generator("world-factor-ae")     # one latent coordinate per factor
vae = load_generator("world-vae")                 # 64 coordinates that mix the factors
classifiers = {name: load_pretrained(f"world-smile-{name}") for name in ("spurious", "decorrelated")}
print(world.factor_names)"""),
    ("md", """## The coordinates of `world-factor-ae` are the factors
Its encoder reads each factor's code `2 f - 1`; flipping the eyeglasses coordinate draws or removes the
glasses and nothing else."""),
    ("code", """with torch.no_grad():
    code = factor_ae.encode(x).free
    print("binary factors read right:", float(((code > 0).float() == factors)[:, world.is_binary].float().mean()))
    moved = code.clone()
    j = world.index("eyeglasses")
    moved[:, j] = -moved[:, j]
    ch = factor_changes(world, factor_ae.decode(code), factor_ae.decode(moved), oracle=oracle)
print({k: round(v, 2) for k, v in ch.change_rate().items()})"""),
    ("md", """## One coordinate at a time
For each face the search tries every coordinate at values the data takes (the batch's quantiles), keeps the
one that moves the classifier most towards the other class, and stops when the class changes. `n_steps`
counts the coordinates it changed."""),
    ("code", """results = {}
for name, clf in classifiers.items():
    with torch.no_grad():
        target = 1 - clf(x).argmax(1)               # the other class
    search = LatentCoordinateSearch(clf, factor_ae)
    out = search.generate(x, target=target)
    changed = (out.latents.free != out.original_latents.free).float().mean(0)
    ch = factor_changes(world, out.reconstructions, out.counterfactuals, oracle=oracle)
    results[name] = (out, ch)
    steps = out.n_steps.float().mean()
    print(f"{name}: valid {out.success.float().mean():.0%}, coordinates changed per face {steps:.2f}")
    print("   coordinate moved:", {n: round(float(c), 2) for n, c in zip(world.factor_names, changed) if c > 0})
    read = {k: round(v, 2) for k, v in ch.change_rate().items() if v > 0}
    print("   factors the oracle reads as changed:", read)"""),
    ("md", """The spurious classifier's counterfactuals change **eyeglasses**, its shortcut; the decorrelated one's
change **smile**. Below, the spurious classifier: original, reconstruction, counterfactual and the difference."""),
    ("code", """out, _ = results["spurious"]
fig = counterfactual_grid(x, out.reconstructions, out.counterfactuals, out.counterfactuals - out.reconstructions,
                          max_rows=4)"""),
    ("md", """## Next to the gradient search
The latent attack in `world-vae` is valid just as often, but its counterfactuals change several factors at
once. "Only" counts faces whose counterfactual changed the right factor (eyeglasses for the spurious
classifier, smile for the decorrelated one) and nothing else."""),
    ("code", """right = {"spurious": "eyeglasses", "decorrelated": "smile"}
for name, clf in classifiers.items():
    with torch.no_grad():
        target = 1 - clf(x).argmax(1)
    attack = LatentCounterfactualAttack(clf, vae).generate(x, target=target)
    ch_attack = factor_changes(world, attack.reconstructions, attack.counterfactuals, oracle=oracle)
    out, ch = results[name]
    only_search = right_factor_rate(ch, right[name], out.success, only=True).value
    only_attack = right_factor_rate(ch_attack, right[name], attack.success, only=True).value
    print(f"{name}: only {right[name]} changed: coordinate search {only_search:.0%}, latent attack {only_attack:.0%}; "
          f"other factors changed per face {ch.mnac(exclude=right[name]).value:.2f} vs "
          f"{ch_attack.mnac(exclude=right[name]).value:.2f}")"""),
    ("md", """## As a Captum attribution
`attribute` returns `counterfactual - reconstruction`, shaped like the input, so Captum's visualization and
metrics take it like any other attribution."""),
    ("code", """from captum.attr import visualization as viz

clf = classifiers["spurious"]
with torch.no_grad():
    target = 1 - clf(x[:1]).argmax(1)
search = LatentCoordinateSearch(clf, factor_ae)
attr = search.attribute(x[:1], target=target, values=torch.linspace(-1, 1, 5))  # one image: fixed values
fig, _ = viz.visualize_image_attr(attr[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy(),
                                  method="blended_heat_map", sign="all", show_colorbar=True, use_pyplot=False)
fig"""),
]
