"""The real configurations with random weights: seconds per attack step, peak memory per image, GCD at real size.

Models (``tests/real_architectures.py``, the published layouts at full width, random weights: time and memory do
not depend on training):

- classifiers: ResNet-50 (25.6 M parameters) and DenseNet-121 (8.0 M), 2 outputs;
- Stable Diffusion's ``AutoencoderKL`` (83.7 M) at 256x256 and 512x512 (latent 4 x 32 x 32 / 4 x 64 x 64);
- the ``google/ddpm-celebahq-256`` ``UNet2DModel`` layout (113.7 M) under DDIM at 256x256, gradient
  checkpointing on, at two DDIM step counts (memory flat in the steps; time projected to 10-50 steps);
- the official Diff-AE templates ``ffhq128_autoenc_130M`` and ``ffhq256_autoenc``
  (:class:`~captum_cfx.generators.OfficialDiffusionAutoencoder`), semantic code of 512 dimensions.

What is measured, each configuration in its own process (so that the peak is its own):

- ``attack_step``: one step of the latent attack at batch 1: decode the latent with gradients, classify
  (ResNet-50), cross-entropy to the other class, backward to the latent. Seconds (best of the runs) and the peak
  resident memory the step added above the process after the models were built (RSS sampled every 5 ms from
  ``/proc/self/statm``; on CUDA ``torch.cuda.max_memory_allocated``). Also the encode time.
- ``gcd``: :class:`~captum_cfx.GlobalCounterfactualDirections` fitted on one source and transferred to one image,
  white-box (exact Hessian-vector products, Lanczos) and proxy, with counts cut to what a CPU finishes (the
  counts change the time, not the peak: every buffer is linear in the latent size and decodes are chunked).
- ``classifier``: forward + backward of the classifier alone.

Projected seconds per counterfactual = encode + reconstruction + ``steps`` attack steps (100 by default; the
latent attack stops early per sample, typically well before its 500-step limit).

    python benchmarks/real_configs.py [--device cuda] [--bf16] [--only sdvae256,gcd_sdvae256] [--threads 1]

CPU: one thread, batch 1 (the machine is shared; the figures are a busy 2-core machine's). Results:
``benchmarks/results/real_configs_<device>.json``. On CUDA (written, not run here) the same configurations run at
``--batch`` with optional bf16 autocast (``--bf16``: the classifier and decoders under ``torch.autocast``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

#: name -> (kind, settings). Order = the order they run in (the GCD measurements first: they answer the issue).
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "classifier_resnet50_256": ("classifier", {"arch": "resnet50", "size": 256}),
    "classifier_densenet121_256": ("classifier", {"arch": "densenet121", "size": 256}),
    "gcd_whitebox_sdvae256": ("gcd", {"gen": "sdvae", "size": 256, "mode": "white-box", "hvp": "exact"}),
    "gcd_whitebox_fd_sdvae256": ("gcd", {"gen": "sdvae", "size": 256, "mode": "white-box",
                                         "hvp": "finite-difference"}),
    "gcd_proxy_sdvae256": ("gcd", {"gen": "sdvae", "size": 256, "mode": "proxy"}),
    "gcd_whitebox_diffae128": ("gcd", {"gen": "diffae", "size": 128, "mode": "white-box", "ddim": 2, "hvp": "exact"}),
    "gcd_whitebox_fd_diffae128": ("gcd", {"gen": "diffae", "size": 128, "mode": "white-box", "ddim": 2,
                                          "hvp": "finite-difference"}),
    "gcd_proxy_diffae128": ("gcd", {"gen": "diffae", "size": 128, "mode": "proxy", "ddim": 2}),
    "attack_sdvae256": ("attack_step", {"gen": "sdvae", "size": 256}),
    "attack_ddim256_1step": ("attack_step", {"gen": "ddim", "size": 256, "ddim": 1}),
    "attack_ddim256_2steps": ("attack_step", {"gen": "ddim", "size": 256, "ddim": 2}),
    "attack_diffae128_2steps": ("attack_step", {"gen": "diffae", "size": 128, "ddim": 2}),
    "attack_diffae256_2steps": ("attack_step", {"gen": "diffae", "size": 256, "ddim": 2}),
    "attack_sdvae512": ("attack_step", {"gen": "sdvae", "size": 512}),
}


# ---------------------------------------------------------------------------------------------- measuring
def trim() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that the next phase's RSS baseline is the
    live set and its peak is its own (freed blocks that the allocator keeps would hide a later phase's growth)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory while the block runs, sampled every 5 ms, minus the RSS at entry."""

    def __enter__(self) -> PeakRSS:
        trim()
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def added(self) -> int:
        return self.peak - self.base


class PeakCUDA:
    def __enter__(self) -> PeakCUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.cuda.synchronize()
        self.added = torch.cuda.max_memory_allocated() - self.base


def peak(device: torch.device) -> Any:
    return PeakCUDA() if device.type == "cuda" else PeakRSS()


def autocast(device: torch.device, bf16: bool) -> Any:
    import contextlib

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------- models
def build_classifier(arch: str) -> torch.nn.Module:
    from tests.real_architectures import densenet121, resnet50

    return (resnet50 if arch == "resnet50" else densenet121)(num_classes=2).eval()


def build_generator(gen: str, size: int, ddim: int | None) -> Any:
    from captum_cfx.generators import DDIMGenerator, DiffusersVAEGenerator, OfficialDiffusionAutoencoder
    from tests.real_architectures import ddpm_celebahq_unet, sd_vae

    if gen == "sdvae":
        return DiffusersVAEGenerator(sd_vae(sample_size=size)).eval()
    if gen == "ddim":
        from diffusers import DDIMScheduler

        return DDIMGenerator(ddpm_celebahq_unet(sample_size=size), DDIMScheduler(num_train_timesteps=1000),
                             num_inference_steps=ddim, checkpoint=True).eval()
    template = "ffhq128_autoenc_130M" if size == 128 else "ffhq256_autoenc"
    return OfficialDiffusionAutoencoder.from_template(template, num_inference_steps=ddim, checkpoint=True).eval()


def n_params(m: Any) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------- measurements
def run_classifier(s: dict[str, Any], device: torch.device, batch: int, bf16: bool, repeats: int) -> dict[str, Any]:
    clf = build_classifier(s["arch"]).to(device)
    x = torch.rand(batch, 3, s["size"], s["size"], device=device)
    times = []
    with peak(device) as pk:
        for _ in range(repeats):
            t0 = time.perf_counter()
            xr = x.clone().requires_grad_(True)
            with autocast(device, bf16):
                out = clf(xr)
            torch.autograd.grad(out[:, 1].sum(), xr)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return {"params_M": n_params(clf) / 1e6, "seconds_forward_backward": min(times), "peak_added_GB": pk.added / 1e9}


def run_attack_step(s: dict[str, Any], device: torch.device, batch: int, bf16: bool, repeats: int,
                    steps_for_projection: int) -> dict[str, Any]:
    from captum_cfx.generators import Latent

    gen = build_generator(s["gen"], s["size"], s.get("ddim")).to(device)
    clf = build_classifier("resnet50").to(device)
    x = torch.rand(batch, 3, s["size"], s["size"], device=device)
    t0 = time.perf_counter()
    with torch.no_grad():
        lat = gen.encode(x)
    t_encode = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        gen.decode(lat)
    t_decode = time.perf_counter() - t0
    target = torch.ones(batch, dtype=torch.long, device=device)
    times = []
    with peak(device) as pk:
        for _ in range(repeats):
            t0 = time.perf_counter()
            z = lat.free.detach().clone().requires_grad_(True)
            with autocast(device, bf16):
                out = clf(gen.decode(Latent(z, lat.fixed)))
            loss = torch.nn.functional.cross_entropy(out.float(), target)
            torch.autograd.grad(loss, z)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    step = min(times)
    return {"params_M_generator": n_params(gen) / 1e6, "latent_shape": list(lat.free.shape[1:]),
            "latent_dim": int(lat.free[0].numel()), "ddim_steps": s.get("ddim"), "seconds_encode": t_encode,
            "seconds_decode_no_grad": t_decode, "seconds_per_attack_step": step,
            "step_times": times, "peak_added_GB_per_image": pk.added / 1e9 / batch,
            "projected_seconds_per_counterfactual": t_encode + t_decode + steps_for_projection * step}


def _pixel_distance(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (images - reference).pow(2).flatten(1).mean(1)


def run_gcd(s: dict[str, Any], device: torch.device, batch: int, bf16: bool, repeats: int) -> dict[str, Any]:
    from captum_cfx import GlobalCounterfactualDirections

    gen = build_generator(s["gen"], s["size"], s.get("ddim")).to(device)
    clf = build_classifier("resnet50").to(device)
    src = torch.rand(1, 3, s["size"], s["size"], device=device)
    imgs = torch.rand(1, 3, s["size"], s["size"], device=device)
    kw: dict[str, Any] = dict(classes=(0, 1), distance=_pixel_distance, mode=s["mode"], n_hessian=1,
                              loss_weights=[(1.0, 0.0)], n_alphas=2, hessian_steps=2, hvp=s.get("hvp", "auto"))
    if s["mode"] == "proxy":
        kw.update(render_budget=1 + 2 * 2 + 4, n_rounds=1, proxy_hidden=64, proxy_epochs=20)
    gcd = GlobalCounterfactualDirections(clf, gen, **kw)
    with peak(device) as pk_fit:
        t0 = time.perf_counter()
        gcd.fit(src, generator=torch.Generator().manual_seed(0), internal_batch_size=4)
        t_fit = time.perf_counter() - t0
    with peak(device) as pk_tr:
        t0 = time.perf_counter()
        out = gcd.transfer(imgs, alphas=[float(gcd.alphas_[-1])], internal_batch_size=4)
        t_tr = time.perf_counter() - t0
    return {"latent_dim": int(gcd.directions_.shape[1]), "mode": s["mode"], "hvp": gcd.hvp, "eigensolver": "lanczos"
            if gcd.directions_.shape[1] > gcd.dense_max_dim else "dense", "renders_fit": gcd.renders_,
            "seconds_fit": t_fit, "seconds_transfer_1_image_1_alpha": t_tr,
            "peak_added_GB_fit": pk_fit.added / 1e9, "peak_added_GB_transfer": pk_tr.added / 1e9,
            "within_4GB": max(pk_fit.added, pk_tr.added) < 4e9, "directions": list(gcd.direction_kinds_),
            "transfer_success": bool(out.success[0])}


def child(name: str, device: str, batch: int, bf16: bool, repeats: int, steps: int) -> dict[str, Any]:
    kind, s = CONFIGS[name]
    dev = torch.device(device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if kind == "classifier":
        res = run_classifier(s, dev, batch, bf16, repeats)
    elif kind == "attack_step":
        res = run_attack_step(s, dev, batch, bf16, repeats, steps)
    else:
        res = run_gcd(s, dev, batch, bf16, 1)
    return {"kind": kind, **s, **res, "wall_seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- driver
def table(result: dict[str, Any]) -> str:
    rows = ["| config | s / attack step | peak added / image (GB) | projected s / counterfactual | notes |",
            "|---|---|---|---|---|"]
    for name, r in result["configs"].items():
        if "error" in r:
            rows.append(f"| {name} | - | - | - | {r['error'][:80]} |")
        elif r["kind"] == "attack_step":
            rows.append(f"| {name} | {r['seconds_per_attack_step']:.1f} | {r['peak_added_GB_per_image']:.2f} | "
                        f"{r['projected_seconds_per_counterfactual']:.0f} | latent {r['latent_dim']}, "
                        f"encode {r['seconds_encode']:.1f} s |")
        elif r["kind"] == "gcd":
            rows.append(f"| {name} | - | fit {r['peak_added_GB_fit']:.2f}, transfer {r['peak_added_GB_transfer']:.2f}"
                        f" | - | D={r['latent_dim']} {r['eigensolver']}, fit {r['seconds_fit']:.0f} s "
                        f"({r['renders_fit']} renders) |")
        else:
            rows.append(f"| {name} | fwd+bwd {r['seconds_forward_backward']:.2f} | {r['peak_added_GB']:.2f} | - | "
                        f"{r['params_M']:.1f} M params |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="images per step (default 1 on CPU, 8 on CUDA)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for classifier and decoder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=None, help="timed attack steps (default 1 on CPU, 3 on CUDA)")
    ap.add_argument("--steps", type=int, default=100, help="attack steps in the projection per counterfactual")
    ap.add_argument("--only", default=None, help="comma-separated config names (default: all)")
    ap.add_argument("--budget", type=float, default=900.0, help="seconds; configs not started by then are skipped")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", action="store_true", help="keep the other configs of an existing result file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    batch = a.batch or (8 if cuda else 1)
    repeats = a.repeats or (3 if cuda else 1)
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(child(a.child, a.device, batch, a.bf16, repeats, a.steps)))
        return
    from _common import emit

    names = a.only.split(",") if a.only else list(CONFIGS)
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"--only: unknown configs {unknown}; choose from {list(CONFIGS)}")
    out = a.out or ROOT / "benchmarks" / "results" / f"real_configs_{'cuda' if cuda else 'cpu'}.json"
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "threads": a.threads, "batch": batch,
        "bf16_autocast": a.bf16, "torch": torch.__version__, "weights": "random (time and memory only)",
        "projection_steps": a.steps, "configs": {}}
    if a.merge and out.is_file():
        old = json.loads(out.read_text())
        result["configs"] = {k: v for k, v in old.get("configs", {}).items() if "error" not in v}
        result["earlier_runs_wall_seconds"] = old.get("total_wall_seconds", 0) + old.get("earlier_runs_wall_seconds", 0)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    t_start = time.perf_counter()
    for name in names:
        if time.perf_counter() - t_start > a.budget:
            result["configs"][name] = {"kind": CONFIGS[name][0], "error": f"not run: the {a.budget:.0f} s budget was "
                                                                             "spent"}
            continue
        cmd = [sys.executable, __file__, "--child", name, "--device", a.device, "--batch", str(batch),
               "--threads", str(a.threads), "--repeats", str(repeats), "--steps", str(a.steps)]
        if a.bf16:
            cmd.append("--bf16")
        print(f"[real_configs] {name} ...", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if p.returncode == 0:
            result["configs"][name] = json.loads(p.stdout.strip().splitlines()[-1])
        else:
            result["configs"][name] = {"kind": CONFIGS[name][0], "error": p.stderr.strip().splitlines()[-1][:300]
                                       if p.stderr.strip() else f"exit {p.returncode}"}
        result["total_wall_seconds"] = time.perf_counter() - t_start
        emit(_with_summary(result), out, table)
    for name in CONFIGS:  # what no run measured stays visible in the file
        result["configs"].setdefault(name, {"kind": CONFIGS[name][0], "error": "not run on this device"})
    emit(_with_summary(result), out, table)


def _with_summary(result: dict[str, Any]) -> dict[str, Any]:
    c = result["configs"]
    summ: dict[str, Any] = {}
    one, two = c.get("attack_ddim256_1step", {}), c.get("attack_ddim256_2steps", {})
    if "seconds_per_attack_step" in one and "seconds_per_attack_step" in two:
        per = two["seconds_per_attack_step"] - one["seconds_per_attack_step"]
        summ["ddim256_seconds_per_ddim_step_in_an_attack_step"] = per
        summ["ddim256_projected_seconds_per_attack_step"] = {
            str(k): one["seconds_per_attack_step"] + (k - 1) * per for k in (10, 20, 50)}
        summ["ddim256_peak_added_GB_1_vs_2_ddim_steps"] = [one["peak_added_GB_per_image"],
                                                          two["peak_added_GB_per_image"]]
    gcd = [r for r in c.values() if r.get("kind") == "gcd" and "error" not in r]
    if gcd:
        def top(rs: list[dict[str, Any]]) -> float | None:
            return max((max(r["peak_added_GB_fit"], r["peak_added_GB_transfer"]) for r in rs), default=None)

        # the default settings: proxy, and white-box with hvp="auto" (= differences of gradients on the Lanczos path)
        summ["gcd_max_peak_added_GB_default_settings"] = top(
            [r for r in gcd if r["mode"] == "proxy" or r.get("hvp") == "finite-difference"])
        summ["gcd_max_peak_added_GB_exact_hvps"] = top([r for r in gcd if r["mode"] != "proxy"
                                                        and r.get("hvp", "exact") == "exact"])
    return {**result, "summary": summ}


if __name__ == "__main__":
    main()
