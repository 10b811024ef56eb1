"""Cells of tutorial 06: your own task, classifier and VAE, explained through the Python API and the CLI (issue M).

Picked up by ``tutorials/make_notebooks.py``; ``CFX_TUTORIAL_N`` scales the data (100 by default, 20 in CI) and,
when set, trains for a fixed small number of steps (the full-size training runs longer without it).
"""

NAME = "06_your_own_model.ipynb"

MODELS = '''"""Your models: a 5-class classifier and a VAE of 3x64x64 images, with factories for the CLI."""
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

HERE = Path(__file__).resolve().parent


class Classifier(nn.Module):
    """A small CNN: (N, 3, 64, 64) images in [0, 1] -> (N, 5) class logits."""

    def __init__(self, k: int = 5):
        super().__init__()
        self.net = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(32, k))

    def forward(self, x):
        return self.net(x)


class VAE(nn.Module):
    """A small VAE: 3x64x64 <-> an 8-d latent. Inside it works at 16x16 (an MLP), so it trains in seconds."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 256), nn.ReLU(), nn.Linear(256, 2 * d))
        self.dec = nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 3 * 16 * 16),
                                 nn.Unflatten(1, (3, 16, 16)), nn.Sigmoid())

    def encode(self, x):
        return self.enc(nn.functional.avg_pool2d(x, 4)).chunk(2, dim=1)  # (mean, logvar)

    def decode(self, z):
        return nn.functional.interpolate(self.dec(z), scale_factor=4, mode="bilinear")


def classifier():
    """`--model mymodels:classifier`: the trained classifier."""
    model = Classifier()
    model.load_state_dict(load_file(HERE / "classifier.safetensors"))
    return model.eval()


def vae():
    """`--generator mymodels:vae`: the trained VAE as a captum_cfx generator (images in [0, 1], 3x64x64)."""
    from captum_cfx import VAEGenerator

    net = VAE()
    net.load_state_dict(load_file(HERE / "vae.safetensors"))
    return VAEGenerator(net.eval(), input_range=(0, 1), image_shape=(3, 64, 64))
'''

CELLS: list[tuple[str, str]] = [
    ("md", """# Your own model: any image size, channels and classes

Everything in captum_cfx takes *your* classifier (any callable from images to logits or values) and *your*
generator (anything with `encode` and a differentiable `decode`). This notebook goes the whole way on a task
that has nothing to do with MNIST:

1. a procedural data set of **3-channel 64x64 images in 5 classes**, generated here;
2. a small classifier and a small VAE, **trained here** in seconds;
3. explained through the Python API with the **latent attack**, **global counterfactual directions (GCD)** and
   **latent integrated gradients (LIG)**;
4. and through the command line: `captum-cfx explain --model mymodels:classifier --generator mymodels:vae
   --data images/`, with the models in a module of your working folder and the images as PNG files with a
   `labels.csv`.

See [bring your own model](../docs/bring_your_own.md) for what each method needs and costs."""),
    ("code", """import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image
from safetensors.torch import save_file

from captum_cfx import GlobalCounterfactualDirections, LatentCounterfactualAttack, LatentIntegratedGradients
from captum_cfx.visualization import counterfactual_grid, plot_attribution

%matplotlib inline
torch.set_num_threads(1)
N = int(os.environ.get("CFX_TUTORIAL_N", 100))  # CI runs a smaller N
FAST = "CFX_TUTORIAL_N" in os.environ             # ... and trains for fewer steps
work = Path(tempfile.mkdtemp(prefix="cfx-own-model-"))  # your project folder: models, weights, images"""),
    ("md", """## A task of your own
Each image is a coloured disc on a grey background; **the class is the disc's colour** (red, green, blue,
yellow, magenta). Size, position, background brightness and pixel noise vary and are not the class. A
counterfactual should therefore change the colour and keep the rest."""),
    ("code", """COLOURS = torch.tensor([[0.9, 0.15, 0.1], [0.1, 0.75, 0.2], [0.15, 0.3, 0.95], [0.95, 0.85, 0.1],
                        [0.8, 0.2, 0.85]])
NAMES = ["red", "green", "blue", "yellow", "magenta"]


def make_images(n, seed):
    \"\"\"n images (n, 3, 64, 64) in [0, 1] and their classes (n,).\"\"\"
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=g)
    size = torch.randint(14, 30, (n, 1, 1), generator=g)
    cx, cy = torch.randint(22, 42, (2, n, 1, 1), generator=g)
    background = 0.1 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = (((xx - cx) ** 2 + (yy - cy) ** 2) <= (size / 2) ** 2).float().unsqueeze(1)
    img = background * (1 - disc) + COLOURS[y].view(n, 3, 1, 1) * disc
    return (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(0, 1), y


xtrain, ytrain = make_images(2000, seed=0)
xtest, ytest = make_images(max(N, 20), seed=1)
fig, axes = plt.subplots(1, 8, figsize=(9, 1.4))
for ax, img, c in zip(axes, xtest, ytest):
    ax.imshow(img.permute(1, 2, 0))
    ax.set_title(NAMES[c], fontsize=8)
    ax.axis("off")"""),
    ("md", """## Your models, in a module of your project
The models live in `mymodels.py` in the project folder, with two **factories** (`classifier()`, `vae()`) that
load the trained weights: the command line calls them later. Any module importable from the current folder
works, no `PYTHONPATH` needed. The VAE is wrapped by `VAEGenerator`, which only needs `encode(x) -> (mean,
logvar)` and `decode(z)`; `image_shape` makes it check the pair once at construction."""),
    ("code", "MODELS = r\'\'\'" + MODELS + "\'\'\'" + """
(work / "mymodels.py").write_text(MODELS)
sys.path.insert(0, str(work))  # in this notebook; the CLI imports it from its current folder
import mymodels  # noqa: E402"""),
    ("md", """## Train them here
A fixed number of Adam steps (fewer under `CFX_TUTORIAL_N`, as in CI). The VAE works at 16x16 inside, so its
loss is computed there; its KL term keeps the latent space smooth, which the explainers walk in."""),
    ("code", """torch.manual_seed(0)
clf, net = mymodels.Classifier(), mymodels.VAE()
steps_clf, steps_vae = (150, 600) if FAST else (600, 4000)
opt = torch.optim.Adam(clf.parameters(), 1e-2)
for _ in range(steps_clf):
    i = torch.randint(0, len(xtrain), (64,))
    loss = torch.nn.functional.cross_entropy(clf(xtrain[i]), ytrain[i])
    opt.zero_grad()
    loss.backward()
    opt.step()
small = torch.nn.functional.avg_pool2d(xtrain, 4)  # the VAE's inside resolution
opt = torch.optim.Adam(net.parameters(), 2e-3)
for _ in range(steps_vae):
    i = torch.randint(0, len(xtrain), (64,))
    mean, logvar = net.enc(small[i]).chunk(2, dim=1)
    z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
    kl = -0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(1).mean()
    loss = 16 * ((net.dec(z) - small[i]) ** 2).sum((1, 2, 3)).mean() + kl
    opt.zero_grad()
    loss.backward()
    opt.step()
save_file(clf.state_dict(), work / "classifier.safetensors")
save_file(net.state_dict(), work / "vae.safetensors")

model, generator = mymodels.classifier(), mymodels.vae()  # what the CLI's factories return
x, y = xtest[:N], ytest[:N]
with torch.no_grad():
    recon = generator.reconstruct(x)
    acc, acc_recon = (model(x).argmax(1) == y).float().mean(), (model(recon).argmax(1) == y).float().mean()
print(f"classifier accuracy {acc:.0%} on test images, {acc_recon:.0%} on their VAE reconstructions")"""),
    ("md", """## The latent attack
Each image gets a target class (here the next colour); the attack moves its latent code until the classifier
prefers the target by a margin, then decodes. Nothing here is specific to the image size or class count."""),
    ("code", """targets = (y + 1) % 5
out = LatentCounterfactualAttack(model, generator).generate(x, target=targets, max_steps=200)
print(f"flip rate {out.success_rate:.0%}, mean steps {out.n_steps.float().mean():.1f}")
labels = [f"{NAMES[a]}→{NAMES[b]}" for a, b in zip(y.tolist(), targets.tolist())]
fig = counterfactual_grid(x, out.reconstructions, out.counterfactuals, out.counterfactuals - out.reconstructions,
                          row_labels=labels, max_rows=4)"""),
    ("md", """## Global directions (GCD) and latent integrated gradients (LIG)
GCD fits a few latent directions on **one** image that move it from one class to another (red → blue here),
then asks how many other red images the same direction flips. Its perceptual distance defaults to a plain
pixel distance, which works at any size; pass `distance=` a feature network of yours for a perceptual one.
LIG then explains the logit of red along the decoded path from a baseline found by walking along the fitted
direction; its attributions add up to the change of the logit (the completeness error is printed)."""),
    ("code", """more, more_y = make_images(10 * N, seed=2)
reds = more[more_y == 0]  # about N red images
gcd = GlobalCounterfactualDirections(model, generator, classes=(0, 2))  # red -> blue
gcd.fit(reds[:1])
print(f"{gcd.renders_} renders; best direction {gcd.direction_kinds_[gcd.best_index_]}")
res = gcd.globality(reds[1:], alphas=torch.linspace(0, 4, 9)[1:])
print("fraction of the other red images flipped to blue, per step:", res.flip_rate.numpy().round(2))

x4 = reds[1:5]
lig = LatentIntegratedGradients(model, generator)
red = torch.zeros(len(x4), dtype=torch.long)
expl = lig.explain(x4, target=red, direction=gcd, n_steps=32)
print("relative completeness error:", expl.relative_error.numpy().round(4))
fig, axes = plt.subplots(len(x4), 3, figsize=(4.5, 1.5 * len(x4)))
for i in range(len(x4)):
    axes[i, 0].imshow(x4[i].permute(1, 2, 0))
    axes[i, 1].imshow(expl.baseline_images[i].permute(1, 2, 0).clamp(0, 1))
    plot_attribution(expl.attributions[i].detach(), x4[i], ax=axes[i, 2])
for j, t in enumerate(["input", "baseline (GCD walk)", "Latent IG of red"]):
    axes[0, j].set_title(t, fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()"""),
    ("md", """## The same from the command line
Save the images as PNG files with a `labels.csv` (`filename,label` rows), then run `captum-cfx explain` from
the project folder. The image shape (3x64x64), the class count (5, from the model's output) and the value
range (the generator's `input_range`) are read from the data, the model and the generator; `--image-shape`,
`--num-classes` and `--pixel-range` set them explicitly. The run writes shards, `summary.json`, a manifest and
`grid.png`, as it does on MNIST; a regressor (a model returning `(N,)` or `(N, 1)`) gets a regression run
with its own summary (`--regression-mode`, `--tolerance`)."""),
    ("code", """images = work / "images"
images.mkdir(exist_ok=True)
rows = ["filename,label"]
for i, (img, c) in enumerate(zip(x, y)):
    Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy()).save(images / f"{i:04d}.png")
    rows.append(f"{i:04d}.png,{int(c)}")
(images / "labels.csv").write_text("\\n".join(rows) + "\\n")

cli = shutil.which("captum-cfx") or str(Path(sys.executable).with_name("captum-cfx"))
cmd = [cli, "explain", "--model", "mymodels:classifier", "--generator", "mymodels:vae", "--data", "images/",
       "--target", "next", "--max-steps", "200", "--shard-size", "10", "--out", "run", "--no-progress"]
done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)  # from the project folder
print("$ captum-cfx", " ".join(cmd[1:]))
print(done.stdout + done.stderr)
summary = json.loads((work / "run" / "summary.json").read_text())
print({k: summary[k] for k in ("task", "n", "n_valid", "flip_rate", "mean_steps")})"""),
    ("code", """from IPython.display import Image as Show

Show(filename=str(work / "run" / "grid.png"), width=420)"""),
    ("md", """The command line flips about as many images as the Python API above (its targets come from `--target next`
applied to the labels of `labels.csv`, the same as `(y + 1) % 5`). To explain a regressor instead, give
`--model` a factory returning a model with one output; `summary.json` then reports `success_rate` (within
`--tolerance` of the goal), `mean_abs_change` and `mean_abs_error_to_goal` instead of flips."""),
]
