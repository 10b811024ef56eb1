"""Regenerate every gallery image of the README and the user guide with one command.

::

    python tools/gallery.py                       # writes docs/images/<name>.png (1 CPU thread)
    python tools/gallery.py --out /tmp/g --small --only gcd_grid lig_vs_ig

Everything runs on CPU with the shipped models and data, with fixed seeds and inputs, so the images are
the same on every run (up to floating-point differences between machines). The figures:

- ``explain_grid``: ``captum-cfx explain`` on the shipped models: original, reconstruction,
  counterfactual, difference map (drawn by ``captum_cfx.report.write_report``);
- ``descriptor_bars``: what changed, in Morpho-MNIST descriptors, per counterfactual
  (``captum_cfx.report.append_descriptor_report``);
- ``descriptor_global``: the global explanation, the mean descriptor change per class transition;
- ``gcd_grid``: a global counterfactual direction (8 -> 3) from one 8, applied to other 8s at several
  alphas (``captum_cfx.visualization.direction_grid``);
- ``gcd_globality``: the direction's flip rate over 499 held-out 8s vs alpha, with random directions as
  the control (``GlobalityResult.plot``);
- ``lig_vs_ig``: Latent IG next to Captum's IntegratedGradients and Saliency (:func:`lig_figure`);
- ``worlds``: the attribute world, its VAE reconstructions, and squares (:func:`worlds_figure`).

``--small`` shrinks every data size (for tests: seconds instead of minutes); ``--proxy`` adds the
paper's black-box proxy mode (5,000 renders, several minutes) to the globality curve.

This is the project's tooling, not part of the installed package: it runs from a source checkout (it reads
and writes the repository's ``docs/images``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["FIGURES", "GallerySizes", "lig_figure", "main", "make_gallery", "worlds_figure"]

#: the gallery's figures, in the order they are made (each is written as ``<name>.png``)
FIGURES = ("explain_grid", "descriptor_bars", "descriptor_global", "gcd_grid", "gcd_globality", "lig_vs_ig",
           "worlds")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


@dataclass(frozen=True)
class GallerySizes:
    """Data sizes of the gallery (the defaults make the published images; :meth:`small` is for tests).

    Attributes:
        n_explain: test digits explained by the latent attack (``captum-cfx explain --n``).
        n_aux: training digits measured for the descriptor probes.
        n_heldout: held-out 8s for the globality curve (at most 499).
        n_random: random control directions on the globality curve.
        lig_steps: path segments of Latent IG and Captum IG.
        n_worlds: attribute-world samples drawn (the figure shows the first 10).
        rows: rows of the counterfactual grids (``explain_grid``, ``descriptor_bars``, ``gcd_grid``).
        dpi: resolution of every image; ``None`` for the published ones (110, 130 or 80 per figure).
    """

    n_explain: int = 100
    n_aux: int = 1000
    n_heldout: int = 499
    n_random: int = 20
    lig_steps: int = 128
    n_worlds: int = 4000
    rows: int = 8
    dpi: int | None = None

    @classmethod
    def small(cls) -> GallerySizes:
        """Tiny sizes: every figure in a few seconds (not the published images)."""
        return cls(n_explain=10, n_aux=100, n_heldout=40, n_random=2, lig_steps=8, n_worlds=10, rows=2, dpi=40)


# ---------------------------------------------------------------------------------------------- figures
def lig_figure(inputs: Tensor, baselines: Tensor, labels: Tensor, maps: dict[str, Tensor]) -> Figure:
    """Rows: input, Latent IG baseline image, then one attribution map per method (Captum's visualization).

    Args:
        inputs, baselines: ``(N, 1, H, W)`` images in ``[0, 1]``.
        labels: ``(N,)`` the explained class per row.
        maps: method name -> ``(N, C, H, W)`` attributions, one column each.
    """
    from captum_cfx.visualization import plot_attribution

    n = len(inputs)
    fig, axes = plt.subplots(n, 2 + len(maps), figsize=(1.7 * (2 + len(maps)), 1.7 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(inputs[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(f"input ({int(labels[i])})", fontsize=7)
        axes[i, 1].imshow(baselines[i, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[i, 1].set_title("LIG baseline", fontsize=7)
        for j, (name, m) in enumerate(maps.items()):
            plot_attribution(m[i].detach(), inputs[i], title=name, ax=axes[i, 2 + j])
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def worlds_figure(faces: Tensor, recs: Tensor, squares: Tensor) -> Figure:
    """Rows: attribute-world samples, their ``world-vae`` reconstructions, squares samples (``(N, 3, H, W)``)."""
    rows = (("faces", faces), ("world-vae", recs), ("squares", squares))
    fig, axes = plt.subplots(3, len(faces), figsize=(len(faces) * 1.1, 3.5), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(len(faces)):
            axes[r, c].imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------- makers
def _save(fig: Figure, path: Path, dpi: int, sizes: GallerySizes) -> Path:
    fig.savefig(path, dpi=sizes.dpi or dpi)
    plt.close(fig)
    return path


def _make_explain(out: Path, sizes: GallerySizes, wanted: set[str]) -> list[Path]:
    """``captum-cfx explain`` with its defaults (class-interleaved test digits, seeded random targets)."""
    from captum_cfx import CounterfactualDescriptorAttribution, LatentCounterfactualAttack
    from captum_cfx.attr.latent_attack import LatentAttackConfig
    from captum_cfx.datasets import interleaved_mnist, load_mnist
    from captum_cfx.datasets.mnist import NUM_CLASSES
    from captum_cfx.descriptors import Morphometry
    from captum_cfx.objectives import choose_targets
    from captum_cfx.report import append_descriptor_report, write_report
    from captum_cfx.zoo import load_generator, load_pretrained

    model, gen = load_pretrained("mnist-classifier"), load_generator("mnist-vae")
    x, y = interleaved_mnist(sizes.n_explain)
    targets = choose_targets(y, "random", 0, NUM_CLASSES)
    res = LatentCounterfactualAttack(model, gen).generate(x, target=targets, margin=LatentAttackConfig.margin,
                                                          max_steps=LatentAttackConfig.max_steps)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        paths = write_report(tmpdir, x, y, targets, result=res, metrics={}, max_rows=sizes.rows)
        if "explain_grid" in wanted:
            written.append(Path(shutil.copyfile(paths["grid"], out / "explain_grid.png")))
        if wanted & {"descriptor_bars", "descriptor_global"}:
            xtr, _ = load_mnist("train")
            morpho = Morphometry(scale=2)
            aux = xtr[:: max(1, len(xtr) // sizes.n_aux)][: sizes.n_aux]
            cda = CounterfactualDescriptorAttribution(model, gen)
            cda.fit(latents=cda.encode(aux), descriptors=morpho(aux), names=morpho.names)
            expl = cda.explain(res.counterfactuals, counterfactuals=res)
            glob = cda.global_attribution(res)
            if int((glob.counts >= 5).sum()) < 3:
                glob = cda.global_attribution(res, group_by="target")
            rows = [f"{int(s)}→{int(t)} ({'ok' if ok else 'fail'})" for s, t, ok in zip(y, targets, res.success)]
            dpaths = append_descriptor_report(tmpdir, expl, glob, rows, max_rows=min(6, sizes.rows))
            for name in ("descriptor_bars", "descriptor_global"):
                if name in wanted:
                    written.append(Path(shutil.copyfile(dpaths[name], out / f"{name}.png")))
    return written


def _make_gcd(out: Path, sizes: GallerySizes, wanted: set[str], proxy: bool) -> list[Path]:
    """The 3-vs-8 question of ``benchmarks/global_directions.py``: white-box GCD from test 8 #1."""
    from captum_cfx import GlobalCounterfactualDirections
    from captum_cfx.datasets import load_mnist
    from captum_cfx.visualization import direction_grid
    from captum_cfx.zoo import load_generator, load_pretrained, mnist_distance

    clf, oracle, gen = load_pretrained("mnist-classifier"), load_pretrained("mnist-oracle"), load_generator("mnist-vae")
    xte, yte = load_mnist("test")
    xtr, ytr = load_mnist("train")
    with torch.no_grad():
        alpha = float(gen.encode(torch.cat([xtr, xte])).free.norm(dim=1).median())  # median ||z0|| (4.74)
    eights = torch.cat([xte[yte == 8], xtr[ytr == 8]])  # test 8s first
    src = 1
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), distance=mnist_distance()).fit(eights[src:src + 1])
    written = []
    if "gcd_grid" in wanted:
        show = eights[[10, 20, 30, 40, 110, 210][: min(6, sizes.rows)]]
        fig = direction_grid(gcd, clf, show, [0.0, 0.25 * alpha, 0.5 * alpha, 0.75 * alpha, alpha])
        written.append(_save(fig, out / "gcd_grid.png", 130, sizes))
    if "gcd_globality" in wanted:
        pool = torch.cat([eights[:src], eights[src + 1:]])[: sizes.n_heldout]
        grid = torch.linspace(0, alpha, 11)[1:]
        res = gcd.globality(pool, alphas=grid, oracle=oracle, label="white-box GCD")
        others = []
        if proxy:
            px = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), mode="proxy", render_budget=5000,
                                                distance=mnist_distance())
            px.fit(eights[src:src + 1], generator=torch.Generator().manual_seed(0))
            others.append(px.globality(pool, alphas=grid, label="proxy (5,000 renders)"))
        rng = torch.Generator().manual_seed(0)
        rand = [gcd.globality(pool, alphas=grid, direction=torch.randn(32, generator=rng))
                for _ in range(sizes.n_random)]
        rates = torch.stack([r.flip_rate for r in rand])
        fig = res.plot(others=others, vline=alpha)
        ax = fig.axes[0]
        a = grid.numpy()
        ax.plot(a, rates.mean(0).numpy(), color="gray", label=f"{sizes.n_random} random directions: mean")
        ax.fill_between(a, rates.min(0).values.numpy(), rates.max(0).values.numpy(), color="gray", alpha=0.2,
                        lw=0, label="random directions: min-max")
        ax.legend(fontsize=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
        fig.tight_layout()
        written.append(_save(fig, out / "gcd_globality.png", 130, sizes))
    return written


def _make_lig(out: Path, sizes: GallerySizes) -> list[Path]:
    """Latent IG (gradient-walk baseline) next to Captum IG (black baseline) and Saliency, 4 test digits."""
    from captum.attr import IntegratedGradients, Saliency

    from captum_cfx import LatentIntegratedGradients
    from captum_cfx.datasets import load_mnist
    from captum_cfx.zoo import load_generator, load_pretrained

    clf, gen = load_pretrained("mnist-classifier"), load_generator("mnist-vae")
    x, y = load_mnist("test")
    idx = [0, 130, 360, 810][: sizes.rows]  # every 10th digit, positions 0, 13, 36, 81 (benchmarks/latent_ig.py)
    xs, ys = x[idx], y[idx]
    lig = LatentIntegratedGradients(clf, gen)
    with warnings.catch_warnings():  # one walk stops short of p < 0.01 (shown as is); Saliency's requires_grad note
        warnings.simplefilter("ignore", UserWarning)
        ex = lig.explain(xs, target=ys, n_steps=sizes.lig_steps)
        maps = {"Latent IG": ex.attributions,
                "Captum IG": IntegratedGradients(clf).attribute(xs, target=ys, n_steps=sizes.lig_steps),
                "Saliency": Saliency(clf).attribute(xs, target=ys, abs=False)}
    fig = lig_figure(xs, ex.baseline_images, ys, maps)
    return [_save(fig, out / "lig_vs_ig.png", 130, sizes)]


@torch.no_grad()
def _make_worlds(out: Path, sizes: GallerySizes) -> list[Path]:
    """Ten attribute-world faces (seed 50,001), their world-vae reconstructions, ten squares (seed 7)."""
    from captum_cfx.datasets import AttributeWorld, Squares
    from captum_cfx.zoo import load_generator

    faces, *_ = AttributeWorld().sample(sizes.n_worlds, generator=torch.Generator().manual_seed(50_001))
    faces = faces[:10]
    recs = load_generator("world-vae").reconstruct(faces)
    squares = Squares().sample(10, generator=torch.Generator().manual_seed(7)).images
    return [_save(worlds_figure(faces, recs, squares), out / "worlds.png", 80, sizes)]


def make_gallery(out: str | Path = DEFAULT_OUT, sizes: GallerySizes | None = None, *,
                 only: Sequence[str] | None = None, proxy: bool = False, verbose: bool = False) -> list[Path]:
    """Write the gallery's PNG files into ``out`` and return their paths.

    Args:
        out: the folder (created if missing); default ``docs/images`` of the source tree.
        sizes: data sizes (default :class:`GallerySizes`, the published images).
        only: a subset of :data:`FIGURES` (default: all).
        proxy: add the proxy-mode curve (5,000 renders, minutes) to ``gcd_globality``.
        verbose: print each group's time.
    """
    sizes = sizes or GallerySizes()
    wanted = set(FIGURES if only is None else only)
    unknown = wanted - set(FIGURES)
    if unknown:
        raise ValueError(f"`only` must name figures among {FIGURES}; got {sorted(unknown)}")
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    groups = [({"explain_grid", "descriptor_bars", "descriptor_global"}, lambda w: _make_explain(outp, sizes, w)),
              ({"gcd_grid", "gcd_globality"}, lambda w: _make_gcd(outp, sizes, w, proxy)),
              ({"lig_vs_ig"}, lambda w: _make_lig(outp, sizes)),
              ({"worlds"}, lambda w: _make_worlds(outp, sizes))]
    written: list[Path] = []
    for names, make in groups:
        w = names & wanted
        if not w:
            continue
        torch.manual_seed(0)
        t0 = time.perf_counter()
        paths = make(w)
        written += paths
        if verbose:
            print(f"{time.perf_counter() - t0:6.1f}s  " + ", ".join(p.name for p in paths), flush=True)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python tools/gallery.py``: regenerate the gallery images (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python tools/gallery.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--small", action="store_true", help="tiny data sizes (tests); not the published images")
    p.add_argument("--only", nargs="+", choices=FIGURES, default=None, help="make only these figures")
    p.add_argument("--proxy", action="store_true", help="add the proxy-mode GCD curve (5,000 renders, minutes)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    paths = make_gallery(a.out, GallerySizes.small() if a.small else GallerySizes(), only=a.only, proxy=a.proxy,
                         verbose=True)
    print(f"wrote {len(paths)} images to {a.out} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
