"""Minimal counterfactuals (issue R): options of the latent attack measured on ground truth.

Each variant is :class:`~captum_cfx.LatentCounterfactualAttack` with one or more of its minimality options
(``sparsity``, ``line_search``, ``mask_threshold``, a smaller ``margin``), run on the tasks of
``captum-cfx compare`` (same images, models, seeds and scoring: :mod:`captum_cfx.compare`):

- attribute world, spurious and decorrelated smile classifiers (``world-vae``): validity, right factor
  changed, only the right factor changed, MNAC, oracle agreement;
- squares (``squares-vae``, regression target ± 0.5 within 0.05): the same ground-truth columns;
- MNIST (``mnist-vae``, target = label + 1): flip rate, oracle agreement and realism (median 5-NN distance to
  the training digits in the oracle's features, as a ratio to that of real test digits).

    python benchmarks/minimal.py [--n 100] [--datasets world squares mnist] [--variants default line10 ...]
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
from captum_cfx import LatentAttackConfig, LatentCounterfactualAttack, RegressionTarget
from captum_cfx.compare import build_tasks
from captum_cfx.compare.registry import CFResult
from captum_cfx.compare.scoring import score_ground_truth, valid_outputs

#: name -> keyword arguments of ``generate``
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "line10": {"line_search": 10},
    "l1_0.3": {"sparsity": 0.3},
    "l1_0.6": {"sparsity": 0.6},
    "mask0.1": {"mask_threshold": 0.1},
    "l1_0.3_line10": {"sparsity": 0.3, "line_search": 10},
    "minimal_preset": dict(LatentAttackConfig.PRESETS["minimal"]),
    "minimal_preset_line10": {**LatentAttackConfig.PRESETS["minimal"], "line_search": 10},
    "margin2_line10": {"margin": 2.0, "line_search": 10},
}


def _mnist_realism(task: Any, cf: torch.Tensor, cache: dict[str, Any]) -> float:
    from captum_cfx.datasets import load_mnist
    from captum_cfx.metrics import knn_distance
    from captum_cfx.zoo import mnist_features

    if "ref" not in cache:
        feats = mnist_features()
        xtr, _ = load_mnist("train")
        xte, _ = load_mnist("test")
        with torch.no_grad():
            ref = torch.cat([feats(xtr[i : i + 1000]) for i in range(0, len(xtr), 1000)])
        cache["ref"], cache["feats"] = ref, feats
        cache["real"] = knn_distance(xte, ref, feats).value  # every real test digit
    return knn_distance(cf, cache["ref"], cache["feats"]).value / cache["real"]


def run_variant(task: Any, kw: dict[str, Any], cache: dict[str, Any]) -> dict[str, Any]:
    from captum_cfx.metrics import oracle_agreement

    attack = LatentCounterfactualAttack(task.model, task.generator)
    kw = dict(kw)
    if task.regression:
        kw.pop("margin", None)
        kw["objective"] = RegressionTarget(tolerance=task.tolerance)
    t0 = time.perf_counter()
    out = attack.generate(task.images, target=task.goals, **kw)
    sec = time.perf_counter() - t0
    res = CFResult.from_output(out, sec)
    valid, _ = valid_outputs(task, res.counterfactuals)
    row: dict[str, Any] = {
        "validity": float(valid.float().mean()),
        "oracle_agreement": oracle_agreement(task.oracle, res.counterfactuals, task.goals, valid,
                                             tolerance=task.tolerance).value,
        "l2_latent": float((out.latents.free - out.original_latents.free).flatten(1).norm(dim=1).mean()),
        "l1_pixels": float((res.counterfactuals - res.start).abs().flatten(1).sum(1).mean()),
        "steps": float(out.n_steps.float().mean()),
        "seconds_per_cf": sec / len(task.images),
    }
    gt = score_ground_truth(task, res, valid)
    if gt is not None:
        row.update({k: gt[k] for k in ("right_factor", "right_factor_rate", "right_factor_only_rate", "mnac",
                                        "change_rate_among_valid")})
    if task.family == "mnist":
        row["realism_knn5_ratio"] = _mnist_realism(task, res.counterfactuals.detach(), cache)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--datasets", nargs="+", default=["world", "squares", "mnist"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    res: dict[str, Any] = {"config": {"n": a.n, "datasets": a.datasets, "torch": torch.__version__,
                                      "captum_cfx": captum_cfx.__version__, "machine": platform.machine(),
                                      "threads": 1},
                           "variants": {v: VARIANTS[v] for v in a.variants}, "results": {}}
    cache: dict[str, Any] = {}
    for task in build_tasks(a.n, a.datasets):
        if task.generator is None:
            continue
        res["results"][task.name] = {}
        for v in a.variants:
            row = run_variant(task, VARIANTS[v], cache)
            res["results"][task.name][v] = row
            only = row.get("right_factor_only_rate")
            print(f"{task.name:28s} {v:24s} valid {row['validity']:.2f} oracle {row['oracle_agreement']:.2f} "
                  + (f"right {row['right_factor_rate']:.2f} only {only:.2f} mnac {row['mnac']:.2f} "
                     if only is not None else "")
                  + (f"realism {row['realism_knn5_ratio']:.3f} " if "realism_knn5_ratio" in row else "")
                  + f"zL2 {row['l2_latent']:.2f} steps {row['steps']:.0f} {row['seconds_per_cf']:.3f}s", flush=True)
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
