"""GAN inversion benchmark: the shipped MNIST GAN next to the shipped VAE, side by side in one run.

On ``--n`` (default 500) evenly spaced embedded MNIST test digits (the split is class-sorted, so never a
prefix):

- encoding: the VAE's posterior mean vs the GAN's batched optimisation-based inversion (W space, and
  z space on a ``--z-n`` subset for comparison): median pixel MSE of the reconstruction / projection,
  classifier and oracle accuracy on them, the fraction flagged by the projection-error threshold, time;
- speed: batched inversion of ``--speed-n`` digits vs the same inversion one image at a time on an evenly
  spaced ``--per-image-n`` of them, with identical settings (steps, starts, tol, patience), at each thread
  count in ``--speed-threads``; wall and CPU time, and where the time goes (best-of-K starts, generator
  forward, feature network forward, backward, Adam/bookkeeping);
- latent counterfactuals (``LatentCounterfactualAttack``, default configuration, seeded random targets
  different from the label) through each generator: flip rate, oracle agreement (failures count as
  disagreement), median L2 in pixels, the 5-NN realism figure in the oracle's feature space as a ratio
  to that of real test digits, throughput (including encoding). The diffusion autoencoder's figures are
  copied from ``benchmarks/results/diffae_cpu.json`` (its own run) when that file exists.

Results go to ``benchmarks/results/gan_inversion_<device>.json``. On a CPU shared with other work, wall
times inflate; CPU times of a one-thread run do not, and both are recorded, with the load average.

    python benchmarks/gan_inversion.py [--device cuda] [--n 500] [--threads 1] [--speed-threads 1,2]
    python benchmarks/gan_inversion.py --speed-only --speed-threads 1,2 --speed-repeats 3 --wait-quiet-s 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import captum_cfx
from captum_cfx import GANGenerator, LatentCounterfactualAttack
from captum_cfx.datasets import load_mnist
from captum_cfx.metrics import knn_distance, oracle_agreement, proximity
from captum_cfx.zoo import load_generator, load_pretrained, mnist_features


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((torch.cat([model(c) for c in x.split(500)]).argmax(1) == y).float().mean())


def _busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux ``/proc/stat``; ``None`` elsewhere)."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def others_cores(seconds: float = 3.0) -> float | None:
    """CPU cores other processes keep busy, measured over ``seconds``."""
    b0, c0 = _busy_seconds(), _own_seconds()
    time.sleep(seconds)
    b1, c1 = _busy_seconds(), _own_seconds()
    return None if b0 is None or b1 is None else (b1 - b0 - (c1 - c0)) / seconds


def wait_quiet(limit_s: float, threshold: float = 0.1) -> float | None:
    """Wait (up to ``limit_s``) until other processes use under ``threshold`` cores; return the last reading."""
    start = time.perf_counter()
    reading = others_cores() if limit_s > 0 else None
    while reading is not None and reading >= threshold and time.perf_counter() - start < limit_s:
        reading = others_cores()
    return reading


class Timers:
    """Wall and CPU seconds per section of :meth:`GANGenerator.project`, by wrapping the instance's steps.

    The optimisation step's backward pass is its ``_loss_grad`` time minus the generator and feature
    forward passes inside it.
    """

    def __init__(self, gan: GANGenerator) -> None:
        self.wall: Counter = Counter()
        self.cpu: Counter = Counter()
        self.phase = "other"
        self.gan = gan
        for name, label in (("_features", "target features"), ("_best_start", "best-of-K starts"),
                            ("_loss_grad", "opt: loss + grad"), ("_optimise", "opt: total")):
            self._wrap(name, label, phase="opt" if name == "_loss_grad" else None)
        self._wrap("_render", "generator fwd", inner=True)
        self._wrap("_loss", "features fwd + loss", inner=True)

    def _wrap(self, name: str, label: str, phase: str | None = None, inner: bool = False) -> None:
        fn = getattr(self.gan, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if inner and self.phase != "opt":
                return fn(*args, **kwargs)
            old = self.phase
            self.phase = phase or old
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                key = f"opt: {label}" if inner else label
                self.wall[key] += time.perf_counter() - w
                self.cpu[key] += time.process_time() - c
                self.phase = old

        object.__setattr__(self.gan, name, timed)

    def unwrap(self) -> None:
        for name in ("_features", "_best_start", "_loss_grad", "_optimise", "_render", "_loss"):
            del self.gan.__dict__[name]

    def run(self, fn: Callable[[], Any]) -> dict[str, Any]:
        self.wall.clear()
        self.cpu.clear()
        load = os.getloadavg()[0]
        b0, o0 = _busy_seconds(), _own_seconds()
        w, c = time.perf_counter(), time.process_time()
        fn()
        total = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}
        b1, o1 = _busy_seconds(), _own_seconds()
        others = None if b0 is None or b1 is None else (b1 - b0 - (o1 - o0)) / total["wall"]
        parts = {}
        for clock, t in (("wall", self.wall), ("cpu", self.cpu)):
            fwd = t["opt: generator fwd"] + t["opt: features fwd + loss"]
            rows = {"best-of-K starts": t["best-of-K starts"], "target features": t["target features"],
                    "opt: generator fwd": t["opt: generator fwd"],
                    "opt: features fwd + loss": t["opt: features fwd + loss"],
                    "opt: backward (generator + features)": t["opt: loss + grad"] - fwd,
                    "opt: Adam step, bookkeeping, Python": t["opt: total"] - t["opt: loss + grad"]}
            rows["final projection, report, other"] = total[clock] - sum(rows.values())
            parts[clock] = rows
        return {"total": total, "parts": parts, "load_average_1min": load, "other_processes_cores": others}


def speed(gan: GANGenerator, x: torch.Tensor, per_image_n: int, threads: int, budget_s: float = 600.0,
          quiet_s: float = 0.0) -> dict[str, Any]:
    """Batched inversion of ``x`` vs one image at a time on an evenly spaced subset, with the same settings.

    The one-at-a-time images go in a seeded random order and stop after ``budget_s`` seconds (the
    average is over the images done). With ``quiet_s``, each run first waits up to that long for other
    processes to leave the CPU; ``other_processes_cores`` records how busy they kept it during each run.
    """
    torch.set_num_threads(threads)
    timers = Timers(gan)
    gan.project(x[:2])  # warm-up: fused copies, kernels
    steps: dict[str, float] = {}
    done: list[torch.Tensor] = []

    def batched() -> None:
        steps["batched"] = float(gan.project(x).n_steps.float().mean())

    idx = torch.linspace(0, len(x) - 1, min(per_image_n, len(x))).long()
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))]

    def single() -> None:
        t0 = time.perf_counter()
        for i in idx:
            done.append(gan.project(x[i : i + 1]).n_steps)
            if time.perf_counter() - t0 > budget_s:
                break
        steps["per_image"] = float(torch.cat(done).float().mean())

    wait_quiet(quiet_s)
    rb = timers.run(batched)
    wait_quiet(quiet_s)
    rs = timers.run(single)
    timers.unwrap()
    out: dict[str, Any] = {"threads": threads, "batched_n": len(x), "per_image_n": len(done)}
    for name, r, n in (("batched", rb, len(x)), ("per_image", rs, len(done))):
        out[name] = {
            "ms_per_image_wall": 1000 * r["total"]["wall"] / n, "ms_per_image_cpu": 1000 * r["total"]["cpu"] / n,
            "mean_steps": steps[name],
            "ms_per_image_step_wall": 1000 * r["total"]["wall"] / n / steps[name],
            "load_average_1min": r["load_average_1min"],
            "other_processes_cores": r["other_processes_cores"],
            "ms_per_image_by_part_wall": {k: 1000 * v / n for k, v in r["parts"]["wall"].items()},
            "ms_per_image_by_part_cpu": {k: 1000 * v / n for k, v in r["parts"]["cpu"].items()},
        }
    out["speedup_wall"] = out["per_image"]["ms_per_image_wall"] / out["batched"]["ms_per_image_wall"]
    out["speedup_cpu"] = out["per_image"]["ms_per_image_cpu"] / out["batched"]["ms_per_image_cpu"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the accuracy runs")
    p.add_argument("--speed-n", type=int, default=200, help="digits inverted in one batch for the speed test")
    p.add_argument("--per-image-n", type=int, default=40, help="of those, inverted one at a time")
    p.add_argument("--speed-threads", default="1,2", help="thread counts of the speed test (CPU)")
    p.add_argument("--speed-repeats", type=int, default=1, help="speed runs per thread count")
    p.add_argument("--per-image-budget-s", type=float, default=300.0,
                   help="stop the one-at-a-time run after this long (per thread count)")
    p.add_argument("--wait-quiet-s", type=float, default=0.0,
                   help="before each speed run, wait up to this long for other processes to leave the CPU")
    p.add_argument("--speed-only", action="store_true",
                   help="run only the speed test and replace its rows (same thread counts) in the output file")
    p.add_argument("--z-n", type=int, default=100, help="digits for the z-space comparison")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    x, y = load_mnist("test")
    idx = torch.linspace(0, len(x) - 1, a.n).long()  # evenly spaced: the test split is class-sorted
    x, y = x[idx].to(device), y[idx].to(device)
    xtr = load_mnist("train")[0].to(device)
    g = torch.Generator().manual_seed(0)
    tgt = ((y.cpu() + torch.randint(1, 10, y.shape, generator=g)) % 10).to(device)
    clf = load_pretrained("mnist-classifier").to(device)
    oracle = load_pretrained("mnist-oracle").to(device)
    feats = mnist_features().to(device)
    vae = load_generator("mnist-vae").to(device)
    gan = load_generator("mnist-gan").to(device)
    gan_z = GANGenerator(gan.generator, latent_space="z", image_shape=(1, 28, 28),
                         feature_network=gan.feature_network, error_threshold=gan.error_threshold).eval().to(device)
    out_path = Path(a.out) if a.out else Path(__file__).parent / "results" / f"gan_inversion_{device.type}.json"
    sidx = torch.linspace(0, a.n - 1, min(a.speed_n, a.n)).long()
    thread_counts = [int(t) for t in a.speed_threads.split(",")] if device.type == "cpu" else [a.threads]

    def speed_rows() -> list[dict[str, Any]]:
        rows = [{**speed(gan, x[sidx], a.per_image_n, t, a.per_image_budget_s, a.wait_quiet_s), "repeat": r}
                for t in thread_counts for r in range(a.speed_repeats)]
        torch.set_num_threads(a.threads)
        return rows

    if a.speed_only:
        result = json.loads(out_path.read_text())
        new = speed_rows()
        result["speed"] = sorted([r for r in result.get("speed", []) if r["threads"] not in thread_counts] + new,
                                 key=lambda r: (r["threads"], r.get("repeat", 0)))
        out_path.write_text(json.dumps(result, indent=2) + "\n")
        print(table(result))
        return
    real_knn = knn_distance(x, xtr, feats).value

    # ---------------------------------------------------------------- encoding
    enc_rows = []
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        rec = vae.reconstruct(x)
    sync(device)
    vae_mse = float((rec - x).flatten(1).pow(2).mean(1).median())
    enc_rows.append({"generator": "mnist-vae (posterior mean)", "median_mse": vae_mse,
                     "classifier_accuracy": acc(clf, rec, y), "oracle_accuracy": acc(oracle, rec, y),
                     "flagged": 0.0, "mean_steps": 0.0, "seconds": time.perf_counter() - t0})
    zsub = torch.arange(0, a.n, max(1, a.n // a.z_n))[: a.z_n]
    for name, G, sub in (("mnist-gan, W space", gan, torch.arange(a.n)),
                         (f"mnist-gan, z space ({len(zsub)} digits)", gan_z, zsub)):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = G.project(x[sub])
        sync(device)
        enc_rows.append({"generator": name, "median_mse": float(out.error.median()),
                         "classifier_accuracy": acc(clf, out.projections, y[sub]),
                         "oracle_accuracy": acc(oracle, out.projections, y[sub]),
                         "flagged": float((~out.ok).float().mean()), "mean_steps": float(out.n_steps.float().mean()),
                         "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0})

    # ---------------------------------------------------------------- speed: batched vs one image at a time
    speed_results = speed_rows()

    # ---------------------------------------------------------------- counterfactuals
    cf_rows = []
    for name, G in (("mnist-vae", vae), ("mnist-gan (W)", gan)):
        attack = LatentCounterfactualAttack(clf, G)
        sync(device)
        t0 = time.perf_counter()
        out = attack.generate(x, target=tgt)
        sync(device)
        dt = time.perf_counter() - t0
        cf = out.counterfactuals
        ok = out.projection_ok if out.projection_ok is not None else torch.ones_like(out.success)
        cf_rows.append({
            "generator": name,
            "flip_rate": out.success_rate,
            "oracle_agreement": oracle_agreement(oracle, cf, tgt, out.success).value,
            "oracle_agreement_on_ok_projections": oracle_agreement(oracle, cf[ok], tgt[ok], out.success[ok]).value,
            "l2_pixels_median": proximity(cf, x).value,
            "knn5_ratio_to_real": knn_distance(cf, xtr, feats).value / real_knn,
            "projection_ok": float(ok.float().mean()),
            "mean_steps": float(out.n_steps.float().mean()),
            "seconds_with_encoding": dt,
            "counterfactuals_per_second": a.n / dt,
        })

    result = {
        "benchmark": "gan_inversion",
        "captum_cfx_version": captum_cfx.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "n": a.n,
        "threads": a.threads,
        "load_average_1min_at_end": os.getloadavg()[0],
        "gan_settings": {"num_starts": gan.num_starts, "steps": gan.steps, "lr": gan.lr, "tol": gan.tol,
                         "patience": gan.patience, "feature_weight": gan.feature_weight,
                         "error_threshold": gan.error_threshold},
        "encoding": enc_rows,
        "speed": speed_results,
        "real_test_digits_knn5_median": real_knn,
        "counterfactuals": cf_rows,
    }
    diffae = Path(__file__).parent / "results" / "diffae_cpu.json"
    if diffae.exists():  # the diffusion autoencoder's figures, from its own benchmark run
        d = json.loads(diffae.read_text())
        result["diffae_reference"] = {"source": "benchmarks/results/diffae_cpu.json", "n": d["attack"]["n"],
                                      "reconstruction_mse": d["reconstruction"]["diffae"]["mse"],
                                      "reconstruction_classifier_accuracy":
                                          d["reconstruction"]["diffae"]["classifier_accuracy"],
                                      **{k: d["attack"]["diffae"][k] for k in
                                         ("flip_rate", "oracle_agreement", "knn5_ratio")}}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print()
    print(table(result))


def _cores(row: dict) -> str:
    c = row.get("other_processes_cores")
    return "?" if c is None else f"{c:.2f}"


def table(r: dict) -> str:
    lines = [f"device: {r['device']}, n = {r['n']}", "",
             "| encoding | median MSE | classifier acc | oracle acc | flagged | mean steps | seconds |",
             "|---|---|---|---|---|---|---|"]
    for m in r["encoding"]:
        lines.append(f"| {m['generator']} | {m['median_mse']:.4f} | {m['classifier_accuracy']:.1%} "
                     f"| {m['oracle_accuracy']:.1%} | {m['flagged']:.1%} | {m['mean_steps']:.0f} "
                     f"| {m['seconds']:.1f} |")
    lines += ["", "| threads | batched ms/image (wall / CPU) | one at a time ms/image (wall / CPU) "
              "| speed-up (wall / CPU) | ms per image-step, batched / one | other processes' cores |",
              "|---|---|---|---|---|---|"]
    for sp in r["speed"]:
        b, o = sp["batched"], sp["per_image"]
        lines.append(f"| {sp['threads']} | {b['ms_per_image_wall']:.0f} / {b['ms_per_image_cpu']:.0f} "
                     f"| {o['ms_per_image_wall']:.0f} / {o['ms_per_image_cpu']:.0f} "
                     f"| {sp['speedup_wall']:.1f}x / {sp['speedup_cpu']:.1f}x "
                     f"| {b['ms_per_image_step_wall']:.2f} / {o['ms_per_image_step_wall']:.2f} "
                     f"| {_cores(b)}, {_cores(o)} |")
    for sp in (sp for sp in r["speed"] if sp.get("repeat", 0) == 0):
        lines += ["", f"where the time goes, {sp['threads']} thread(s), ms/image (wall): batched "
                  f"({sp['batched_n']} digits) | one at a time ({sp['per_image_n']} digits)"]
        for k, v in sp["batched"]["ms_per_image_by_part_wall"].items():
            lines.append(f"  {k:40s} {v:8.1f} | {sp['per_image']['ms_per_image_by_part_wall'][k]:8.1f}")
    lines += [              "", "| counterfactuals via | flip | oracle agreement | on ok projections | L2 pixels "
              "| 5-NN ratio to real | CF/s (incl. encoding) |", "|---|---|---|---|---|---|---|"]
    for m in r["counterfactuals"]:
        lines.append(f"| {m['generator']} | {m['flip_rate']:.1%} | {m['oracle_agreement']:.1%} "
                     f"| {m['oracle_agreement_on_ok_projections']:.1%} | {m['l2_pixels_median']:.2f} "
                     f"| {m['knn5_ratio_to_real']:.2f} | {m['counterfactuals_per_second']:.1f} |")
    if "diffae_reference" in r:
        d = r["diffae_reference"]
        lines.append(f"| mnist-diffae ({d['source']}, n = {d['n']}) | {d['flip_rate']:.1%} "
                     f"| {d['oracle_agreement']:.1%} | - | - | {d['knn5_ratio']:.2f} | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
