"""Diffusion-autoencoder benchmark (issue D): reconstruction, latent counterfactuals, diversity, vs the VAE.

On embedded MNIST test digits (a seeded permutation of the class-sorted test split), with the shipped
``mnist-diffae`` and ``mnist-vae``, measured in one run:

- reconstruction: the classifier's accuracy on encode -> decode reconstructions (DDIM, ``--ddim-steps``),
  pixel MSE, and realism as the median 5-NN distance in the independent oracle's feature space to the
  training digits, as a ratio to real test digits' (A3's figure; lower is better, 1 = as real as real);
- latent counterfactuals: ``LatentCounterfactualAttack`` unchanged on each generator, seeded random targets
  different from the label (as ``benchmarks/latent_attack.py``): flip rate, oracle agreement over all
  samples, k-NN realism ratio, time per counterfactual. For the diffusion autoencoder Adam's step is
  ``lr_scale`` times the per-dimension standard deviation of ``z_sem`` over the test codes (the VAE's
  0.3 is in units of its unit prior; ``z_sem`` has no prior, so its scale is measured);
- diversity: each of ``--n-div`` codes decoded with 8 fresh ``x_T``: mean pairwise distance in the
  oracle's feature space between the 8 variations, next to the mean pairwise distance between real test
  digits of different classes, and the fraction of variations whose classifier label equals the
  original's.

    python benchmarks/diffae.py [--n-recon 500] [--n-attack 500] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import captum_cfx
from captum_cfx import LatentCounterfactualAttack
from captum_cfx.datasets import load_mnist
from captum_cfx.metrics import knn_distance, oracle_agreement
from captum_cfx.zoo import load_generator, load_pretrained, mnist_features


def _batched(fn, x: torch.Tensor, bs: int = 250) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + bs]) for i in range(0, len(x), bs)])


def _acc(clf, x, y) -> float:
    return float((_batched(lambda t: clf(t).argmax(1), x) == y).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-recon", type=int, default=500)
    p.add_argument("--n-attack", type=int, default=500)
    p.add_argument("--n-div", type=int, default=50)
    p.add_argument("--ddim-steps", type=int, default=20, help="DDIM steps for reconstruction and diversity")
    p.add_argument("--attack-ddim-steps", type=int, default=None,
                   help="DDIM steps inside the attack (default: --ddim-steps; fewer is faster on CPU)")
    p.add_argument("--max-steps", type=int, default=200, help="attack step limit (Diff-AE-RE used 200)")
    p.add_argument("--lr-scale", type=float, default=0.3)
    p.add_argument("--no-checkpoint", action="store_true",
                   help="plain backprop through the DDIM steps (about 2x faster; memory grows with the steps)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--weights-dir", default=None, help="zoo folder (default: the package's)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    clf, oracle = load_pretrained("mnist-classifier").to(dev), load_pretrained("mnist-oracle").to(dev)
    diffae = load_generator("mnist-diffae", a.weights_dir).to(dev)
    diffae.sampler.num_inference_steps = a.ddim_steps
    diffae.sampler.checkpoint = not a.no_checkpoint
    vae = load_generator("mnist-vae").to(dev)
    feats = mnist_features().to(dev)
    xtr, _ = load_mnist("train")
    xte, yte = load_mnist("test")
    # the test split is sorted by class: interleave it so that every prefix covers all ten digits
    order = torch.randperm(len(xte), generator=torch.Generator().manual_seed(0))
    xte, yte = xte[order], yte[order]
    xtr, xte, yte = xtr.to(dev), xte.to(dev), yte.to(dev)
    knn_real = knn_distance(xte[:500], xtr, feats).value
    res: dict = {"config": {**vars(a), "torch": torch.__version__, "captum_cfx": captum_cfx.__version__,
                            "machine": platform.machine(), "threads": torch.get_num_threads()},
                 "knn5_real_test": knn_real}

    # reconstruction
    x, y = xte[: a.n_recon], yte[: a.n_recon]
    rec = {}
    for name, gen in (("diffae", diffae), ("vae", vae)):
        t0 = time.perf_counter()
        r = _batched(lambda t, g=gen: g.decode(g.encode(t)), x)
        rec[name] = {"classifier_accuracy": _acc(clf, r, y), "mse": float((r - x).pow(2).mean()),
                     "knn5_ratio": knn_distance(r, xtr, feats).value / knn_real,
                     "seconds_per_image": (time.perf_counter() - t0) / len(x)}
    rec["real"] = {"classifier_accuracy": _acc(clf, x, y)}
    res["reconstruction"] = rec

    # latent counterfactuals
    diffae.sampler.num_inference_steps = a.attack_ddim_steps or a.ddim_steps
    g = torch.Generator().manual_seed(0)
    x, y = xte[: a.n_attack], yte[: a.n_attack]
    tgt = ((y.cpu() + torch.randint(1, 10, y.shape, generator=g)) % 10).to(dev)
    z_std = float(_batched(diffae.encode_semantic, xte[:500]).std(0).mean())
    attack_rows = {}
    for name, gen, lr in (("diffae", diffae, a.lr_scale * z_std), ("vae", vae, None)):
        t0 = time.perf_counter()
        out = LatentCounterfactualAttack(clf, gen).generate(x, target=tgt, lr=lr, max_steps=a.max_steps,
                                                            progress=True)
        sec = time.perf_counter() - t0
        cf = out.counterfactuals.detach()
        attack_rows[name] = {"flip_rate": out.success_rate,
                             "oracle_agreement": oracle_agreement(oracle, cf, tgt, out.success).value,
                             "knn5_ratio": knn_distance(cf, xtr, feats).value / knn_real,
                             "mean_steps": float(out.n_steps.float().mean()), "lr": lr or 0.3,
                             "seconds_per_counterfactual": sec / len(x),
                             "ddim_steps": getattr(getattr(gen, "sampler", None), "num_inference_steps", None)}
    res["attack"] = {"n": len(x), **attack_rows, "z_sem_std": z_std}

    # diversity: one z_sem, 8 fresh x_T
    diffae.sampler.num_inference_steps = a.ddim_steps
    x, y = xte[: a.n_div], yte[: a.n_div]
    with torch.no_grad():
        z = diffae.encode_semantic(x)
        var = diffae.vary(z, 8, generator=torch.Generator().manual_seed(1))
        label0 = clf(diffae.decode(diffae.encode(x))).argmax(1)
        f = feats(var).view(len(x), 8, -1)
        within = torch.cdist(f, f).sum((1, 2)) / (8 * 7)
        fr = feats(xte[:500])
        d = torch.cdist(fr, fr)
        diff_cls = yte[:500, None] != yte[None, :500]
        between = float(d[diff_cls].mean())
        kept = (clf(var).argmax(1).view(len(x), 8) == label0[:, None]).float().mean()
    res["diversity"] = {"mean_pairwise_feature_distance_within_code": float(within.mean()),
                        "mean_pairwise_feature_distance_between_classes_real": between,
                        "ratio": float(within.mean()) / between, "label_kept": float(kept), "n_codes": len(x),
                        "variations": 8}
    grid_path = Path(__file__).resolve().parents[1] / "docs" / "images" / "diffae_diversity.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = min(6, len(x))
        fig, axes = plt.subplots(k, 9, figsize=(9, k))
        for i in range(k):
            axes[i, 0].imshow(x[i, 0].cpu(), cmap="gray", vmin=0, vmax=1)
            for j in range(8):
                axes[i, j + 1].imshow(var[i * 8 + j, 0].cpu(), cmap="gray", vmin=0, vmax=1)
        for ax in axes.flat:
            ax.axis("off")
        axes[0, 0].set_title("input", fontsize=8)
        axes[0, 1].set_title("same z_sem, fresh x_T →", fontsize=8, loc="left")
        fig.tight_layout()
        fig.savefig(grid_path, dpi=80)
        res["figure"] = str(grid_path.relative_to(grid_path.parents[2]))
    except Exception as e:  # noqa: BLE001 - the numbers matter more than the picture
        res["figure_error"] = repr(e)

    out_path = Path(a.out) if a.out else Path(__file__).parent / "results" / f"diffae_{dev.type}.json"
    out_path.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(table(res))


def table(r: dict) -> str:
    rec, att = r["reconstruction"], r["attack"]
    lines = ["| generator | clf acc on recon | recon kNN ratio | CF flip | CF oracle | CF kNN ratio | s / CF |",
             "|---|---|---|---|---|---|---|"]
    for k in ("diffae", "vae"):
        lines.append(f"| {k} | {rec[k]['classifier_accuracy']:.1%} | {rec[k]['knn5_ratio']:.2f} | "
                     f"{att[k]['flip_rate']:.1%} | {att[k]['oracle_agreement']:.1%} | {att[k]['knn5_ratio']:.2f} | "
                     f"{att[k]['seconds_per_counterfactual']:.3f} |")
    d = r["diversity"]
    lines.append(f"\ndiversity: within-code {d['mean_pairwise_feature_distance_within_code']:.2f} vs between-class "
                 f"{d['mean_pairwise_feature_distance_between_classes_real']:.2f} (ratio {d['ratio']:.2f}), "
                 f"label kept {d['label_kept']:.1%}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
