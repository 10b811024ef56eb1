"""The diffusion autoencoder's counterfactual realism (issue R): Adam's dense steps vs normalised-gradient steps.

On the first ``n`` digits of the ``compare`` MNIST task (class-interleaved test digits, target = label + 1), with
the shipped ``mnist-diffae`` at 10 DDIM steps inside the attack and ``mnist-vae`` for reference: flip rate,
oracle agreement, realism (median 5-NN distance to the training digits in the oracle's features ÷ that of the
1,000 real test digits, as ``benchmarks/minimal.py``), latent change and steps. ``lr_scale`` multiplies
``z_sem``'s measured per-dimension spread (the attack's step in ``compare``'s DiffAE row is that spread).
About 30 s per DiffAE counterfactual on one busy CPU thread: keep ``n`` small.

    python benchmarks/minimal_diffae.py 10 '[{"gen": "vae"}, {}, {"optimizer": "l2", "lr_scale": 0.5}]'
"""

from __future__ import annotations

import json
import sys
import time

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
    print("reconstruction realism: diffae", _mnist_realism(t, rec_d, cache), "vae", _mnist_realism(t, rec_v, cache),
          flush=True)
    for v in variants:
        v = dict(v)
        which, scale = v.pop("gen", "diffae"), v.pop("lr_scale", 1.0)
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
        print(which, v, "scale", scale, f"flip {flip:.2f}", f"oracle {agree:.2f}",
              f"realism {_mnist_realism(t, cf, cache):.3f}", f"zL2 {dz:.2f}",
              f"steps {float(out.n_steps.float().mean()):.1f}", f"{time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
