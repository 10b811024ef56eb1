"""Global counterfactual directions on the shipped MNIST VAE: white-box vs the paper's proxy mode, side by side.

The binary question: the shipped ``mnist-classifier``'s logit difference ``logit[8] - logit[3]``
(``classes=(3, 8)``); the decision is "8" when it is positive. Sources: each of the first three test
8s in turn (one image per fit). Held-out set for a source: every other embedded 8 (99 test + 400 train
= 499 images; neither the directions nor alpha see them). The shipped classifier and VAE were trained
on the 4,000 train digits, but the GCD fit uses only the source image.

Reported per source and mode: renders, fit seconds, the selected direction, and at ONE shared alpha =
median ||z0|| over all 5,000 embedded digits: flip rate, oracle agreement among flips (the oracle's
answer to the same 3-vs-8 question) and strict oracle agreement (the oracle's 10-way argmax is 3).
Control: 20 random unit directions at the same alpha. Diversity: oracle-feature distances between the
source's counterfactuals from different h-directions, next to the distance between two proxy runs (seeds
0 and 1) of the same direction kind. Figures go to docs/images/.

    python benchmarks/global_directions.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import captum_cfx
from captum_cfx import GlobalCounterfactualDirections
from captum_cfx.datasets import load_mnist
from captum_cfx.metrics import mnist_features
from captum_cfx.zoo import load_generator, load_pretrained

ROOT = Path(__file__).resolve().parent.parent


def table(res: dict) -> str:
    rows = ["| source | mode | renders | fit s | direction | flip @ alpha | oracle agrees (3v8) | oracle argmax=3 |",
            "|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        rows.append(f"| test 8 #{r['source']} | {r['mode']} | {r['renders']} | {r['fit_seconds']:.1f} | {r['best']} | "
                    f"{r['flip_rate']:.3f} | {r['oracle_agreement']:.3f} | {r['oracle_agreement_strict']:.3f} |")
    c = res["random_control"]
    rows.append(f"| - | random x{c['n']} | - | - | random | mean {c['mean']:.3f} / max {c['max']:.3f} | - | - |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sources", type=int, default=3)
    p.add_argument("--budget", type=int, default=5000)
    a = p.parse_args()
    torch.set_num_threads(1)
    clf, oracle, gen = load_pretrained("mnist-classifier"), load_pretrained("mnist-oracle"), load_generator("mnist-vae")
    xte, yte = load_mnist("test")
    xtr, ytr = load_mnist("train")
    with torch.no_grad():
        alpha = float(gen.encode(torch.cat([xtr, xte])).free.norm(dim=1).median())
    eights = torch.cat([xte[yte == 8], xtr[ytr == 8]])  # test 8s first
    grid = torch.linspace(0, alpha, 11)[1:]
    runs, fits = [], {}
    for s in range(a.sources):
        pool = torch.cat([eights[:s], eights[s + 1:]])
        for mode in ("white-box", "proxy"):
            gcd = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), mode=mode, render_budget=a.budget)
            t0 = time.perf_counter()
            gcd.fit(eights[s:s + 1], generator=torch.Generator().manual_seed(0))
            secs = time.perf_counter() - t0
            res = gcd.globality(pool, alphas=grid, oracle=oracle)
            at = res.at(alpha)
            fits[(s, mode)] = (gcd, res)
            runs.append({"source": s, "mode": mode, "renders": gcd.renders_, "fit_seconds": secs,
                         "best": gcd.direction_kinds_[gcd.best_index_], "n_heldout": len(pool),
                         "flip_rate": at["flip_rate"], "oracle_agreement": at["oracle_agreement"],
                         "oracle_agreement_strict": at["oracle_agreement_strict"],
                         "curve": [round(v, 4) for v in res.flip_rate.tolist()]})
            print(json.dumps(runs[-1]), flush=True)
    # random control at the same alpha, on all 500 eights
    rng = torch.Generator().manual_seed(0)
    gcd0 = fits[(0, "white-box")][0]
    ctrl = []
    for _ in range(20):
        d = torch.randn(32, generator=rng)
        ctrl.append(float(gcd0.globality(eights, alphas=[alpha], direction=d).flip_rate[0]))
    control = {"n": 20, "mean": sum(ctrl) / len(ctrl), "max": max(ctrl), "values": ctrl}
    # diversity: h-directions of one fit vs two proxy runs of the same direction kind
    feats = mnist_features()
    wb = fits[(1 % a.sources, "white-box")][0]
    dv = wb.diversity(feats)
    k = dv.shape[0]
    between = float(dv.sum() / (k * (k - 1)))
    px0 = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), mode="proxy", render_budget=a.budget)
    px1 = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), mode="proxy", render_budget=a.budget)
    src = eights[1 % a.sources:1 % a.sources + 1]
    px0.fit(src, generator=torch.Generator().manual_seed(0))
    px1.fit(src, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f0, f1 = feats(px0.source_counterfactuals()), feats(px1.source_counterfactuals())
        hidx = [i for i, kd in enumerate(px0.direction_kinds_) if kd.startswith("h")]
        repeat = float((f0[hidx] - f1[hidx]).norm(dim=1).mean())
        dpx = px0.diversity(feats)
        between_px = float(dpx.sum() / (dpx.shape[0] * (dpx.shape[0] - 1)))
    diversity = {"white_box_between_h_directions": between, "proxy_between_h_directions": between_px,
                 "proxy_repeat_runs_same_direction": repeat, "white_box_repeat_runs_same_direction": 0.0}
    result = {"benchmark": "global_directions", "device": "cpu", "threads": 1, "platform": platform.platform(),
              "captum_cfx": captum_cfx.__version__, "question": "classes=(3, 8): logit[8] - logit[3]",
              "shared_alpha": alpha, "alpha_definition": "median ||z0|| over the 5,000 embedded MNIST digits",
              "grid": [round(v, 4) for v in grid.tolist()], "proxy_render_budget": a.budget, "runs": runs,
              "random_control": control, "diversity": diversity}
    out = Path(__file__).parent / "results" / "global_directions_cpu.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    # figures: the direction applied at several alphas, and the globality curves
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gcd, res = fits[(1 % a.sources, "white-box")]
    show = eights[[10, 20, 30, 40, 110, 210]]
    alphas = [0.0, 0.25 * alpha, 0.5 * alpha, 0.75 * alpha, alpha]
    fig, axes = plt.subplots(len(show), len(alphas), figsize=(1.3 * len(alphas), 1.3 * len(show)))
    with torch.no_grad():
        for j, al in enumerate(alphas):
            out_t = gcd.transfer(show, [al])
            probs = torch.softmax(clf(out_t.counterfactuals), 1)
            for i in range(len(show)):
                ax = axes[i, j]
                ax.imshow(out_t.counterfactuals[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"p3={probs[i, 3]:.2f} p8={probs[i, 8]:.2f}", fontsize=5)
                if i == len(show) - 1:
                    ax.set_xlabel(f"alpha={al:.2f}", fontsize=6)
    fig.suptitle(f"GCD {gcd.direction_kinds_[gcd.best_index_]} from one 8, applied to other 8s", fontsize=7)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "images" / "gcd_grid.png", dpi=130)
    plt.close(fig)
    px_res = fits[(1 % a.sources, "proxy")][1]
    px_res.label = "proxy (5,000 renders)"
    res.label = "white-box"
    rnd = gcd.globality(eights, alphas=grid, direction=torch.randn(32, generator=torch.Generator().manual_seed(0)),
                        label="random direction")
    fig = res.plot(others=[px_res, rnd], vline=alpha)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "images" / "gcd_globality.png", dpi=130)
    plt.close(fig)
    print(json.dumps(result, indent=2))
    print()
    print(table(result))


if __name__ == "__main__":
    main()
