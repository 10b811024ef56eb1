"""Global counterfactual directions and Latent IG in the shipped MNIST diffusion autoencoder's ``z_sem``.

The same question and protocol as ``benchmarks/global_directions.py`` and ``benchmarks/latent_ig.py`` (which
run on the VAE), at sizes that fit a CPU: a diffusion autoencoder decode is 10 DDIM steps of a UNet
(about 0.1-0.3 s per image on one CPU thread), against well under a millisecond for the VAE.

- **GCD**: the classifier's ``logit[8] - logit[3]``; one source image (the first test 8) per fit, white-box
  mode; held-out pool: the next ``--heldout`` embedded 8s. ONE shared alpha = median ``||z_sem||`` over
  1,000 embedded digits (the analogue of the VAE's median ``||z0||``; ``z_sem`` has no unit prior). Reported:
  renders and seconds of the fit, the flip rate and oracle agreement at the shared alpha (and on a grid
  below it), and the random control: ``--n-random`` unit directions at the same alpha on the same pool.
  ``--proxy`` adds the paper's proxy mode with ``--budget`` renders.
- **LIG**: ``--lig-n`` test digits (evenly spaced), the logit of the true label, the default baseline walk;
  the completeness error ``|sum(attr) - (f(start) - f(end))| / |f(start) - f(end)|`` of the exact path
  sum (trapezoid) and of the reference's straight-line multiplier, at 128 steps.

Results: benchmarks/results/diffae_directions_cpu.json.

    python benchmarks/diffae_directions.py                  # ~30 min on one CPU thread
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch
from _common import emit

import captum_cfx
from captum_cfx import GlobalCounterfactualDirections, LatentIntegratedGradients
from captum_cfx.datasets import load_mnist
from captum_cfx.zoo import load_generator, load_pretrained, mnist_distance


def table(res: dict) -> str:
    g = res["gcd"]
    rows = ["| what | value |", "|---|---|",
            f"| shared alpha (median ‖z_sem‖) | {res['shared_alpha']:.3f} |"]
    for r in g["runs"]:
        rows.append(f"| GCD {r['mode']}: renders / fit s | {r['renders']} / {r['fit_seconds']:.0f} |")
        rows.append(f"| GCD {r['mode']}: flip @ alpha ({r['n_heldout']} held-out 8s) | {r['flip_rate']:.3f} |")
        rows.append(f"| GCD {r['mode']}: oracle agrees (3 v 8) / argmax = 3 | {r['oracle_agreement']:.3f} / "
                    f"{r['oracle_agreement_strict']:.3f} |")
    c = g["random_control"]
    rows.append(f"| random control x{c['n']}: flip @ alpha mean / max | {c['mean']:.3f} / {c['max']:.3f} "
                f"({c['n_above_20pct']} > 0.2) |")
    for r in res["lig"]["runs"]:
        rows.append(f"| LIG {r['name']} ({r['n_steps']} steps): rel. error median / max | {r['median']:.4f} / "
                    f"{r['max']:.4f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--heldout", type=int, default=100)
    p.add_argument("--n-random", type=int, default=10)
    p.add_argument("--grid", type=int, default=4, help="alphas on the globality curve (the last is the shared one)")
    p.add_argument("--proxy", action="store_true", help="also fit the proxy mode")
    p.add_argument("--budget", type=int, default=5000)
    p.add_argument("--lig-n", type=int, default=8)
    p.add_argument("--ddim-steps", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    t_all = time.perf_counter()
    clf, oracle = load_pretrained("mnist-classifier"), load_pretrained("mnist-oracle")
    gen = load_generator("mnist-diffae")
    gen.sampler.num_inference_steps = a.ddim_steps
    xte, yte = load_mnist("test")
    xtr, ytr = load_mnist("train")
    with torch.no_grad():
        pool_all = torch.cat([xtr, xte])[torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:1000]]
        alpha = float(gen.encode_semantic(pool_all).norm(dim=1).median())
    eights = torch.cat([xte[yte == 8], xtr[ytr == 8]])
    pool = eights[1:1 + a.heldout]
    grid = torch.linspace(0, alpha, a.grid + 1)[1:]
    runs, fitted = [], None
    for mode in ("white-box", "proxy") if a.proxy else ("white-box",):
        gcd = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), mode=mode, render_budget=a.budget,
                                             distance=mnist_distance())
        t0 = time.perf_counter()
        gcd.fit(eights[:1], generator=torch.Generator().manual_seed(0))
        secs = time.perf_counter() - t0
        res = gcd.globality(pool, alphas=grid, oracle=oracle)
        at = res.at(alpha)
        runs.append({"mode": mode, "renders": gcd.renders_, "fit_seconds": secs,
                     "best": gcd.direction_kinds_[gcd.best_index_], "n_heldout": len(pool),
                     "flip_rate": at["flip_rate"], "oracle_agreement": at["oracle_agreement"],
                     "oracle_agreement_strict": at["oracle_agreement_strict"],
                     "curve": [round(v, 4) for v in res.flip_rate.tolist()]})
        print(json.dumps(runs[-1]), flush=True)
        fitted = fitted or gcd
    rng = torch.Generator().manual_seed(0)
    dirs = torch.randn(a.n_random, fitted.directions_.shape[1], generator=rng)
    at_r, agree_r = [], []
    for d in dirs:
        r = fitted.globality(pool, alphas=[alpha], direction=d, oracle=oracle).at(alpha)
        at_r.append(r["flip_rate"])
        agree_r.append(r["oracle_agreement"])
    v = torch.tensor(at_r)
    control = {"n": a.n_random, "seed": 0, "alpha": alpha, "n_heldout": len(pool), "mean": float(v.mean()),
               "median": float(v.median()), "max": float(v.max()), "n_above_20pct": int((v > 0.2).sum()),
               "values": [round(x, 4) for x in at_r], "oracle_agreement": [round(x, 4) for x in agree_r],
               "cosine_with_best_direction": [round(float(c), 3) for c in
                                              torch.nn.functional.normalize(dirs, dim=1) @ fitted.direction().cpu()]}
    print(json.dumps(control), flush=True)
    # LIG
    idx = torch.linspace(0, len(xte) - 1, a.lig_n).round().long()
    x, y = xte[idx], yte[idx]
    lig = LatentIntegratedGradients(clf, gen)
    lig_runs = []
    for method in ("path", "straight"):
        t0 = time.perf_counter()
        out = lig.explain(x, target=y, n_steps=128, method=method)
        rel = out.relative_error
        lig_runs.append({"name": "path (trapezoid)" if method == "path" else "straight", "n_steps": 128,
                         "seconds": time.perf_counter() - t0, "renders": out.n_renders,
                         "baseline_found_rate": float(out.baseline_found.float().mean()),
                         "median": float(rel.median()), "mean": float(rel.mean()), "max": float(rel.max()),
                         "share_le_1pct": float((rel <= 0.01).float().mean())})
        print(json.dumps(lig_runs[-1]), flush=True)
    result = {"benchmark": "diffae_directions", "device": "cpu", "threads": 1, "platform": platform.platform(),
              "captum_cfx": captum_cfx.__version__, "generator": "mnist-diffae", "ddim_steps": a.ddim_steps,
              "question": "classes=(3, 8): logit[8] - logit[3]", "shared_alpha": alpha,
              "alpha_definition": "median ||z_sem|| over 1,000 embedded digits (seeded draw)",
              "grid": [round(g, 4) for g in grid.tolist()],
              "gcd": {"runs": runs, "random_control": control},
              "lig": {"n_inputs": a.lig_n, "explained": "logit of the true label", "runs": lig_runs},
              "seconds": time.perf_counter() - t_all}
    emit(result, Path(__file__).parent / "results" / "diffae_directions_cpu.json", table)


if __name__ == "__main__":
    main()
