"""Synthetic-worlds benchmark: generation speed, exactness, and the shipped world models side by side.

Measured here, in this process, on fresh test sets drawn with seeds that training never used:

- generation throughput (images/s, best of 5 draws of 10,000, with 1 thread and with torch's default) for
  squares and the attribute world at 32 and 64 px;
- round trip (``render(factors) == images``), determinism, squares pixel-measurement error;
- the attribute oracle's per-factor accuracy (binary) and MAE (continuous);
- the world VAE's factor keeping (oracle on reconstructions vs the exact factors);
- the spurious and the decorrelated smile classifiers on correlated (90 %), decorrelated and anti-correlated data;
- the squares regressor and the independent oracle regressor (MAE), and their agreement;
- end to end: ``LatentCounterfactualAttack`` (world-vae, 200 steps) flips each smile classifier, and
  ``factor_changes`` reads which factors the counterfactuals changed: a faithful explanation of the spurious
  classifier must change eyeglasses;
- each model's recorded CPU training time (from its zoo JSON).

    python benchmarks/worlds.py [--n 4000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from _common import make_gallery

from captum_cfx.datasets import AttributeWorld, Squares
from captum_cfx.zoo import load_generator, load_pretrained
from captum_cfx.zoo._registry import WEIGHTS_DIR
from captum_cfx.zoo.recipes_worlds import CONTINUOUS_TOLERANCE, smile_split

MODELS = ("world-oracle", "world-vae", "world-smile-spurious", "world-smile-decorrelated", "squares-regressor",
          "squares-oracle")


def throughput(world, n: int = 10_000, repeats: int = 5) -> float:
    world.sample(256, generator=torch.Generator().manual_seed(0))  # warm caches
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        world.sample(n, generator=torch.Generator().manual_seed(r))
        best = min(best, time.perf_counter() - t0)
    return n / best


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="test-set size")
    p.add_argument("--n-attack", type=int, default=300, help="faces to explain end to end")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    g = torch.Generator().manual_seed
    res: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                 "n_test": a.n}

    speed = {}
    threads = torch.get_num_threads()
    for name, world in (("squares_32", Squares()), ("squares_64", Squares(64)), ("faces_32", AttributeWorld()),
                        ("faces_64", AttributeWorld(64))):
        torch.set_num_threads(1)
        speed[name + "_1_thread"] = round(throughput(world))
        torch.set_num_threads(threads)
        speed[name] = round(throughput(world))
        x1, *_, f1 = world.sample(500, generator=g(1))
        x2, *_ = world.sample(500, generator=g(1))
        speed[name + "_round_trip_exact"] = bool(torch.equal(world.render(f1), x1))
        speed[name + "_deterministic"] = bool(torch.equal(x1, x2))
    res["generation_images_per_second"] = speed

    sq = Squares()
    x, y, f = sq.sample(a.n, generator=g(50_000))
    m = sq.measure(x)
    res["squares_measurement"] = {"intensity_max_abs_error": float((m[:, 0] - y).abs().max()),
                                  "background_max_abs_error": float((m[:, 1:4] - f[:, 1:4]).abs().max()),
                                  "position_exact": bool(torch.equal(m[:, 4:6], f[:, 4:6]))}
    preds = {name: load_pretrained(name)(x)[:, 0] for name in ("squares-regressor", "squares-oracle")}
    res["squares_models"] = {name: {"test_mae": float((v - y).abs().mean())} for name, v in preds.items()}
    res["squares_models"]["regressor_vs_oracle_mae"] = float((preds["squares-regressor"] - preds["squares-oracle"])
                                                             .abs().mean())

    world = AttributeWorld()
    x, f = world.sample(a.n, generator=g(50_001))
    oracle = load_pretrained("world-oracle")
    binary = world.is_binary

    def agreement(pred: torch.Tensor) -> dict:
        ok = torch.where(binary, pred == f, (pred - f).abs() <= CONTINUOUS_TOLERANCE).float().mean(0)
        out = {n: round(float(ok[i]), 4) for i, n in enumerate(world.factor_names)}
        return out | {"mean": round(float(ok.mean()), 4)}

    pred = oracle.predict(x)
    res["world_oracle"] = {"agreement": agreement(pred),
                           "continuous_mae": {n: round(float((pred - f).abs().mean(0)[world.index(n)]), 4)
                                              for n in world.continuous_factors}}
    vae = load_generator("world-vae")
    rec = torch.cat([vae.reconstruct(x[i : i + 500]) for i in range(0, len(x), 500)])
    res["world_vae"] = {"oracle_agreement_on_reconstructions": agreement(oracle.predict(rec)),
                        "reconstruction_mse": float(((rec - x) ** 2).mean())}

    splits = {"correlated_0.9": smile_split(a.n, 0.9, seed=50_002),
              "decorrelated": smile_split(a.n, 0.5, seed=50_003),
              "anticorrelated": smile_split(a.n, 0.0, seed=50_004)}
    s = world.index("smile")
    res["smile_classifiers"] = {
        name: {k: round(float((load_pretrained(name)(xs).argmax(1) == fs[:, s].long()).float().mean()), 4)
               for k, (xs, fs) in splits.items()}
        for name in ("world-smile-spurious", "world-smile-decorrelated")
    }
    for v in res["smile_classifiers"].values():
        v["drop_correlated_to_decorrelated"] = round(v["correlated_0.9"] - v["decorrelated"], 4)

    # end to end: latent counterfactuals that flip each smile classifier, scored against the ground truth
    from captum_cfx import LatentCounterfactualAttack
    from captum_cfx.metrics import factor_changes

    xe, _ = world.sample(a.n_attack, generator=g(50_005))
    res["latent_attack_factor_change_rate"] = {}
    for name in ("world-smile-spurious", "world-smile-decorrelated"):
        clf = load_pretrained(name)
        tgt = 1 - clf(vae.reconstruct(xe)).argmax(1)
        with torch.enable_grad():
            cf = LatentCounterfactualAttack(clf, vae).generate(xe, target=tgt, max_steps=200)
        ok = cf.success
        ch = factor_changes(world, cf.reconstructions[ok], cf.counterfactuals[ok], oracle=oracle)
        res["latent_attack_factor_change_rate"][name] = {
            "flip_rate": round(float(ok.float().mean()), 4),
            **{k: round(v, 3) for k, v in ch.change_rate().items()},
            "mnac_excluding_smile": round(ch.mnac(exclude="smile").value, 3)}

    res["train_seconds_cpu"] = {}
    for name in MODELS:
        cfg = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
        res["train_seconds_cpu"][name] = {"seconds": cfg["train_seconds_cpu"], "threads": cfg["train_threads"]}
    res["zoo_megabytes"] = round(sum(q.stat().st_size for q in WEIGHTS_DIR.iterdir()) / 2**20, 2)

    make_gallery(only=["worlds"])  # docs/images/worlds.png, the gallery's figure (same as python tools/gallery.py)
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / "worlds_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print()
    print(table(res))


def table(r: dict) -> str:
    lines = ["| measure | value |", "|---|---|"]
    sp = r["generation_images_per_second"]
    for k in ("squares_32", "squares_64", "faces_32", "faces_64"):
        lines.append(f"| generation {k} (images/s, best of 5 draws of 10,000; 1 / {r['threads']} threads) | "
                     f"{sp[k + '_1_thread']:,} / {sp[k]:,} (round trip exact: {sp[k + '_round_trip_exact']}) |")
    sm = r["squares_measurement"]
    lines.append(f"| squares pixel measurement: intensity / background max error, position exact | "
                 f"{sm['intensity_max_abs_error']:.4f} / {sm['background_max_abs_error']:.4f}, "
                 f"{sm['position_exact']} |")
    for k, v in r["squares_models"].items():
        lines.append(f"| {k} MAE | {v['test_mae']:.4f} |" if isinstance(v, dict) else f"| {k} | {v:.4f} |")
    ag = r["world_oracle"]["agreement"]
    lines.append("| world-oracle accuracy (binary) | " + ", ".join(
        f"{n} {ag[n]:.3f}" for n in AttributeWorld.binary_factors) + " |")
    lines.append("| world-oracle within 0.1 (continuous) | " + ", ".join(
        f"{n} {ag[n]:.3f}" for n in AttributeWorld.continuous_factors) + " |")
    va = r["world_vae"]["oracle_agreement_on_reconstructions"]
    lines.append(f"| world-vae: oracle agreement on reconstructions (mean over factors) | {va['mean']:.3f} |")
    per = ", ".join(f"{n} {va[n]:.2f}" for n in AttributeWorld.factor_names)
    lines.append(f"| world-vae per factor | {per} |")
    lines.append("| smile classifier | correlated 0.9 / decorrelated / anti-correlated / drop |")
    for k, v in r["smile_classifiers"].items():
        lines.append(f"| {k} | {v['correlated_0.9']:.3f} / {v['decorrelated']:.3f} / {v['anticorrelated']:.3f} / "
                     f"{v['drop_correlated_to_decorrelated']:+.3f} |")
    lines.append("| latent attack on smile: factor change rate | smile / eyeglasses / eyes_open / age / MNAC |")
    for k, v in r["latent_attack_factor_change_rate"].items():
        lines.append(f"| {k} (flip rate {v['flip_rate']:.2f}) | {v['smile']:.2f} / {v['eyeglasses']:.2f} / "
                     f"{v['eyes_open']:.2f} / {v['age']:.2f} / {v['mnac_excluding_smile']:.2f} |")
    for k, v in r["train_seconds_cpu"].items():
        lines.append(f"| train {k} (CPU s, {v['threads']} thread) | {v['seconds']} |")
    lines.append(f"| zoo size (MB) | {r['zoo_megabytes']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
