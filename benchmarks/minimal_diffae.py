"""The diffusion autoencoder's counterfactual realism (issue R): Adam's dense steps vs normalised-gradient steps.

On the first ``n`` digits of the ``compare`` MNIST task (class-interleaved test digits, target = label + 1), with
the shipped ``mnist-diffae`` at 10 DDIM steps inside the attack and ``mnist-vae`` for reference: flip rate,
oracle agreement, realism (median 5-NN distance to the training digits in the oracle's features ÷ that of the
1,000 real test digits, as ``benchmarks/minimal.py``), latent change and steps. ``lr_scale`` multiplies
``z_sem``'s measured per-dimension spread; ``ddim_steps`` (default 10) sets the DDIM steps inside the attack.
About 30 s per DiffAE counterfactual on one busy CPU thread: keep ``n`` small.

    python benchmarks/minimal_diffae.py 10 '[{"gen": "vae"}, {}, {"optimizer": "l2", "lr_scale": 0.5}]' [out.json]

With a third argument, the figures are also written there as JSON (atomically), with a table printed at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.minimal import _mnist_realism
from captum_cfx import LatentCounterfactualAttack
from captum_cfx.compare import build_tasks
from captum_cfx.metrics import oracle_agreement
from captum_cfx.zoo import load_generator


def main() -> None:
    torch.set_num_threads(1)
    n, variants = int(sys.argv[1]), json.loads(sys.argv[2])
    t = build_tasks(max(n, 4), ("mnist",))[0]
    x, tgt = t.images[:n], t.goals[:n]
    gen = load_generator("mnist-diffae")
    gen.sampler.num_inference_steps = 10
    with torch.no_grad():
        std = float(gen.encode_semantic(t.images).std(0).mean())
        rec_d, rec_v = gen.decode(gen.encode(x)), t.generator.decode(t.generator.encode(x))
    cache: dict = {}
    res: dict = {"config": {"n": n, "ddim_steps": 10, "z_sem_spread": std, "threads": 1, "torch": torch.__version__,
                            "task": t.description},
                 "reconstruction_realism": {"diffae": _mnist_realism(t, rec_d, cache),
                                            "vae": _mnist_realism(t, rec_v, cache)},
                 "variants": []}
    print("reconstruction realism:", res["reconstruction_realism"], flush=True)
    for v in variants:
        v = dict(v)
        which, scale = v.pop("gen", "diffae"), v.pop("lr_scale", 1.0)
        gen.sampler.num_inference_steps = v.pop("ddim_steps", 10)  # DDIM steps inside the attack
        if which == "diffae":
            atk = LatentCounterfactualAttack(t.model, gen)
            v.setdefault("lr", std * scale)
            v.setdefault("max_steps", 150)
        else:
            atk = LatentCounterfactualAttack(t.model, t.generator)
        t0 = time.perf_counter()
        out = atk.generate(x, target=tgt, **v)
        cf = out.counterfactuals.detach()
        with torch.no_grad():
            valid = t.model(cf).argmax(1) == tgt
        flip = float(valid.float().mean())
        agree = oracle_agreement(t.oracle, cf, tgt, valid).value
        dz = float((out.latents.free - out.original_latents.free).norm(dim=1).mean())
        row = {"generator": which, "settings": v, "ddim_steps": gen.sampler.num_inference_steps,
               "lr_scale": scale, "flip": flip, "oracle_agreement": agree,
               "realism_knn5_ratio": _mnist_realism(t, cf, cache), "latent_change_l2": dz,
               "steps": float(out.n_steps.float().mean()), "seconds": time.perf_counter() - t0}
        res["variants"].append(row)
        print(which, v, "scale", scale, f"flip {flip:.2f}", f"oracle {agree:.2f}",
              f"realism {row['realism_knn5_ratio']:.3f}", f"zL2 {dz:.2f}", f"steps {row['steps']:.1f}",
              f"{row['seconds']:.1f}s", flush=True)
    print(json.dumps(res, indent=1))
    print("| generator | settings | flip | oracle agrees | realism | latent change | steps |")
    print("|---|---|---|---|---|---|---|")
    for r in res["variants"]:
        print(f"| {r['generator']} | {r['settings']} (lr scale {r['lr_scale']}) | {r['flip']:.0%} | "
              f"{r['oracle_agreement']:.0%} | {r['realism_knn5_ratio']:.3f} | {r['latent_change_l2']:.2f} | "
              f"{r['steps']:.1f} |")
    if len(sys.argv) > 3:
        out_path = Path(sys.argv[3])
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        tmp.replace(out_path)


if __name__ == "__main__":
    main()
