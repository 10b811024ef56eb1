"""Training recipes for the diffusion models (merged into `python -m captum_cfx.zoo.train`).

For these recipes the ``epochs`` field counts optimisation *steps* (batches of ``batch``, default 64).

- ``mnist-diffae``: a diffusion autoencoder (Preechakul et al. 2022) on the 4,000 embedded MNIST
  training digits: :class:`~captum_cfx.generators.SemanticEncoder` -> ``z_sem`` (32-d) -> linear
  projection added to the time embedding of a 3-level ``UNet2DModel`` (``class_embed_type="identity"``,
  ``resnet_time_scale_shift="scale_shift"``: the embedding scales and shifts every ResNet block's
  normalised features, Diff-AE's AdaGN), trained jointly with the epsilon-prediction loss, light random
  affine augmentation.
- ``squares-ddpm``: an unconditional epsilon-prediction ``UNet2DModel`` on the squares world (fresh
  samples every step); the pixel-space regression method (issue G) uses it as its DDPM filter.
- ``squares-diffae``: a diffusion autoencoder on the squares world (``z_sem`` 16-d), wrapped with
  ``encode_level=0.5``.

All use the linear DDPM schedule (1,000 steps, betas 1e-4..0.02), gradient clipping at 1, and ship an
exponential moving average of the weights. ``squares-ddpm`` (trained on the CPU): Adam with a one-cycle
learning rate over its steps, batch 64, EMA decay 0.995. The two diffusion autoencoders were trained on one
H100 (``--device cuda``; ``_GPU_KW``): batch 256, Adam at a constant 1e-3 after 500 warm-up steps, EMA decay
0.999, for the steps a 400 s budget reached (recorded as ``epochs``). On two CPU cores the same steps take
hours; a GPU run is not bit-identical to a CPU run.
"""

from __future__ import annotations

import copy
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_cfx.datasets import Squares, load_mnist
from captum_cfx.zoo.train import Recipe, accuracy, random_affine

__all__ = ["RECIPES", "train_diffusion"]


_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
             "clip_sample": False}
_D3, _U3 = ["DownBlock2D"] * 3, ["UpBlock2D"] * 3
BATCH = 64


#: the diffusion autoencoders' training settings (run on one H100: ``--device cuda``, about 400 s each)
_GPU_KW = {"lr_schedule": "constant", "lr": 1e-3, "warmup": 500, "ema_decay": 0.999, "batch": 256}
#: the shipped squares-diffae inverts to half the diffusion (see ``DiffusionAutoencoder``'s ``encode_level``)
SQUARES_ENCODE_LEVEL = 0.5


def _unet_cfg(size: int, channels: int, widths: list[int], conditioned: bool, scale_shift: bool = False) -> dict:
    cfg = {"sample_size": size, "in_channels": channels, "out_channels": channels, "block_out_channels": widths,
           "down_block_types": _D3, "up_block_types": _U3, "layers_per_block": 1, "norm_num_groups": 8}
    if conditioned:
        cfg["class_embed_type"] = "identity"
    if scale_shift:  # the embedding (time + z_sem) scales and shifts each ResNet's normalised features (AdaGN)
        cfg["resnet_time_scale_shift"] = "scale_shift"
    return cfg


def _batches(family: str, g: torch.Generator, batch: int = BATCH):
    """Infinite iterator of training batches in ``[-1, 1]``."""
    if family == "mnist":
        x, _ = load_mnist("train")
        while True:
            idx = torch.randint(0, len(x), (batch,), generator=g)
            yield random_affine(x[idx], g, rot=6.0, scale=0.06, shift=1.0) * 2 - 1
    world = Squares()
    while True:
        yield world.sample(batch, generator=g).images * 2 - 1


def train_diffusion(r: Recipe, steps: int, lr: float = 2e-3, ema_decay: float = 0.995,
                    *, device: str | torch.device = "cpu", batch: int = BATCH, lr_schedule: str = "onecycle",
                    warmup: int = 500, max_seconds: float | None = None) -> nn.Module:
    """Train a :class:`DDPMWeights` or :class:`DiffAEWeights`; returns the EMA model, on CPU, in eval mode.

    ``device`` is where the steps run (``"cuda"`` on a GPU machine); batches, timesteps and noise are drawn
    on the CPU from the recipe's seed either way, so a run sees the same data on any device.

    ``lr_schedule="onecycle"`` anneals over exactly ``steps``; ``"constant"`` warms up linearly over
    ``warmup`` steps and then holds ``lr`` (DDPM's own recipe, with the EMA doing the averaging), so a run
    stopped early by ``max_seconds`` (wall-clock budget) equals a run of the steps it reached. The number
    of steps actually taken is stored on the returned model as ``trained_steps``.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int; got {batch!r}")
    if max_seconds is not None and not max_seconds >= 0:
        raise ValueError(f"max_seconds must be None or >= 0; got {max_seconds!r}")
    if lr_schedule not in ("onecycle", "constant"):
        raise ValueError(f"lr_schedule must be 'onecycle' or 'constant', got {lr_schedule!r}")
    if max_seconds is not None and lr_schedule != "constant":
        raise ValueError("max_seconds needs lr_schedule='constant' (a one-cycle schedule is tied to `steps`)")
    from diffusers import DDPMScheduler

    from captum_cfx.zoo._registry import resolve_class

    torch.manual_seed(r.seed)
    g = torch.Generator().manual_seed(r.seed)
    dev = torch.device(device)
    model = resolve_class(r.cls)(**r.config).to(dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMScheduler(**r.config["scheduler"])
    alphas = sched.alphas_cumprod
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if lr_schedule == "onecycle":
        lr_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    else:
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / max(warmup, 1)))
    conditioned = hasattr(model, "encoder")
    data = _batches("mnist" if r.config["unet"]["in_channels"] == 1 else "squares", g, batch)
    t0, running = time.time(), 0.0
    for step in range(1, steps + 1):
        model.train()
        x0 = next(data)
        t = torch.randint(0, len(alphas), (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        x0, t, noise, a = x0.to(dev), t.to(dev), noise.to(dev), a.to(dev)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = model.cond(model.encoder(x0)) if conditioned else None
        loss = F.mse_loss(model.unet(xt, t, class_labels=cond).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(p, 1 - d)
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        out_of_time = max_seconds is not None and time.time() - t0 > max_seconds
        if step % 100 == 0 or step == steps or out_of_time:
            print(f"[{r.cls.split(':')[-1]}] step {step}/{steps} loss {running:.4f} ({time.time() - t0:.0f}s)",
                  file=sys.stderr, flush=True)
        if out_of_time:
            break
    ema = ema.cpu().eval()
    ema.trained_steps = step
    return ema


def _wrap(model: nn.Module, steps: int = 10, encode_level: float = 1.0):
    from captum_cfx.generators import DDIMGenerator, DiffusionAutoencoder

    cls = DiffusionAutoencoder if hasattr(model, "encoder") else DDIMGenerator
    return cls.from_weights(model, num_inference_steps=steps, input_range=(0.0, 1.0),
                            encode_level=encode_level).eval()


def _reconstruct(gen: nn.Module, x: Tensor, device: str | torch.device, bs: int) -> Tensor:
    gen = gen.to(device)
    with torch.no_grad():
        rec = torch.cat([gen.decode(gen.encode(x[i : i + bs].to(device))).cpu() for i in range(0, len(x), bs)])
    gen.cpu()
    return rec


def _eval_mnist_diffae(model: nn.Module, n: int = 1000, steps: int = 20, device: str | torch.device = "cpu") -> dict:
    from captum_cfx.zoo import load_pretrained

    x, y = load_mnist("test")
    x, y = x[:n], y[:n]
    rec = _reconstruct(_wrap(model, steps), x, device, 250)
    clf = load_pretrained("mnist-classifier")
    return {"classifier_accuracy_on_reconstructions": round(accuracy(clf, rec, y), 4),
            "reconstruction_mse": round(float(F.mse_loss(rec, x)), 5), "eval_images": n, "ddim_steps": steps}


def _squares_recon_metrics(x: Tensor, rec: Tensor, y: Tensor) -> dict:
    world = Squares()
    fx, fr = world.measure(x), world.measure(rec)
    return {"reconstruction_mse": round(float(F.mse_loss(rec, x)), 5),
            "intensity_mae": round(float((fr[:, 0] - y).abs().mean()), 4),
            "one_minus_intensity_mae": round(1 - float((fr[:, 0] - y).abs().mean()), 4),
            "position_kept": round(float((fx[:, 4:6] == fr[:, 4:6]).all(1).float().mean()), 4)}


def _eval_squares_diffae(model: nn.Module, n: int = 400, device: str | torch.device = "cpu") -> dict:
    """Reconstructions at the shipped ``encode_level`` and, for comparison, with full inversion to ``x_T``."""
    x, y, _ = Squares().sample(n, generator=torch.Generator().manual_seed(30_000))
    rec = _reconstruct(_wrap(model, encode_level=SQUARES_ENCODE_LEVEL), x, device, 200)
    full = _reconstruct(_wrap(model), x, device, 200)
    return {**_squares_recon_metrics(x, rec, y), "encode_level": SQUARES_ENCODE_LEVEL,
            **{f"full_inversion_{k}": v for k, v in _squares_recon_metrics(x, full, y).items()},
            "eval_images": n, "ddim_steps": 10}


def _eval_squares_ddpm(model: nn.Module, n: int = 400) -> dict:
    """A DDPM filter at noise level t=200 (noise, then 5 DDIM steps back): how much it keeps."""
    x, y, _ = Squares().sample(n, generator=torch.Generator().manual_seed(30_000))
    gen = _wrap(model, steps=5)
    gen.sampler.encode_level = 0.2
    with torch.no_grad():
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        xt = gen.sampler.scheduler.add_noise(x * 2 - 1, noise, torch.full((n,), gen.sampler.timesteps()[-1]))
        rec = (gen.sampler.sample(xt).clamp(-1, 1) + 1) / 2
    return {**_squares_recon_metrics(x, rec, y), "eval_images": n, "filter_timestep": gen.sampler.timesteps()[-1]}


RECIPES: dict[str, Recipe] = {
    "mnist-diffae": Recipe(
        "DiffAEWeights",
        {"unet": _unet_cfg(28, 1, [32, 64, 64], True, scale_shift=True), "encoder": {"in_channels": 1, "width": 32},
         "z_dim": 32, "scheduler": _SCHEDULE},
        seed=50, epochs=9592, train=train_diffusion, evaluate=_eval_mnist_diffae, train_kwargs=_GPU_KW,
        targets={"classifier_accuracy_on_reconstructions": 0.95},
        generator={"wrapper": "DiffusionAutoencoder.from_weights", "num_inference_steps": 20,
                   "input_range": [0.0, 1.0]},
    ),
    "squares-ddpm": Recipe(
        "DDPMWeights", {"unet": _unet_cfg(32, 3, [16, 32, 64], False), "scheduler": _SCHEDULE},
        seed=51, epochs=2500, train=train_diffusion, evaluate=_eval_squares_ddpm,
        targets={"one_minus_intensity_mae": 0.97},
        generator={"wrapper": "DDIMGenerator.from_weights", "num_inference_steps": 10, "input_range": [0.0, 1.0]},
    ),
    "squares-diffae": Recipe(
        "DiffAEWeights",
        {"unet": _unet_cfg(32, 3, [32, 64, 64], True, scale_shift=True), "encoder": {"in_channels": 3, "width": 32},
         "z_dim": 16, "scheduler": _SCHEDULE},
        seed=52, epochs=7585, train=train_diffusion, evaluate=_eval_squares_diffae, train_kwargs=_GPU_KW,
        targets={"one_minus_intensity_mae": 0.95, "position_kept": 0.9},
        generator={"wrapper": "DiffusionAutoencoder.from_weights", "num_inference_steps": 10,
                   "encode_level": SQUARES_ENCODE_LEVEL, "input_range": [0.0, 1.0]},
    ),
}
