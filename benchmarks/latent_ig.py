"""Latent Integrated Gradients on the shipped MNIST VAE: completeness of each integration rule, side by side.

On 100 embedded MNIST test digits (every 10th, 10 per class), explaining the shipped classifier's logit of
the true label. Baseline: the walk along ``-grad_z log p(label)`` until ``p(label) < 0.01`` (64 grid steps up
to ``3 * ||z||``). For each method and ``n_steps`` in {16, 64, 128, 256}: the completeness error
``|sum(attr) - (f(start) - f(end))| / |f(start) - f(end)|`` (median, mean, max, fraction <= 1 %) and the
time. Methods: the exact path sum (trapezoid, default), the path sum with ``g_j`` at the segment start
("left", the paper's formula as written), the reference's straight-line multiplier, and black-box finite
differences. Also Captum's IntegratedGradients (zero baseline) on the same inputs for reference; the
figure (LIG next to Captum IG and Saliency, docs/images/lig_vs_ig.png) is redrawn by the gallery
(``python tools/gallery.py``).

    python benchmarks/latent_ig.py
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path

import torch
from _common import make_gallery
from captum.attr import IntegratedGradients

import captum_cfx
from captum_cfx import LatentIntegratedGradients
from captum_cfx.datasets import load_mnist
from captum_cfx.zoo import load_generator, load_pretrained

METHODS = [("path", "trapezoid"), ("path", "left"), ("straight", "trapezoid"), ("finite-difference", "trapezoid")]


def table(res: dict) -> str:
    rows = ["| method | n_steps | rel. error median | mean | max | share <= 1% | seconds |",
            "|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        rows.append(f"| {r['name']} | {r['n_steps']} | {r['median']:.5f} | {r['mean']:.5f} | {r['max']:.5f} | "
                    f"{r['share_le_1pct']:.2f} | {r['seconds']:.1f} |")
    ig = res["captum_ig"]
    rows.append(f"| captum IG (zero baseline, pixels) | 128 | {ig['median']:.5f} | {ig['mean']:.5f} | "
                f"{ig['max']:.5f} | "
                f"{ig['share_le_1pct']:.2f} | {ig['seconds']:.1f} |")
    return "\n".join(rows)


def stats(rel: torch.Tensor) -> dict:
    return {"median": float(rel.median()), "mean": float(rel.mean()), "max": float(rel.max()),
            "share_le_1pct": float((rel <= 0.01).float().mean())}


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    clf, gen = load_pretrained("mnist-classifier"), load_generator("mnist-vae")
    x, y = load_mnist("test")
    x, y = x[::10][:100], y[::10][:100]
    lig = LatentIntegratedGradients(clf, gen)
    runs = []
    found = None
    for n in (16, 64, 128, 256):
        for method, rule in METHODS:
            t0 = time.perf_counter()
            out = lig.explain(x, target=y, n_steps=n, method=method, rule=rule)
            secs = time.perf_counter() - t0
            found = float(out.baseline_found.float().mean())
            name = f"{method} ({rule})" if method == "path" else method
            runs.append({"name": name, "n_steps": n, "seconds": secs, "renders": out.n_renders,
                         **stats(out.relative_error)})
            print(json.dumps(runs[-1]), flush=True)
    ig = IntegratedGradients(clf)
    t0 = time.perf_counter()
    attr, delta = ig.attribute(x, target=y, n_steps=128, return_convergence_delta=True)
    secs = time.perf_counter() - t0
    with torch.no_grad():
        fo = clf(x).gather(1, y.view(-1, 1))[:, 0] - clf(torch.zeros_like(x)).gather(1, y.view(-1, 1))[:, 0]
    ig_stats = {"seconds": secs, **stats(delta.abs() / fo.abs().clamp_min(1e-12))}
    result = {"benchmark": "latent_ig", "device": "cpu", "threads": 1, "platform": platform.platform(),
              "captum_cfx": captum_cfx.__version__, "n_inputs": 100, "explained": "logit of the true label",
              "baseline": "walk along -grad_z log p(label) until p < 0.01 (64 steps up to 3||z||)",
              "baseline_found_rate": found, "runs": runs, "captum_ig": ig_stats}
    out_path = Path(__file__).parent / "results" / "latent_ig_cpu.json"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    make_gallery(only=["lig_vs_ig"])  # docs/images/lig_vs_ig.png, as python tools/gallery.py makes it
    print(json.dumps(result, indent=2))
    print()
    print(table(result))


if __name__ == "__main__":
    main()
