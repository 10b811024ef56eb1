"""Write the tutorial notebooks from the cell sources below (so they stay reviewable as code).

Notebooks 01-02 are defined here; each later notebook's cells live in ``tutorials/nbNN_<name>.py``
(a module defining ``NAME`` and ``CELLS``), picked up automatically.

    python tutorials/make_notebooks.py          # regenerate tutorials/*.ipynb (outputs cleared)
    python tutorials/run_notebooks.py           # execute them (CI sets CFX_TUTORIAL_N small)
"""

import importlib.util
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent

QUICKSTART = [
    ("md", """# Quickstart: latent counterfactuals for an MNIST classifier

We explain the shipped MNIST classifier with counterfactual images made in the shipped VAE's latent
space (Counterfactual Attacks, Goldwasser & Hooker 2025), look at them with Captum's visualization,
and put the resulting pixel maps next to Captum's `IntegratedGradients` and `Saliency`.
Everything runs on CPU with data and weights that ship with the package."""),
    ("code", """import os

import matplotlib.pyplot as plt
import torch
from captum.attr import IntegratedGradients, Saliency

from captum_cfx import LatentCounterfactualAttack
from captum_cfx.datasets import load_mnist
from captum_cfx.metrics import oracle_agreement
from captum_cfx.visualization import counterfactual_grid, plot_attribution
from captum_cfx.zoo import load_generator, load_pretrained

N = int(os.environ.get("CFX_TUTORIAL_N", 100))  # CI runs a smaller N
x, y = load_mnist("test")
idx = torch.arange(0, 1000, 1000 // N)[:N]
x, y = x[idx], y[idx]
target = (y + 1) % 10  # ask every digit to become the next digit
model = load_pretrained("mnist-classifier")
generator = load_generator("mnist-vae")
oracle = load_pretrained("mnist-oracle")"""),
    ("md", """`generate` returns every result; `attribute` returns only the pixel map, shaped like the input
(counterfactual minus reconstruction), as any Captum attribution does."""),
    ("code", """attack = LatentCounterfactualAttack(model, generator)
out = attack.generate(x, target=target)
print(f"flip rate {out.success_rate:.1%}, mean steps {out.n_steps.float().mean():.1f}")
agree = oracle_agreement(oracle, out.counterfactuals, target, out.success).value
print(f"independent oracle sees the target in {agree:.1%}")
maps = out.counterfactuals - out.reconstructions
fig = counterfactual_grid(x, out.reconstructions, out.counterfactuals, maps,
                          row_labels=[f"{int(a)}→{int(b)}" for a, b in zip(y, target)], max_rows=4)"""),
    ("md", """## Next to Captum's gradient attributions
Integrated gradients and saliency say which pixels the logit of the *target* class is sensitive to;
the counterfactual map says which pixels had to change, and how, for the model to predict it."""),
    ("code", """ig = IntegratedGradients(model).attribute(x[:4], target=target[:4], n_steps=32)
sal = Saliency(model).attribute(x[:4], target=target[:4])
cf = attack.attribute(x[:4], target=target[:4])
fig, axes = plt.subplots(4, 3, figsize=(5, 7))
for i in range(4):
    for j, (name, a) in enumerate([("counterfactual", cf), ("integrated gradients", ig), ("saliency", sal)]):
        plot_attribution(a[i], x[i], ax=axes[i, j], sign="absolute_value" if name == "saliency" else "all")
        axes[0, j].set_title(name, fontsize=8)
fig.tight_layout()"""),
]


DESCRIPTORS = [
    ("md", """# Descriptors and global explanations

A counterfactual shows *that* a digit changed; descriptor attribution says *what* changed, in named
properties. Following Goldwasser & Hooker (2025) we fit one linear probe per descriptor on the VAE's
latent codes of an auxiliary data set (here Morpho-MNIST-style measurements of training digits) and read
each counterfactual's change `delta_j = probe_j(z_cf) - probe_j(z0)` without decoding anything."""),
    ("code", """import os

import torch

from captum_cfx import CounterfactualDescriptorAttribution, Morphometry
from captum_cfx.datasets import load_mnist
from captum_cfx.zoo import load_generator, load_pretrained

N = int(os.environ.get("CFX_TUTORIAL_N", 100))
xtr, _ = load_mnist("train")
x, y = load_mnist("test")
idx = torch.arange(0, 1000, 1000 // N)[:N]
x, y = x[idx], y[idx]
morpho = Morphometry()
cda = CounterfactualDescriptorAttribution(load_pretrained("mnist-classifier"), load_generator("mnist-vae"))
aux = xtr[:: max(1, 4000 // (10 * N))]
cda.fit(aux, morpho(aux), morpho.names)
print("held-out probe scores:", {k: round(v, 2) for k, v in cda.probes_.scores_.items()})"""),
    ("code", """target = (y + 1) % 10
out = cda.explain(x, target=target)
print(cda.descriptor_names)
print(out.deltas[:5].round(decimals=2))"""),
    ("md", """The global explanation averages the signed deltas per (source → target) transition, each
counterfactual with its own original latent."""),
    ("code", """g = cda.global_attribution(out.counterfactuals, group_by="target")
print(g.transitions[:3])"""),
]


def write(name: str, cells: list[tuple[str, str]]) -> None:
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating an unchanged notebook changes nothing
        cell["id"] = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbf.write(nb, HERE / name)


def _extra_notebooks() -> list[tuple[str, list[tuple[str, str]]]]:
    out = []
    for path in sorted(HERE.glob("nb[0-9][0-9]_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out.append((mod.NAME, mod.CELLS))
    return out


if __name__ == "__main__":
    write("01_quickstart.ipynb", QUICKSTART)
    write("02_descriptors.ipynb", DESCRIPTORS)
    for name, cells in _extra_notebooks():
        write(name, cells)
