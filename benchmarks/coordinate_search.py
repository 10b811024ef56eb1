"""Sparse counterfactuals on the attribute world (issue R): the coordinate search next to the latent attack.

On the two attribute-world tasks of ``captum-cfx compare`` (the same 100 faces, classifiers, targets, oracle and
ground-truth scoring: :mod:`captum_cfx.compare`), side by side in one run:

- :class:`~captum_cfx.LatentCoordinateSearch` in the attribute-coded ``world-factor-ae`` (nine coordinates, one
  per factor) with each selection rule, two margins and one or three coordinates at most;
- the same search in ``world-vae`` (64 entangled coordinates), to separate the search from the generator;
- :class:`~captum_cfx.LatentCounterfactualAttack` (paper default and ``preset("minimal")``) in both generators,
  to separate the generator from the search.

Columns: validity (the classifier predicts the target), oracle agreement (the world oracle reads the target
smile), right factor changed, only the right factor changed (among all images), MNAC (other factors changed),
coordinates / steps per counterfactual, seconds per counterfactual (one CPU thread).

    python benchmarks/coordinate_search.py [--n 100] [--out benchmarks/results/coordinate_search_cpu.json]
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
from captum_cfx import LatentAttackConfig, LatentCoordinateSearch, LatentCounterfactualAttack
from captum_cfx.compare import build_tasks
from captum_cfx.compare.registry import CFResult
from captum_cfx.compare.scoring import score_ground_truth, valid_outputs
from captum_cfx.metrics import oracle_agreement
from captum_cfx.zoo import load_generator

#: name -> (generator, method, keyword arguments of ``generate``)
VARIANTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "search, factor AE (default)": ("world-factor-ae", "search", {}),
    "search, factor AE, one coordinate": ("world-factor-ae", "search", {"max_changes": 1}),
    "search, factor AE, margin 2": ("world-factor-ae", "search", {"margin": 2.0}),
    "search, factor AE, select pixels": ("world-factor-ae", "search", {"select": "pixels"}),
    "search, factor AE, select latent": ("world-factor-ae", "search", {"select": "latent"}),
    "search, world-vae": ("world-vae", "search", {}),
    "attack, factor AE (default)": ("world-factor-ae", "attack", {}),
    "attack, factor AE (minimal preset)": ("world-factor-ae", "attack", dict(LatentAttackConfig.PRESETS["minimal"])),
    "attack, world-vae (default)": ("world-vae", "attack", {}),
    "attack, world-vae (minimal preset)": ("world-vae", "attack", dict(LatentAttackConfig.PRESETS["minimal"])),
}


def run(task: Any, variant: str) -> dict[str, Any]:
    gen_name, method, kw = VARIANTS[variant]
    gen = load_generator(gen_name)
    cls = LatentCoordinateSearch if method == "search" else LatentCounterfactualAttack
    t0 = time.process_time()
    out = cls(task.model, gen).generate(task.images, target=task.goals, **kw)
    sec = time.process_time() - t0
    res = CFResult.from_output(out, sec)
    valid, _ = valid_outputs(task, res.counterfactuals)
    gt = score_ground_truth(task, res, valid)
    assert gt is not None
    return {
        "validity": float(valid.float().mean()),
        "oracle_agreement": oracle_agreement(task.oracle, res.counterfactuals, task.goals, valid).value,
        **{k: gt[k] for k in ("right_factor", "right_factor_rate", "right_factor_only_rate", "mnac",
                              "change_rate_among_valid")},
        "steps": float(out.n_steps.float().mean()),
        "cpu_seconds_per_cf": sec / len(task.images),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    res: dict[str, Any] = {"config": {"n": a.n, "torch": torch.__version__, "captum_cfx": captum_cfx.__version__,
                                      "machine": platform.machine(), "threads": a.threads},
                           "variants": {v: {"generator": VARIANTS[v][0], "method": VARIANTS[v][1],
                                            "settings": VARIANTS[v][2]} for v in a.variants},
                           "results": {}}
    lines = ["| task | variant | valid | oracle agrees | right factor | only the right factor | MNAC | "
             "coordinates / steps | CPU s / CF |", "|---|---|---|---|---|---|---|---|---|"]
    for task in build_tasks(a.n, ("world",)):
        res["results"][task.name] = {}
        for v in a.variants:
            row = run(task, v)
            res["results"][task.name][v] = row
            lines.append(f"| {task.name} | {v} | {row['validity']:.0%} | {row['oracle_agreement']:.0%} | "
                         f"{row['right_factor_rate']:.0%} | {row['right_factor_only_rate']:.0%} | {row['mnac']:.2f} | "
                         f"{row['steps']:.2f} | {row['cpu_seconds_per_cf']:.3f} |")
            print(lines[-1], flush=True)
    text = json.dumps(res, indent=1)
    print(text)
    print("\n".join(lines))
    if a.out:
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(a.out)


if __name__ == "__main__":
    main()
