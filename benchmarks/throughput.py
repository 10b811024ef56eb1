"""Throughput of the latent attack: counterfactuals per second vs images and ``max_batch``, refilling on/off.

Measured in one run, on the embedded MNIST test digits (1,000; repeated for larger N, as the issue allows),
seeded random targets different from the label (the first 1,000 are ``benchmarks/latent_attack.py``'s):

- **grid** (``--grid N:B,...``): for each N, one batch of N compacted as samples finish (the default), and
  for each B < N: *compaction alone* (``internal_batch_size=B``: chunks of B, each ending in its own tail)
  and *refilling* (``max_batch=B``: B in flight, finished samples replaced by waiting ones). Per row: seconds,
  counterfactuals per second, flip rate, oracle agreement (over all samples, failures count as
  disagreement), mean steps, passes and the **roofline**: the time of the same number of decoder +
  classifier passes at full batch B (forward+backward for the gradient passes, forward for the last ones,
  encode+decode+classify for the admissions), replayed in this run (``--replay`` passes of each kind are
  timed and multiplied by the counts), and the ratio of the run to it;
- **check_every** (``--check-every``): stops decided and the batch compacted every k steps (the finished ride
  along frozen in between) at the first grid size, one batch and refilling;
- **autocast** (``--autocast``): bf16 ``torch.autocast`` at the first grid size: speed, flip, oracle agreement
  and how many success flags equal full precision's;
- **one image at a time** (``--per-image-n``): the reference code's loop, for the batched/per-image ratio;
- **data-set run** (``--dataset-n``): ``run_sharded`` + ``make_explain_fn`` (what ``captum-cfx explain --data``
  runs) over a seeded permutation of the repeated digits in shards of ``--shard-size``: each shard one batch
  (compaction alone; every shard ends in a long tail) vs refilling groups of ``--group-shards`` shards with
  ``max_batch = shard size`` (same memory);
- **quality gates** on the 1,000 test digits: flip >= 99 %, oracle agreement >= 95 %, default and refilling.

Times are wall-clock seconds, or with ``--clock cpu`` the process's CPU seconds: on a shared CPU machine
at one thread that is the time the run computed, whatever else the machine was doing (the committed CPU
figures; a GPU run uses the wall clock).

The JSON is rewritten after every section (a run cut short keeps what it measured).

    python benchmarks/throughput.py --threads 1 --clock cpu --autocast   # the committed CPU figures
    bash benchmarks/throughput_gpu.sh                                 # one GPU, < 8 minutes (see the script)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import emit

import captum_cfx
from captum_cfx import LatentCounterfactualAttack
from captum_cfx.datasets import load_mnist
from captum_cfx.metrics import oracle_agreement
from captum_cfx.runner import RunConfig, make_explain_fn, run_sharded
from captum_cfx.zoo import load_generator, load_pretrained

GATES = {"flip_rate": 0.99, "oracle_agreement": 0.95}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: the clock of every figure: wall time, or on a shared CPU the process's CPU time (``--clock cpu``: at one
#: thread it is the time the run itself computed, not the time other people's jobs took from it)
CLOCK = {"now": time.perf_counter}


def now() -> float:
    return CLOCK["now"]()


def digits(n: int, device: torch.device, permute: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` test digits (the 1,000 repeated), labels, and seeded targets different from the label."""
    x, y = load_mnist("test")
    reps = math.ceil(n / len(x))
    x, y = x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]
    if permute:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        x, y = x[order], y[order]
    tgt = (y + torch.randint(1, 10, y.shape, generator=torch.Generator().manual_seed(0))) % 10
    return x.to(device), y.to(device), tgt.to(device)


class Replay:
    """Per-pass times of the bare models at a batch size, measured once and cached."""

    def __init__(self, clf, gen, reps: int, device: torch.device) -> None:
        self.clf, self.gen, self.reps, self.device, self.cache = clf, gen, reps, device, {}

    def per_pass(self, b: int, x: torch.Tensor) -> dict[str, float]:
        if b in self.cache:
            return self.cache[b]
        xb = x[:b] if len(x) >= b else x.repeat(math.ceil(b / len(x)), 1, 1, 1)[:b]
        with torch.no_grad():
            lat = self.gen.encode(xb)
        z = lat.free.detach()

        def grad_pass() -> None:
            zr = z.detach().requires_grad_()
            torch.autograd.grad(self.clf(self.gen.decode(lat.replace(zr)))[:, 0].sum(), zr)

        def fwd_pass() -> None:
            with torch.no_grad():
                self.clf(self.gen.decode(lat))

        def admit_pass() -> None:
            with torch.no_grad():
                la = self.gen.encode(xb)
                self.clf(self.gen.decode(la))
                self.clf(xb)

        out = {}
        for name, fn in (("grad", grad_pass), ("forward", fwd_pass), ("admit", admit_pass)):
            fn()  # warm-up
            sync(self.device)
            t0 = now()
            for _ in range(self.reps):
                fn()
            sync(self.device)
            out[name] = (now() - t0) / self.reps
        self.cache[b] = out
        return out

    def seconds(self, b: int, x: torch.Tensor, sizes: list[tuple[int, bool]], n: int) -> dict[str, float]:
        """The roofline of a run: its sample-passes at full batch ``b``."""
        per = self.per_pass(b, x)
        grad = sum(s for s, g in sizes if g)
        fwd = sum(s for s, g in sizes if not g)
        passes = {"grad": math.ceil(grad / b), "forward": math.ceil(fwd / b), "admit": math.ceil(n / b)}
        return {"roofline_seconds": sum(per[k] * passes[k] for k in passes),
                "roofline_passes": passes, "sample_passes": grad + fwd}


def timed_generate(attack, x, tgt, device, **kw) -> tuple[Any, float]:
    sync(device)
    t0 = now()
    out = attack.generate(x, target=tgt, **kw)
    sync(device)
    return out, now() - t0


def row(name: str, b: int, out, secs: float, x, tgt, oracle, replay: Replay | None, **extra) -> dict:
    n = len(x)
    r = {"mode": name, "n": n, "max_batch": b, "seconds": secs, "counterfactuals_per_second": n / secs,
         "flip_rate": out.success_rate,
         "oracle_agreement": oracle_agreement(oracle, out.counterfactuals.detach(), tgt, out.success).value,
         "mean_steps": float(out.n_steps.float().mean()), "passes": len(out.active_batch_sizes), **extra}
    if replay is not None:
        r.update(replay.seconds(b, x, out.active_batch_sizes, n))
        r["ratio_to_roofline"] = secs / r["roofline_seconds"]
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (the CPU figures: 1)")
    p.add_argument("--generator", default="mnist-vae", help="zoo generator: mnist-vae or mnist-diffae")
    p.add_argument("--weights-dir", default=None, help="zoo folder (default: the package's)")
    p.add_argument("--grid", default="1000:100,1000:250,10000:250", help="N:max_batch pairs")
    p.add_argument("--modes", default="one,chunks,refill",
                   help="grid rows to run: one (one batch of N), chunks (compaction alone), refill")
    p.add_argument("--check-every", default="4", help="k values (> 1) to measure; empty: skip")
    p.add_argument("--autocast", action="store_true", help="measure bf16 autocast")
    p.add_argument("--per-image-n", type=int, default=50, help="digits run one at a time (0: skip)")
    p.add_argument("--dataset-n", type=int, default=10000, help="digits of the data-set run (0: skip)")
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--group-shards", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="default: the attack's (500)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam step (default: the attack's 0.3; for mnist-diffae 0.3 x the std of z_sem)")
    p.add_argument("--ddim-steps", type=int, default=20, help="mnist-diffae decoding steps")
    p.add_argument("--replay", type=int, default=20, help="passes of each kind timed for the roofline")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or the process's CPU time (a busy shared CPU machine, one thread)")
    p.add_argument("--sections", default="grid,check_every,autocast,per_image,dataset",
                   help="sections to run (the others are kept from --out's JSON when it exists)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    sections = {v.strip() for v in a.sections.split(",") if v.strip()}
    if a.clock == "cpu":
        CLOCK["now"] = time.process_time
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    clf = load_pretrained("mnist-classifier").to(device)
    oracle = load_pretrained("mnist-oracle").to(device)
    gen = load_generator(a.generator, a.weights_dir).to(device)
    settings: dict[str, Any] = {}
    if a.max_steps is not None:
        settings["max_steps"] = a.max_steps
    if a.generator == "mnist-diffae":
        gen.sampler.num_inference_steps = a.ddim_steps
        gen.sampler.checkpoint = False
        if a.lr is None:
            with torch.no_grad():
                a.lr = 0.3 * float(gen.encode_semantic(digits(500, device)[0]).std(0).mean())
    if a.lr is not None:
        settings["lr"] = a.lr
    attack = LatentCounterfactualAttack(clf, gen)
    grid = [tuple(int(v) for v in pair.split(":")) for pair in a.grid.split(",") if pair]
    modes = {m.strip() for m in a.modes.split(",") if m.strip()}
    if not modes <= {"one", "chunks", "refill"}:
        raise SystemExit(f"--modes must be a subset of one,chunks,refill; got {a.modes!r}")
    sizes = sorted({n for n, _ in grid})
    name = f"throughput_{device.type}" + ("" if a.generator == "mnist-vae" else f"_{a.generator.split('-')[-1]}")
    out_path = Path(a.out) if a.out else Path(__file__).parent / "results" / f"{name}.json"
    res: dict[str, Any] = {
        "benchmark": "throughput", "captum_cfx_version": captum_cfx.__version__, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "generator": a.generator, "settings": {**vars(a), **settings}, "grid": [], "check_every": [],
        "autocast": None, "per_image": None, "dataset_run": None, "gates": {}}
    if sections != {"grid", "check_every", "autocast", "per_image", "dataset"} and out_path.is_file():
        kept = json.loads(out_path.read_text())  # sections not run now keep their figures and settings
        res = {**kept, "invocations": [*kept.get("invocations", [kept["settings"]]), {**vars(a), **settings}]}
    replay = Replay(clf, gen, a.replay, device)
    x0, _, t0_ = digits(64, device)
    attack.generate(x0, target=t0_, max_steps=3)  # warm-up: kernel selection, allocator

    # ---- the grid: one batch, compaction alone in chunks of B, refilling with B in flight
    for n in sizes if "grid" in sections else []:
        x, _, tgt = digits(n, device)
        if "one" in modes:
            out, secs = timed_generate(attack, x, tgt, device, **settings)
            res["grid"].append(row("one batch (compaction)", n, out, secs, x, tgt, oracle, replay))
            if n == sizes[0]:
                res["gates"]["one batch"] = {k: res["grid"][-1][k] for k in GATES}
        for nb, b in grid:
            if nb != n or b >= n:
                continue
            ref = None
            if "chunks" in modes:
                ref, secs_c = timed_generate(attack, x, tgt, device, internal_batch_size=b, **settings)
                res["grid"].append(row("compaction alone (chunks)", b, ref, secs_c, x, tgt, oracle, replay))
            if "refill" in modes:
                out, secs = timed_generate(attack, x, tgt, device, max_batch=b, **settings)
                extra = {} if ref is None else {
                    "same_success_as_chunks": float((out.success == ref.success).float().mean()),
                    "same_steps_as_chunks": float((out.n_steps == ref.n_steps).float().mean()),
                    "speedup_vs_chunks": secs_c / secs}
                res["grid"].append(row("refilling", b, out, secs, x, tgt, oracle, replay, **extra))
                if n == sizes[0]:
                    res["gates"][f"refilling B={b}"] = {k: res["grid"][-1][k] for k in GATES}
            emit(res, out_path, table)
        emit(res, out_path, table)

    # ---- fewer host syncs: compact every k steps
    n0 = sizes[0]
    x, _, tgt = digits(n0, device)
    b0 = min((b for nb, b in grid if nb == n0 and b < n0), default=None)
    ks = [int(v) for v in a.check_every.split(",") if v.strip() and int(v) > 1] if "check_every" in sections else []
    for k in ks:
        for b in [n0] + ([b0] if b0 else []):
            kw = {"max_batch": b} if b < n0 else {}
            out, secs = timed_generate(attack, x, tgt, device, check_every=k, **kw, **settings)
            base = next((r for r in res["grid"] if r["n"] == n0 and r["max_batch"] == b
                         and r["mode"] in ("one batch (compaction)", "refilling")), None)
            res["check_every"].append({**row(f"check_every={k}", b, out, secs, x, tgt, oracle, replay), "k": k,
                                       "speedup_vs_k1": base["seconds"] / secs if base else None})
    emit(res, out_path, table)

    # ---- mixed precision
    if a.autocast and "autocast" in sections:
        ref, secs_ref = timed_generate(attack, x, tgt, device, **settings)
        out, secs = timed_generate(attack, x, tgt, device, autocast=torch.bfloat16, **settings)
        res["autocast"] = {**row("bf16 autocast, one batch", n0, out, secs, x, tgt, oracle, None),
                           "full_precision_seconds": secs_ref, "speedup_vs_full_precision": secs_ref / secs,
                           "same_success_as_full_precision": float((out.success == ref.success).float().mean())}
        emit(res, out_path, table)

    # ---- one image at a time
    if a.per_image_n and "per_image" in sections:
        m = min(a.per_image_n, n0)
        sync(device)
        t0 = now()
        singles = [attack.generate(x[i : i + 1], target=tgt[i : i + 1], **settings) for i in range(m)]
        sync(device)
        secs = now() - t0
        best = max((r["counterfactuals_per_second"] for r in res["grid"]), default=float("nan"))
        res["per_image"] = {"n": m, "seconds": secs, "counterfactuals_per_second": m / secs,
                            "flip_rate": float(torch.cat([s.success for s in singles]).float().mean()),
                            "best_batched_counterfactuals_per_second": best,
                            "speedup_best_batched_vs_per_image": best / (m / secs)}
        emit(res, out_path, table)

    # ---- a data-set run whose batches end in long tails: shard by shard vs refilling groups
    if a.dataset_n and "dataset" in sections:
        xd, yd, _ = digits(a.dataset_n, torch.device("cpu"), permute=True)
        runs = {}
        with tempfile.TemporaryDirectory() as tmp:
            np.savez(Path(tmp) / "digits.npz", images=xd.numpy(), labels=yd.numpy())
            for mode, extra in (("compaction alone (each shard one batch)", {}),
                                ("refilling", {"max_batch": a.shard_size, "group_shards": a.group_shards})):
                cfg = RunConfig(data=str(Path(tmp) / "digits.npz"), shard_size=a.shard_size,
                                threads=torch.get_num_threads(), **({"max_steps": a.max_steps} if a.max_steps else {}),
                                **extra)
                fn = make_explain_fn(clf, gen, oracle, cfg, device=device)
                sync(device)
                t0 = now()
                s = run_sharded(cfg, Path(tmp) / mode.split()[0], fn, progress=False)
                sync(device)
                secs = now() - t0
                runs[mode] = {"seconds": secs, "counterfactuals_per_second": s["n_valid"] / secs,
                              "flip_rate": s["flip_rate"], "oracle_agreement": s["oracle_agreement"],
                              "mean_steps": s["mean_steps"], **extra}
        c, r = runs.values()
        res["dataset_run"] = {"n": a.dataset_n, "shard_size": a.shard_size, "runs": runs,
                              "speedup_refilling": c["seconds"] / r["seconds"]}
        emit(res, out_path, table)

    res["gates"] = {k: {**v, "pass": all(v[g] >= t for g, t in GATES.items())} for k, v in res["gates"].items()}
    emit(res, out_path, table)


def table(r: dict) -> str:
    lines = [f"device: {r['device']}; generator: {r['generator']}; clock: {r['settings']['clock']} time", "",
             "| N | mode | max_batch | CF/s | seconds | flip | oracle | mean steps | passes | roofline s | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in r["grid"] + r["check_every"]:
        lines.append(f"| {g['n']} | {g['mode']} | {g['max_batch']} | {g['counterfactuals_per_second']:.1f} "
                     f"| {g['seconds']:.1f} | {g['flip_rate']:.1%} | {g['oracle_agreement']:.1%} "
                     f"| {g['mean_steps']:.1f} | {g['passes']} | {g.get('roofline_seconds', float('nan')):.1f} "
                     f"| {g.get('ratio_to_roofline', float('nan')):.2f} |")
    for g in r["grid"]:
        if "speedup_vs_chunks" in g:
            lines.append(f"\nrefilling vs compaction alone, N={g['n']}, B={g['max_batch']}: "
                         f"{g['speedup_vs_chunks']:.2f}x (same success flags {g['same_success_as_chunks']:.1%})")
    if r["autocast"]:
        ac = r["autocast"]
        lines.append(f"\nbf16 autocast: {ac['counterfactuals_per_second']:.1f} CF/s "
                     f"({ac['speedup_vs_full_precision']:.2f}x), "
                     f"flip {ac['flip_rate']:.1%}, oracle {ac['oracle_agreement']:.1%}, "
                     f"same success flags {ac['same_success_as_full_precision']:.1%}")
    if r["per_image"]:
        pi = r["per_image"]
        lines.append(f"\none image at a time: {pi['counterfactuals_per_second']:.1f} CF/s over {pi['n']}; best batched "
                     f"{pi['best_batched_counterfactuals_per_second']:.1f} CF/s = "
                     f"{pi['speedup_best_batched_vs_per_image']:.1f}x")
    if r["dataset_run"]:
        d = r["dataset_run"]
        lines += ["", f"data-set run, {d['n']} digits, shards of {d['shard_size']}:", "",
                  "| mode | CF/s | seconds | flip | oracle | mean steps |", "|---|---|---|---|---|---|"]
        for mode, v in d["runs"].items():
            lines.append(f"| {mode} | {v['counterfactuals_per_second']:.1f} | {v['seconds']:.1f} "
                         f"| {v['flip_rate']:.1%} | {v['oracle_agreement']:.1%} | {v['mean_steps']:.1f} |")
        lines.append(f"\nrefilling vs shard by shard: {d['speedup_refilling']:.2f}x")
    if r["gates"]:
        lines.append("\nquality gates (flip >= 99 %, oracle >= 95 %): " + "; ".join(
            f"{k}: flip {v['flip_rate']:.1%}, oracle {v['oracle_agreement']:.1%}"
            + (f" {'PASS' if v['pass'] else 'FAIL'}" if "pass" in v else "") for k, v in r["gates"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
