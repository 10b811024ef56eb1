"""Regression counterfactuals on the squares world: latent (Diff-AE-RE, VAE) vs pixel-space diffusion (AC-RE).

Seed 003 (Ha & Bender 2025) asks "what would this image look like if the regressor predicted y~?". On
``--n`` squares test images (seeded draw 31,000, never used in training) with **mirrored targets**
(``y~ = y +/- 0.5`` of the regressor's prediction, tolerance ``tau = 0.05``) it runs:

- ``latent-diffae``: :class:`LatentCounterfactualAttack` on the diffusion autoencoder ``squares-diffae``
  (Adam on ``z_sem``, ``x_T`` fixed, 10 DDIM steps, per-sample freezing);
- ``latent-vae``: the same attack on the VAE ``squares-vae``;
- ``pixel-ddpm``: :class:`DiffusionPixelCounterfactual` with the DDPM ``squares-ddpm`` as its filter and
  inpainter (sign-gradient pixel steps through the filter, mask, RePaint).

For each it measures, on the returned images: success rate (``|r(x') - y~| <= tau``), final error,
the independent oracle regressor's error ``|o(x') - y~|``, sparsity (fraction of pixels changed by more
than 0.1), proximity, realism (the exact distance to the noise-free squares manifold, i.e. the RMS
residual after re-rendering the factors measured from the image, and a domain FID in the oracle's
feature space against 1,000 real test images), and the exact factor changes read from the pixels by
:meth:`Squares.measure` (inner intensity moved toward ``y~``; background and position unchanged).

A second run (``--sweep-n`` images, uniformly random absolute targets) reports success rate, steps and
sparsity as functions of ``|y~ - y|`` and draws ``docs/images/regression_sweep.png``.

Diffusion models are looked up in the package's weights, then in ``--diffusion-dir``; missing ones are
skipped and reported. ``--update`` merges the methods run now into an existing result file (each row
records its own ``n`` and settings), so slow methods can be run separately.

    python benchmarks/regression.py [--n 200] [--sweep-n 100] [--methods latent-vae,pixel-ddpm]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

import captum_cfx
from captum_cfx import DiffusionPixelCounterfactual, LatentCounterfactualAttack, RegressionTarget
from captum_cfx.datasets import Squares
from captum_cfx.metrics import FeatureNet, domain_fid, factor_changes, proximity, sparsity
from captum_cfx.zoo import load_generator, load_pretrained
from captum_cfx.zoo._registry import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parent.parent
TAU = 0.05
METHODS = ("latent-diffae", "latent-vae", "pixel-ddpm", "pixel-ddpm-sign")
BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)


# ----------------------------------------------------------------- measurements
@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]).reshape(-1) for i in range(0, len(x), batch)] or [x.new_zeros(0)])


@torch.no_grad()
def manifold_distance(world: Squares, images: torch.Tensor) -> torch.Tensor:
    """Per-image RMS distance to the noise-free squares manifold: re-render the factors that
    :meth:`Squares.measure` reads from the image (without noise) and compare pixel by pixel."""
    clean = Squares(world.image_size, noise=0.0, margin=world.margin)
    f = world.measure(images)
    table = torch.zeros(len(images), 7)
    table[:, :4] = f[:, :4].clamp(0, 1)
    table[:, 4:6] = f[:, 4:6]
    return (images - clean.render(table)).pow(2).flatten(1).mean(1).sqrt()


def oracle_features(oracle: torch.nn.Module) -> FeatureNet:
    """The squares oracle's penultimate layer (32-d) as the domain feature network."""
    body = oracle.net[:-1]
    return FeatureNet(body, oracle.net[-1].in_features, oracle).eval()


def evaluate(name: str, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor, cf: torch.Tensor,
             n_steps: torch.Tensor, seconds: float, models: dict[str, Any], settings: dict) -> dict:
    world: Squares = models["world"]
    r_cf = predict(models["regressor"], cf)
    o_cf = predict(models["oracle"], cf)
    err = (r_cf - goal).abs()
    success = err <= TAU
    fc = factor_changes(world, x, cf)
    up = torch.sign(goal - y)
    d_int = fc.delta[:, fc.index("intensity")]
    nuis = [fc.index(n) for n in ("bg_r", "bg_g", "bg_b")]
    pos = [fc.index(n) for n in ("x", "y")]
    bg_kept = ~fc.changed[:, nuis].any(1)
    pos_kept = ~fc.changed[:, pos].any(1)
    md = manifold_distance(world, cf)
    return {
        "method": name,
        "n": len(x),
        "settings": settings,
        "success_rate": float(success.float().mean()),
        "final_error_mean": float(err.mean()),
        "final_error_median": float(err.median()),
        "oracle_error_mean": float((o_cf - goal).abs().mean()),
        "oracle_error_median": float((o_cf - goal).abs().median()),
        "oracle_within_0.1": float(((o_cf - goal).abs() <= 0.1).float().mean()),
        "sparsity_changed_gt_0.1": sparsity(cf, x, 0.1).value,
        "l1_pixels_mean": float((cf - x).abs().flatten(1).mean(1).mean()),
        "l2_pixels_median": proximity(cf, x).value,
        "manifold_distance_mean": float(md.mean()),
        "domain_fid": domain_fid(models["reference"], cf, models["features"]),
        "intensity_toward_target": float((torch.sign(d_int) == up).float().mean()),
        "intensity_measured_error_mean": float((fc.after[:, fc.index("intensity")] - goal).abs().mean()),
        "background_unchanged": float(bg_kept.float().mean()),
        "position_unchanged": float(pos_kept.float().mean()),
        "background_and_position_unchanged": float((bg_kept & pos_kept).float().mean()),
        "mean_steps": float(n_steps.float().mean()),
        "seconds": seconds,
        "counterfactuals_per_second": len(x) / seconds,
        "_success": success,
        "_steps": n_steps,
        "_sparsity": sparsity(cf, x, 0.1).values,
    }


# ----------------------------------------------------------------- methods
def load_models(diffusion_dir: Path, diffae_steps: int, encode_level: float | None = None) -> dict[str, Any]:
    world = Squares()
    oracle = load_pretrained("squares-oracle")
    models: dict[str, Any] = {"world": world, "regressor": load_pretrained("squares-regressor"), "oracle": oracle,
                              "features": oracle_features(oracle), "vae": load_generator("squares-vae")}
    models["reference"] = world.sample(1000, generator=torch.Generator().manual_seed(32_000)).images
    for key, name in (("ddpm", "squares-ddpm"), ("diffae", "squares-diffae")):
        wd = next((d for d in (WEIGHTS_DIR, diffusion_dir) if (d / f"{name}.safetensors").is_file()), None)
        if wd is None:
            models[key] = None
            continue
        # the shipped wrapper settings (squares-diffae: encode_level 0.5), with this run's number of DDIM steps
        models[key] = load_generator(name, wd).eval()
        models[key].sampler.num_inference_steps = diffae_steps
        models[key].sampler.checkpoint = True
        if key == "diffae" and encode_level is not None:
            models[key].sampler.encode_level = encode_level
        models[f"{key}_dir"] = str(wd)
    return models


def run_method(method: str, x: torch.Tensor, target: Any, objective: RegressionTarget, models: dict[str, Any],
               a: argparse.Namespace) -> tuple[Any, dict, float]:
    reg = models["regressor"]
    t0 = time.perf_counter()
    if method.startswith("pixel"):
        rule = "sign" if method == "pixel-ddpm-sign" else a.step_rule
        settings = {"step_size": a.pixel_step, "step_rule": rule, "max_steps": a.pixel_max_steps,
                    "noise_level": a.noise_level,
                    "filter_steps": a.filter_steps, "mask_threshold": 0.1, "dilation": a.dilation,
                    "mask_from": a.mask_from, "noise": "fixed", "stop_on": "counterfactual",
                    "inpaint_trials": a.inpaint_trials}
        out = DiffusionPixelCounterfactual(reg, models["ddpm"]).generate(
            x, target=target, objective=objective, generator=torch.Generator().manual_seed(0),
            internal_batch_size=a.batch, progress=True, **settings)
    else:
        key = "diffae" if method == "latent-diffae" else "vae"
        lr = a.diffae_lr if key == "diffae" else a.vae_lr
        settings = {"optimizer": "adam", "lr": lr, "max_steps": a.latent_max_steps}
        if key == "diffae":
            settings["ddim_steps"] = a.diffae_steps
            settings["encode_level"] = models["diffae"].sampler.encode_level
        out = LatentCounterfactualAttack(reg, models[key]).generate(
            x, target=target, objective=objective, optimizer="adam", lr=lr, max_steps=a.latent_max_steps,
            internal_batch_size=a.batch, progress=True)
    return out, settings, time.perf_counter() - t0


def available(method: str, models: dict[str, Any]) -> bool:
    key = {"latent-diffae": "diffae", "latent-vae": "vae"}.get(method, "ddpm")
    return models[key] is not None


def sweep_rows(method: str, dist: torch.Tensor, ev: dict) -> list[dict]:
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (dist >= lo) & (dist < hi)
        if sel.sum() == 0:
            continue
        rows.append({"method": method, "bin": [lo, hi], "n": int(sel.sum()),
                     "success_rate": float(ev["_success"][sel].float().mean()),
                     "mean_steps": float(ev["_steps"][sel].float().mean()),
                     "mean_sparsity": float(ev["_sparsity"][sel].mean())})
    return rows


# ----------------------------------------------------------------- report
def figure(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for method in dict.fromkeys(r["method"] for r in sweep):
        rows = [r for r in sweep if r["method"] == method]
        mid = [(r["bin"][0] + r["bin"][1]) / 2 for r in rows]
        for ax, key in zip(axes, ("success_rate", "mean_steps", "mean_sparsity")):
            ax.plot(mid, [r[key] for r in rows], marker="o", label=f"{method}")
    for ax, title in zip(axes, ("success rate (|r(x') - y~| <= 0.05)", "optimisation steps",
                                "fraction of pixels changed > 0.1")):
        ax.set_xlabel("|y~ - y| (requested change)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(r: dict) -> str:
    cols = [("success", "success_rate", "{:.1%}"), ("final err", "final_error_mean", "{:.3f}"),
            ("oracle err", "oracle_error_mean", "{:.3f}"), ("sparsity", "sparsity_changed_gt_0.1", "{:.3f}"),
            ("manifold dist", "manifold_distance_mean", "{:.4f}"), ("domain FID", "domain_fid", "{:.2f}"),
            ("intensity toward", "intensity_toward_target", "{:.1%}"),
            ("bg+pos kept", "background_and_position_unchanged", "{:.1%}"), ("steps", "mean_steps", "{:.1f}"),
            ("CF/s", "counterfactuals_per_second", "{:.2f}")]
    lines = [f"device: {r['device']}", "", "| method | n | " + " | ".join(c[0] for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for m in [*r.get("real_images", []), *r["methods"]]:
        lines.append(f"| {m['method']} | {m['n']} | "
                     + " | ".join(f.format(m[k]) if k in m else "-" for _, k, f in cols) + " |")
    if r.get("missing"):
        lines += ["", f"not run (weights missing): {', '.join(r['missing'])}"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="test images with mirrored targets")
    p.add_argument("--sweep-n", type=int, default=100, help="test images with random targets (0 = no sweep)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--diffusion-dir", type=Path, default=Path("/tmp/zoo-diff"))
    p.add_argument("--batch", type=int, default=200, help="internal batch size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latent-max-steps", type=int, default=200)
    p.add_argument("--diffae-lr", type=float, default=0.002)
    p.add_argument("--diffae-steps", type=int, default=10, help="DDIM steps of the decoder / the DDPM sampler")
    p.add_argument("--diffae-encode-level", type=float, default=None,
                   help="inversion depth of the diffusion autoencoder (default: the shipped 0.5; Diff-AE-RE: 1)")
    p.add_argument("--vae-lr", type=float, default=0.05)
    p.add_argument("--pixel-step", type=float, default=4 / 255, help="reference: 1/255 (slow on a CPU)")
    p.add_argument("--pixel-max-steps", type=int, default=200)
    p.add_argument("--noise-level", type=float, default=0.2)
    p.add_argument("--filter-steps", type=int, default=2, help="reference: 5 (slow on a CPU)")
    p.add_argument("--dilation", type=int, default=3)
    p.add_argument("--inpaint-trials", type=int, default=1)
    p.add_argument("--step-rule", default="scaled", choices=("sign", "scaled"),
                   help="step rule of pixel-ddpm (pixel-ddpm-sign always uses the reference 'sign')")
    p.add_argument("--mask-from", default="filtered", choices=("filtered", "adversarial"))
    p.add_argument("--update", action="store_true", help="merge into the existing result file")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "regression_cpu.json")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "images" / "regression_sweep.png")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"--methods must be among {METHODS}; got {m!r}")
    models = load_models(a.diffusion_dir, a.diffae_steps, a.diffae_encode_level)
    world = models["world"]
    x, _, _ = world.sample(a.n, generator=torch.Generator().manual_seed(31_000))
    y = predict(models["regressor"], x)
    mirror = RegressionTarget(TAU, mode="mirror")
    goal = mirror.prepare(y, None)
    xs, _, _ = world.sample(a.sweep_n, generator=torch.Generator().manual_seed(31_001))
    ys = predict(models["regressor"], xs)
    ts = torch.rand(a.sweep_n, generator=torch.Generator().manual_seed(31_002))

    previous = json.loads(a.out.read_text()) if a.update and a.out.is_file() else {}
    rows = [r for r in previous.get("methods", []) if r["method"] not in methods]
    sweep = [r for r in previous.get("sweep", []) if r["method"] not in methods]
    missing = []
    real = {"method": "real test images (no change)", "n": len(x),
            "sparsity_changed_gt_0.1": 0.0, "manifold_distance_mean": float(manifold_distance(world, x).mean()),
            "domain_fid": domain_fid(models["reference"], x, models["features"])}
    # real images at each sample size that was run (the domain FID depends on the sample size)
    old_real = previous.get("real_images", [])
    old_real = [old_real] if isinstance(old_real, dict) else old_real
    reals = sorted([r for r in old_real if r["n"] != real["n"]] + [real], key=lambda r: r["n"])
    for method in methods:
        if not available(method, models):
            missing.append(method)
            continue
        out, settings, sec = run_method(method, x, None, mirror, models, a)
        ev = evaluate(method, x, y, goal, out.counterfactuals, out.n_steps, sec, models, settings)
        if method.startswith("pixel"):
            ev["mask_fraction_mean"] = float(out.masks.float().mean())
            ev["attack_success_rate"] = float(out.attack_success.float().mean())
        else:
            rec = out.reconstructions
            ev["reconstruction_regressor_error_mean"] = float((predict(models["regressor"], rec) - y).abs().mean())
        rows.append({k: v for k, v in ev.items() if not k.startswith("_")})
        print(table({"device": "", "methods": rows[-1:]}), flush=True)
        if a.sweep_n:
            out_s, _, sec_s = run_method(method, xs, ts, RegressionTarget(TAU, value_range=None), models, a)
            ev_s = evaluate(method, xs, ys, ts, out_s.counterfactuals, out_s.n_steps, sec_s, models, settings)
            sweep += sweep_rows(method, (ts - ys).abs(), ev_s)
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda r: order.get(r["method"], -1))
    result = {
        "benchmark": "regression",
        "captum_cfx_version": captum_cfx.__version__,
        "torch": torch.__version__,
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "task": {"world": "squares 32x32", "targets": "mirror (y~ = y +/- 0.5)", "tolerance": TAU,
                 "test_seed": 31_000, "sweep": "uniform random absolute targets, seed 31_002"},
        "diffusion_weights": {k: models.get(f"{k}_dir") for k in ("ddpm", "diffae")},
        "real_images": reals,
        "methods": rows,
        "missing": sorted(set(previous.get("missing", [])) - {r["method"] for r in rows} | set(missing)),
        "sweep": sweep,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    if sweep:
        figure(sweep, a.figure)
    print()
    print(table(result))


if __name__ == "__main__":
    main()
