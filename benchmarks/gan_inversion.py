"""GAN inversion benchmark: the shipped MNIST GAN next to the shipped VAE, side by side in one run.

On ``--n`` evenly spaced embedded MNIST test digits (the split is class-sorted):

- encoding: the VAE's posterior mean vs the GAN's batched optimisation-based inversion (W space, and
  z space on a ``--z-n`` subset for comparison): median pixel MSE of the reconstruction / projection,
  classifier and oracle accuracy on them, the fraction flagged by the projection-error threshold, time;
- batched inversion vs the same inversion one image at a time (``--per-image-n`` images, extrapolated
  per image);
- latent counterfactuals (``LatentCounterfactualAttack``, default configuration, seeded random targets
  different from the label) through each generator: flip rate, oracle agreement (failures count as
  disagreement), median L2 in pixels, the 5-NN realism figure in the oracle's feature space as a ratio
  to that of real test digits, throughput (including encoding).

Results go to ``benchmarks/results/gan_inversion_<device>.json``.

    python benchmarks/gan_inversion.py [--device cuda] [--n 500] [--per-image-n 40] [--z-n 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import captum_cfx
from captum_cfx import GANGenerator, LatentCounterfactualAttack
from captum_cfx.datasets import load_mnist
from captum_cfx.metrics import knn_distance, mnist_features, oracle_agreement, proximity
from captum_cfx.zoo import load_generator, load_pretrained


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((torch.cat([model(c) for c in x.split(500)]).argmax(1) == y).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--per-image-n", type=int, default=40)
    p.add_argument("--z-n", type=int, default=100, help="digits for the z-space comparison")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    x, y = load_mnist("test")
    idx = torch.linspace(0, len(x) - 1, a.n).long()  # evenly spaced: the test split is class-sorted
    x, y = x[idx].to(device), y[idx].to(device)
    xtr = load_mnist("train")[0].to(device)
    g = torch.Generator().manual_seed(0)
    tgt = ((y.cpu() + torch.randint(1, 10, y.shape, generator=g)) % 10).to(device)
    clf = load_pretrained("mnist-classifier").to(device)
    oracle = load_pretrained("mnist-oracle").to(device)
    feats = mnist_features().to(device)
    vae = load_generator("mnist-vae").to(device)
    gan = load_generator("mnist-gan").to(device)
    gan_z = GANGenerator(gan.generator, latent_space="z", image_shape=(1, 28, 28),
                         error_threshold=gan.error_threshold).eval().to(device)
    real_knn = knn_distance(x, xtr, feats).value

    # ---------------------------------------------------------------- encoding
    enc_rows = []
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        rec = vae.reconstruct(x)
    sync(device)
    vae_mse = float((rec - x).flatten(1).pow(2).mean(1).median())
    enc_rows.append({"generator": "mnist-vae (posterior mean)", "median_mse": vae_mse,
                     "classifier_accuracy": acc(clf, rec, y), "oracle_accuracy": acc(oracle, rec, y),
                     "flagged": 0.0, "mean_steps": 0.0, "seconds": time.perf_counter() - t0})
    projections = {}
    zsub = torch.arange(0, a.n, max(1, a.n // a.z_n))[: a.z_n]
    for name, G, sub in (("mnist-gan, W space", gan, torch.arange(a.n)),
                         (f"mnist-gan, z space ({len(zsub)} digits)", gan_z, zsub)):
        sync(device)
        t0 = time.perf_counter()
        out = G.project(x[sub])
        sync(device)
        projections[name] = out
        enc_rows.append({"generator": name, "median_mse": float(out.error.median()),
                         "classifier_accuracy": acc(clf, out.projections, y[sub]),
                         "oracle_accuracy": acc(oracle, out.projections, y[sub]),
                         "flagged": float((~out.ok).float().mean()), "mean_steps": float(out.n_steps.float().mean()),
                         "seconds": time.perf_counter() - t0})
    t_batched = enc_rows[1]["seconds"]

    # one image at a time (same settings), extrapolated per image
    nb = min(a.per_image_n, a.n)
    sync(device)
    t0 = time.perf_counter()
    singles = [gan.project(x[i : i + 1]) for i in range(nb)]
    sync(device)
    t_single = time.perf_counter() - t0
    single_err = torch.cat([s.error for s in singles])
    speedup = (t_single / nb) / (t_batched / a.n)

    # ---------------------------------------------------------------- counterfactuals
    cf_rows = []
    for name, G in (("mnist-vae", vae), ("mnist-gan (W)", gan)):
        attack = LatentCounterfactualAttack(clf, G)
        sync(device)
        t0 = time.perf_counter()
        out = attack.generate(x, target=tgt)
        sync(device)
        dt = time.perf_counter() - t0
        cf = out.counterfactuals
        ok = out.projection_ok if out.projection_ok is not None else torch.ones_like(out.success)
        cf_rows.append({
            "generator": name,
            "flip_rate": out.success_rate,
            "oracle_agreement": oracle_agreement(oracle, cf, tgt, out.success).value,
            "oracle_agreement_on_ok_projections": oracle_agreement(oracle, cf[ok], tgt[ok], out.success[ok]).value,
            "l2_pixels_median": proximity(cf, x).value,
            "knn5_ratio_to_real": knn_distance(cf, xtr, feats).value / real_knn,
            "projection_ok": float(ok.float().mean()),
            "mean_steps": float(out.n_steps.float().mean()),
            "seconds_with_encoding": dt,
            "counterfactuals_per_second": a.n / dt,
        })

    result = {
        "benchmark": "gan_inversion",
        "captum_cfx_version": captum_cfx.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "n": a.n,
        "gan_settings": {"num_starts": gan.num_starts, "steps": gan.steps, "lr": gan.lr, "tol": gan.tol,
                         "patience": gan.patience, "feature_weight": gan.feature_weight,
                         "error_threshold": gan.error_threshold},
        "encoding": enc_rows,
        "per_image": {"n": nb, "seconds": t_single, "seconds_per_image": t_single / nb,
                      "batched_seconds_per_image": t_batched / a.n, "speedup_batched": speedup,
                      "median_mse_per_image": float(single_err.median()),
                      "median_mse_batched_same_images": float(projections["mnist-gan, W space"].error[:nb].median())},
        "real_test_digits_knn5_median": real_knn,
        "counterfactuals": cf_rows,
    }
    out_path = Path(a.out) if a.out else Path(__file__).parent / "results" / f"gan_inversion_{device.type}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print()
    print(table(result))


def table(r: dict) -> str:
    lines = [f"device: {r['device']}, n = {r['n']}", "",
             "| encoding | median MSE | classifier acc | oracle acc | flagged | mean steps | seconds |",
             "|---|---|---|---|---|---|---|"]
    for m in r["encoding"]:
        lines.append(f"| {m['generator']} | {m['median_mse']:.4f} | {m['classifier_accuracy']:.1%} "
                     f"| {m['oracle_accuracy']:.1%} | {m['flagged']:.1%} | {m['mean_steps']:.0f} "
                     f"| {m['seconds']:.1f} |")
    pi = r["per_image"]
    lines += ["", f"batched inversion: {pi['batched_seconds_per_image'] * 1000:.0f} ms/image; one image at a time: "
              f"{pi['seconds_per_image'] * 1000:.0f} ms/image ({pi['n']} images) -> "
              f"{pi['speedup_batched']:.1f}x faster",
              "", "| counterfactuals via | flip | oracle agreement | on ok projections | L2 pixels "
              "| 5-NN ratio to real | CF/s (incl. encoding) |", "|---|---|---|---|---|---|---|"]
    for m in r["counterfactuals"]:
        lines.append(f"| {m['generator']} | {m['flip_rate']:.1%} | {m['oracle_agreement']:.1%} "
                     f"| {m['oracle_agreement_on_ok_projections']:.1%} | {m['l2_pixels_median']:.2f} "
                     f"| {m['knn5_ratio_to_real']:.2f} | {m['counterfactuals_per_second']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
