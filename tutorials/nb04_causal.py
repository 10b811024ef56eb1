"""Cells of tutorial 04: contrastive and causal necessity / sufficiency of attributes (issue F).

Picked up by ``tutorials/make_notebooks.py``; ``CFX_TUTORIAL_N`` scales the data (100 by default, 20 in CI).
"""

NAME = "04_causal.ipynb"

CELLS: list[tuple[str, str]] = [
    ("md", """# Is an attribute necessary, sufficient, or both? Interventions in latent space

Alipour et al. (*Explaining Image Classifiers Using Contrastive Counterfactuals in Generative Latent Spaces*,
2022) ask of every human attribute *A* whether a black-box classifier **needs** it (removing it flips a
positive decision: NEC), whether it is **enough** (adding it flips a negative decision: SUF), or both (NESUF).
The attributes are set by moving codes in a pretrained generator's latent space; an attribute oracle keeps
only the interventions that worked.

We use the attribute world (cartoon faces with a known causal graph) and two smile classifiers that ship
with the package: one trained where eyeglasses agree with smile 90 % of the time (a planted spurious
correlation), and one trained on decorrelated data ([docs](../docs/causal.md))."""),
    ("code", """import os
import tempfile

import torch

from captum_cfx import CounterfactualSufficiencyNecessity, LatentProbes, LinearDirections, ShiftPredictor
from captum_cfx.attr import plot_sufficiency_necessity
from captum_cfx.datasets import CAUSAL_GRAPH, AttributeWorld
from captum_cfx.zoo import load_generator, load_pretrained

N = int(os.environ.get("CFX_TUTORIAL_N", 100))  # CI runs a smaller N
torch.manual_seed(0)
world = AttributeWorld()
names = list(world.factor_names)
gen = load_generator("world-vae")
oracle_net = load_pretrained("world-oracle")


def oracle(images):  # attribute readings in [0, 1]
    return torch.sigmoid(oracle_net(images))


spurious = load_pretrained("world-smile-spurious")
decorrelated = load_pretrained("world-smile-decorrelated")"""),
    ("md", """## Interventions: linear directions
Fit one latent probe per attribute on encoded images (B's `LatentProbes`), then step along the probes'
normals. `do(latents, attribute, value)` sets an attribute's presence; the **contrastive** mode pins every other
attribute, the **causal** mode leaves them free."""),
    ("code", """x_cal, f_cal = world.sample(10 * N, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    z_cal = gen.encode(x_cal).free
probes = LatentProbes().fit(z_cal, f_cal, names)
lin = LinearDirections(probes, z_cal, thresholds={n: 0.5 for n in world.continuous_factors})
z_glasses = lin.do(z_cal[:4], "eyeglasses", 1.0, mode="contrastive")
print({n: round(s, 2) for n, s in probes.scores_.items()})"""),
    ("md", """## Scores
`estimate` draws the samples (here: encoded images), intervenes on every attribute in both directions, decodes
each intervention batch once, and reports NEC / SUF / NESUF with bootstrap intervals and the fraction of
interventions the oracle confirmed."""),
    ("code", """x, _ = world.sample(5 * N, generator=torch.Generator().manual_seed(7))
results = {}
for name, clf in [("spurious", spurious), ("decorrelated", decorrelated)]:
    cfsn = CounterfactualSufficiencyNecessity(clf, gen, lin, oracle=oracle, causal_graph=CAUSAL_GRAPH)
    results[name] = cfsn.estimate(x, target=1, n_bootstrap=200, generator=torch.Generator().manual_seed(0))
    r = results[name].to_dict(2)
    print(name, {n: (r[n]["nec"], r[n]["suf"], r[n]["nesuf"]) for n in ("smile", "eyeglasses", "hat")})
fig = plot_sufficiency_necessity(results, title="contrastive NEC / SUF / NESUF")"""),
    ("md", """The spurious classifier's decision is *sufficiently* caused by eyeglasses alone; the decorrelated
classifier's is not, and its highest NESUF is the label, smile.

## Causal vs contrastive
With `causal_graph`, the causal mode redraws the descendants of the intervened attribute from their estimated
conditional frequencies (age → eyeglasses in this world), so growing older adds eyeglasses now and then, and
the spurious classifier answers to that. Without a graph, the causal mode leaves the others free (`c = 0`)."""),
    ("code", """cfsn = CounterfactualSufficiencyNecessity(spurious, gen, lin, oracle=oracle, causal_graph=CAUSAL_GRAPH)
causal = cfsn.estimate(x, target=1, mode="causal", n_bootstrap=200, generator=torch.Generator().manual_seed(0))
for mode, r in [("contrastive", results["spurious"]), ("causal", causal)]:
    d = r.to_dict(2)["age"]
    print(f"{mode:12s} SUF(age) = {d['suf']} {d['suf_ci']}   kept {float(r.kept.mean()):.0%}")
fig = cfsn.plot_examples(causal, ["eyeglasses", "age"], n=2)"""),
    ("md", """## The shift predictor
The paper's intervention: an MLP `S(z, c)` trained against an attribute classifier (here the world oracle,
through the decoder) with BCE on the requested attributes plus `0.05 * ||S||`. Fit it at run time (a few hundred
steps give the benchmark's numbers; we take fewer here), then save it as safetensors."""),
    ("code", """sp = ShiftPredictor().fit(z_cal, lambda z: oracle_net(gen.decode(z)), names, steps=5 * N, batch_size=64,
                          generator=torch.Generator().manual_seed(0))
res = CounterfactualSufficiencyNecessity(spurious, gen, sp, oracle=oracle).estimate(x, target=1, n_bootstrap=200)
print({n: round(float(v), 2) for n, v in zip(names, res.kept)})
with tempfile.TemporaryDirectory() as d:
    sp.save_pretrained(d)
    print(ShiftPredictor.from_pretrained(d))"""),
]
