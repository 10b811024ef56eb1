"""The ``captum-cfx`` command. Argument parsing and wiring only; the work happens in the library."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import typing
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import captum_cfx

DEFAULT_N = 100  # test digits explained by `captum-cfx explain` with no arguments
DEFAULT_SEED = 0
#: short names for the shipped MNIST generators (`--generator vae|gan|diffae`)
GENERATOR_ALIASES = {"vae": "mnist-vae", "gan": "mnist-gan", "diffae": "mnist-diffae"}


def load_factory(spec: str, argument: str) -> Any:
    """Call a ``module:factory`` path and return what it builds. The module is imported as ``python -m`` would:
    from the current directory first (no ``PYTHONPATH=.`` needed), then the installed packages."""
    if ":" not in spec:
        raise ValueError(f"`{argument}` must be 'module:factory' (e.g. mypkg.models:build); got {spec!r}")
    mod_name, fn_name = spec.split(":", 1)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # as `python -m` does; it stays for the factory's own imports
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"`{argument}`: cannot import module {mod_name!r} from {cwd!r} or the installed "
                         f"packages ({e})") from e
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"`{argument}`: {mod_name!r} has no callable {fn_name!r}")
    return fn()


def build_model(spec: str | None) -> torch.nn.Module | Callable[..., torch.Tensor]:
    from captum_cfx.zoo import load_pretrained

    if spec is None:
        return load_pretrained("mnist-classifier")
    model = load_factory(spec, "--model")
    if not callable(model):
        raise ValueError(f"`--model` factory must return a callable model; got {type(model).__name__}")
    return model


def build_generator(spec: str | None) -> captum_cfx.LatentGenerator:
    from captum_cfx.generators import DiffusersVAEGenerator, LatentGenerator, VAEGenerator
    from captum_cfx.zoo import load_generator

    if spec is None:
        return load_generator("mnist-vae")
    if Path(spec).is_dir():  # the image shape is read from the data (diffusers' sample_size is only a hint)
        return DiffusersVAEGenerator.from_pretrained(spec)
    if ":" not in spec:
        try:
            return load_generator(GENERATOR_ALIASES.get(spec, spec))
        except (ValueError, TypeError) as e:
            raise ValueError(f"`--generator` must be module:factory, a diffusers model folder, one of "
                             f"{sorted(GENERATOR_ALIASES)} or a zoo generator name; got {spec!r} ({e})") from None
    gen = load_factory(spec, "--generator")
    if isinstance(gen, LatentGenerator):
        return gen
    if isinstance(gen, torch.nn.Module):
        return VAEGenerator(gen)  # any image shape: the VAE's own checks apply
    raise ValueError(f"`--generator` factory must return a LatentGenerator or a VAE module; got {type(gen).__name__}")


def choose_targets(labels: torch.Tensor, spec: str, seed: int, num_classes: int) -> torch.Tensor:
    """``--target``: ``random`` (seeded, never the label), ``next`` (label + 1 mod K) or a class index, for a
    ``num_classes``-way model (see :func:`captum_cfx.objectives.choose_targets`)."""
    from captum_cfx.objectives import choose_targets as choose

    try:
        return choose(labels, spec, seed, num_classes)
    except ValueError as e:
        raise ValueError(str(e).replace("`target`", "`--target`", 1)) from None


def select_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test digits in class-interleaved order (0, 1, ..., 9, 0, 1, ...)."""
    from captum_cfx.datasets import interleaved_mnist, load_mnist

    n_test = len(load_mnist("test")[1])
    if not 0 < n <= n_test:
        raise ValueError(f"`--n` must be in 1..{n_test}; got {n}")
    return interleaved_mnist(n)


def num_classes(model: Callable[..., torch.Tensor], x: torch.Tensor) -> int:
    """K, the width of a classifier's output on a probe batch ``x``."""
    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"`--model` must return (N, K) class logits with K >= 2; got {got}")
    return int(out.shape[1])


def model_task(model: Callable[..., torch.Tensor], x: torch.Tensor, task: str, k: int | None) -> tuple[str, int]:
    """``(task, K)`` from the model's output on a probe batch: ``(N, K)`` with K >= 2 is a classifier, ``(N,)``
    or ``(N, 1)`` a regressor (K = 1). ``task`` other than ``auto`` and ``k`` (``--num-classes``) are checked
    against it."""
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as e:  # a shape mismatch, most often: name the images it was given
        raise ValueError(f"`--model` fails on the data's images, read as {tuple(x.shape[1:])} (see --image-shape, "
                         f"--pixel-range): {type(e).__name__}: {e}") from e
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape is None or out.dim() not in (1, 2) or shape[0] != len(x):
        got = shape if shape is not None else type(out).__name__
        raise ValueError(f"`--model` must return (N, K) class logits or (N,) / (N, 1) regression values for N "
                         f"images; got {got}")
    found = "classification" if out.dim() == 2 and shape[1] >= 2 else "regression"
    width = shape[1] if found == "classification" else 1
    if task != "auto" and task != found:
        raise ValueError(f"`--task {task}` needs a model with "
                         f"{'(N, K >= 2) logits' if task == 'classification' else '(N,) or (N, 1) values'}; "
                         f"`--model` returns {shape}")
    if k is not None and k != width:
        raise ValueError(f"`--num-classes` {k} does not match the model's output width {width} (shape {shape})")
    return found, width


def parse_numbers(text: str | None, flag: str, count: int, integer: bool = False) -> tuple[Any, ...] | None:
    """``"3,64,64"`` / ``"0,1"``: ``count`` comma-separated numbers (``None`` passes through)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        vals = tuple(int(p) if integer else float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != count or (integer and min(vals) < 1) or not all(v == v and abs(v) != float("inf") for v in vals):
        kind = "positive integers" if integer else "finite numbers"
        raise ValueError(f"`{flag}` must be {count} comma-separated {kind}; got {text!r}")
    if not integer and count == 2 and not vals[0] < vals[1]:
        raise ValueError(f"`{flag}` must be LO,HI with LO < HI; got {text!r}")
    return vals


#: above this many projected seconds (every image running every step), ``explain`` warns before it starts
SLOW_WARNING_S = 300.0


def _step_seconds(model: Any, gen: Any, x: torch.Tensor) -> float:
    """Seconds of one attack step (encode excluded: decode + model + backward) on the batch ``x``."""
    with torch.no_grad():
        z = gen.encode(x)
    t0 = time.perf_counter()
    free = z.free.detach().clone().requires_grad_(True)
    out = model(gen.decode(z.replace(free)))
    out.float().sum().backward()
    return time.perf_counter() - t0


def warn_expected_time(model: Any, gen: Any, x: torch.Tensor, *, n_images: int, max_steps: int,
                       device: torch.device) -> float:
    """Project the attack's time and warn on stderr when ``n_images`` images at up to ``max_steps`` steps would
    take longer than :data:`SLOW_WARNING_S` (diffusion generators on a CPU: hours). Returns the projected
    seconds (an upper bound: samples stop when they reach their goal).

    One step on the first image of ``x`` decides cheaply that a run is fast. Only when that projects past the
    limit is the step timed again on a batch of up to 4 copies (warm, and batched as the run is), so that a
    first call's set-up cost or a batch-of-one kernel does not raise a false alarm.
    """
    probe = x[:1].to(device)
    try:
        step = _step_seconds(model, gen, probe)
        if step * n_images * max_steps > SLOW_WARNING_S:
            k = max(1, min(n_images, 4))
            step = _step_seconds(model, gen, probe.expand(k, *probe.shape[1:]).contiguous()) / k
    except (ValueError, TypeError, RuntimeError):  # an image the run itself will report and skip
        return float("nan")
    projected = step * n_images * max_steps
    if projected > SLOW_WARNING_S:
        hours = projected / 3600
        where = f"on {device.type.upper()}" if device.type != "cpu" else "on the CPU"
        print(f"captum-cfx: warning: {type(gen).__name__} {where}: one attack step takes {step:.2f}s per image, "
              f"so {n_images} image(s) x up to {max_steps} steps may take up to "
              f"{f'{hours:.1f} hours' if hours >= 1 else f'{projected / 60:.0f} minutes'} (fewer when images reach "
              "their target early). Use --device cuda, fewer images (--n / --limit) or --max-steps; diffusion "
              "generators decode through every DDIM step at each attack step.", file=sys.stderr, flush=True)
    return projected


def check_device(spec: str) -> torch.device:
    """``--device``: a torch device that exists on this machine."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"`--device` must be a torch device such as cpu, cuda or cuda:1; got {spec!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`--device` {spec!r}: no CUDA GPU is available to torch on this machine; "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"`--device` {spec!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"`--device` {spec!r}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"`--device` must be cpu, cuda[:i] or mps; got {spec!r}")
    return dev


def check_out(path: str) -> Path:
    """``--out``: a folder we can create or write into (checked before anything is computed or written)."""
    import os

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` {path!r} is a file, not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"`--out` {path!r} is not writable ({str(parent)!r} does not let this user write)")
    return out


def check_explain_args(a: argparse.Namespace) -> None:
    """Every ``explain`` argument that can be checked without loading anything, before anything is written."""
    from captum_cfx._validation import check_float

    check_device(a.device)
    for flag, value, low in (("--n", a.n, 1), ("--max-steps", a.max_steps, 1), ("--threads", a.threads, 1),
                             ("--shard-size", a.shard_size, 1), ("--seed", a.seed, 0)):
        check_float(value, flag, low=low, integer=True)
    if a.limit is not None:
        check_float(a.limit, "--limit", low=1, integer=True)
    check_float(a.margin, "--margin", low=0)
    if a.resume and a.data is None:
        raise ValueError("`--resume` needs `--data` (only data-set runs are sharded and resumable)")
    if a.task != "auto" and a.data is None:
        raise ValueError(f"`--task {a.task}` needs `--data` (without it, explain runs the MNIST digits)")
    for flag, value in (("--labels", a.labels), ("--pixel-range", a.pixel_range), ("--image-shape", a.image_shape),
                        ("--num-classes", a.num_classes)):
        if value is not None and a.data is None:
            raise ValueError(f"`{flag}` needs `--data`")
    parse_numbers(a.pixel_range, "--pixel-range", 2)
    parse_numbers(a.output_range, "--output-range", 2)
    parse_numbers(a.image_shape, "--image-shape", 3, integer=True)
    check_float(a.tolerance, "--tolerance", low=0, low_open=True)
    if a.num_classes is not None:
        check_float(a.num_classes, "--num-classes", low=1, integer=True)
    check_target(a.target, a.task, a.regression_mode)
    check_out(a.out)


def check_target(target: str, task: str, mode: str) -> None:
    """``--target`` for the task: a class spec (``random``, ``next``, an index >= 0; K is checked once the model
    is loaded) or, for a regression run in absolute / relative mode, a number."""
    if task == "regression" or (task == "auto" and target not in ("random", "next")):
        try:
            float(target)
            is_number = float(target) == float(target) and abs(float(target)) != float("inf")
        except ValueError:
            is_number = False
        if task == "regression":
            if mode != "mirror" and not is_number:
                raise ValueError(f"`--target` of a regression run with `--regression-mode {mode}` must be a number "
                                 f"(the value to reach, or the change); got {target!r}")
            return
        if is_number and "." not in target and "e" not in target.lower():
            if int(target) < 0:
                raise ValueError(f"`--target` must be a class index >= 0; got {int(target)}")
            return
        if is_number:
            return  # a number: a regression target once the model shows it is a regressor
        raise ValueError(f"`--target` must be 'random', 'next', a class index or (regression) a number; "
                         f"got {target!r}")
    if target not in ("random", "next"):
        try:
            t = int(target)
        except ValueError:
            raise ValueError(f"`--target` must be 'random', 'next' or a class index; got {target!r}") from None
        if t < 0:
            raise ValueError(f"`--target` must be a class index >= 0; got {t}")


def cmd_explain_data(a: argparse.Namespace) -> int:
    """``explain --data``: a sharded, resumable run over a data set (several ranks under torchrun).

    Nothing about the task is assumed: the image shape comes from ``--image-shape``, else the generator's
    ``image_shape``, else the data; a folder's pixels are mapped to ``--pixel-range``, else the generator's
    ``input_range``; the task and class count come from the model's output on the first image (``(N, K)``
    logits: K classes; ``(N,)`` / ``(N, 1)``: a regressor), checked against ``--task`` / ``--num-classes``."""
    from captum_cfx.datasets.mnist import IMAGE_SHAPE as MNIST_SHAPE
    from captum_cfx.runner import (
        RunConfig,
        local_device,
        make_explain_fn,
        open_data,
        rank_info,
        run_sharded,
        write_run_figures,
    )
    from captum_cfx.zoo import load_pretrained

    device = local_device(a.device)  # "cuda" -> cuda:<local rank> under torchrun / accelerate
    model = build_model(a.model)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    gen = build_generator(a.generator).to(device)
    shape_flag = parse_numbers(a.image_shape, "--image-shape", 3, integer=True)
    pixel_range = parse_numbers(a.pixel_range, "--pixel-range", 2)
    if pixel_range is None and gen.input_range is not None and tuple(gen.input_range) != (0.0, 1.0):
        pixel_range = tuple(gen.input_range)  # a folder's [0, 1] pixels, mapped to what the generator takes
    read_shape = shape_flag if shape_flag is not None else gen.image_shape
    src = open_data(a.data, read_shape, labels=a.labels, pixel_range=pixel_range)
    probe = src.get(0, 1)[0]  # shape, task and class count come from the data and the model
    image_shape = tuple(probe.shape[1:])
    if (a.model is None or a.generator is None) and shape_flag is None:  # the data's own shape, not the preset's
        native = tuple(open_data(a.data, None, labels=a.labels, pixel_range=pixel_range).get(0, 1)[0].shape[1:])
    else:
        native = image_shape
    for flag, spec in (("--model", a.model), ("--generator", a.generator)):
        if spec is None and native != MNIST_SHAPE:  # the defaults are the MNIST presets: digits only
            raise ValueError(f"`{flag}` is required for {'x'.join(map(str, native))} images: its default is "
                             f"the shipped MNIST {flag[2:]} (1x28x28 digits); pass yours as module:factory")
    task, k = model_task(model, probe.nan_to_num().to(device), a.task, a.num_classes)
    check_target(a.target, task, a.regression_mode)
    # the shipped MNIST oracle judges MNIST-shaped classification data only
    oracle = (load_pretrained("mnist-oracle").to(device) if image_shape == MNIST_SHAPE and task == "classification"
              and k == 10 else None)
    cfg = RunConfig(data=a.data, shard_size=a.shard_size, seed=a.seed, target=a.target, margin=a.margin,
                    max_steps=a.max_steps, limit=a.limit, threads=a.threads, task=task,
                    regression_mode=a.regression_mode, tolerance=a.tolerance,
                    output_range=parse_numbers(a.output_range, "--output-range", 2),
                    labels=a.labels, pixel_range=pixel_range, max_batch=a.max_batch,
                    group_shards=a.group_shards).check()
    if task == "classification":
        choose_targets(torch.zeros(1, dtype=torch.long), cfg.target, 0, k)  # validates the value for K classes
    n_images = len(src) if a.limit is None else min(len(src), a.limit)
    if rank_info()[0] == 0 and torch.isfinite(probe).all():
        warn_expected_time(model, gen, probe, n_images=n_images, max_steps=a.max_steps, device=device)
    t0 = time.perf_counter()
    summary = run_sharded(cfg, a.out, make_explain_fn(model, gen, oracle, cfg, device=device), resume=a.resume,
                          progress=not a.no_progress, image_shape=read_shape)
    if rank_info()[0] == 0:
        if summary["n_valid"]:
            write_run_figures(a.out, gen, cfg, image_shape=read_shape)
        seconds = time.perf_counter() - t0
        if task == "regression":
            what = (f"goal reached (within {cfg.tolerance:g}) {summary['success_rate']:.1%}, mean |change| of the "
                    f"prediction {summary['mean_abs_change']:.3g}, mean |error| to the goal "
                    f"{summary['mean_abs_error_to_goal']:.3g}")
        else:
            what = f"flip {summary['flip_rate']:.1%} ({k} classes)"
            if oracle is not None:
                what += f", oracle agreement {summary['oracle_agreement']:.1%}"
        print(f"explained {summary['n_valid']} of {summary['n']} images ({task}, {'x'.join(map(str, image_shape))}) "
              f"in {summary['n_shards']} shards ({seconds:.1f}s): {what}; "
              f"{len(summary['problems'])} skipped or unreadable")
        print(f"results: {a.out}/summary.json")
        if summary["n"] and not summary["n_valid"]:
            first = summary["problems"][0] if summary["problems"] else "no problem recorded"
            raise ValueError(f"all {summary['n']} images of `--data` were skipped (first problem: {first}; "
                             f"every one is listed in {a.out}/summary.json)")
    return 0


def cmd_explain(a: argparse.Namespace) -> int:
    check_explain_args(a)
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)  # honoured with and without --data
    try:
        return cmd_explain_data(a) if a.data is not None else _explain_digits(a)
    finally:
        torch.set_num_threads(threads)


def _explain_digits(a: argparse.Namespace) -> int:
    from captum_cfx import LatentCounterfactualAttack
    from captum_cfx.datasets import load_mnist
    from captum_cfx.metrics import domain_fid, knn_distance, oracle_agreement, proximity
    from captum_cfx.report import write_report
    from captum_cfx.zoo import load_pretrained, mnist_features

    device = torch.device(a.device)
    model = build_model(a.model)
    gen = build_generator(a.generator)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
    gen = gen.to(device)
    x, y = select_digits(a.n)  # without --data, the CLI explains MNIST test digits with the MNIST presets
    try:
        k = num_classes(model, x[:1].to(device))
    except RuntimeError as e:  # most often a model of other images: this path explains MNIST digits
        raise ValueError(f"`--model` fails on MNIST digits (1x28x28), which `explain` without `--data` explains; "
                         f"pass your images with --data ({type(e).__name__}: {e})") from e
    targets = choose_targets(y, a.target, a.seed, k)
    warn_expected_time(model, gen, x[:1], n_images=len(x), max_steps=a.max_steps, device=device)
    attack = LatentCounterfactualAttack(model, gen)
    t0 = time.perf_counter()
    out = attack.generate(x.to(device), target=targets.to(device), margin=a.margin, max_steps=a.max_steps,
                          progress=not a.no_progress)
    seconds = time.perf_counter() - t0
    out_cpu = _to_cpu(out)
    oracle = load_pretrained("mnist-oracle")
    feats = mnist_features()
    xtr, _ = load_mnist("train")
    knn_cf = knn_distance(out_cpu.counterfactuals, _training_features(), feats).value
    knn_real = knn_distance(x, _training_features(), feats).value
    metrics: dict[str, Any] = {
        "n": len(x),
        "targets": a.target,
        "flip_rate": out_cpu.success_rate,
        "oracle_agreement": oracle_agreement(oracle, out_cpu.counterfactuals, targets, out_cpu.success).value,
        "knn5_feature_distance_counterfactuals": knn_cf,
        "knn5_feature_distance_real_test": knn_real,
        "knn5_ratio": knn_cf / knn_real,
        "domain_fid": domain_fid(x, out_cpu.counterfactuals, feats) if len(x) >= 10 else float("nan"),
        "median_l2_pixels": proximity(out_cpu.counterfactuals, x).value,
        "median_l2_latent": proximity(out_cpu.latents.free, out_cpu.original_latents.free).value,
        "mean_steps": float(out_cpu.n_steps.float().mean()),
        "median_steps": float(out_cpu.n_steps.float().median()),
        "seconds": seconds,
        "counterfactuals_per_second": len(x) / seconds,
        "device": str(device),
        "margin": a.margin,
        "max_steps": a.max_steps,
        "captum_cfx_version": captum_cfx.__version__,
    }
    from captum_cfx.generators import GANGenerator

    # descriptor probes encode 1,000 training digits; a GAN encodes by optimisation, which takes minutes
    skip_desc = a.no_descriptors or isinstance(gen, GANGenerator)
    desc = None if skip_desc else _explain_descriptors(model, gen, out_cpu, xtr, metrics)
    paths = write_report(Path(a.out), x, y, targets, result=out_cpu, metrics=metrics)
    if desc is not None:
        from captum_cfx.report import append_descriptor_report

        rows = [f"{int(s)}→{int(t)} ({'ok' if ok else 'fail'})" for s, t, ok in zip(y, targets, out_cpu.success)]
        paths.update(append_descriptor_report(Path(a.out), desc[0], desc[1], rows))
    print(f"explained {len(x)} digits in {seconds:.1f}s ({metrics['counterfactuals_per_second']:.0f}/s): "
          f"flip {metrics['flip_rate']:.1%}, oracle agreement {metrics['oracle_agreement']:.1%}, "
          f"kNN realism {metrics['knn5_ratio']:.2f}x real digits, mean steps {metrics['mean_steps']:.1f}")
    print(f"report: {paths['report']}")
    return 0


@lru_cache(maxsize=1)
def _training_features() -> torch.Tensor:
    """``mnist_features()`` of the 4,000 embedded training digits, kNN realism's reference set: both are shipped
    assets, fixed while the process runs, so the 4,000-digit pass is made once (not twice per ``explain``)."""
    from captum_cfx.datasets import load_mnist
    from captum_cfx.zoo import mnist_features

    feats, (xtr, _) = mnist_features(), load_mnist("train")
    with torch.no_grad():
        return torch.cat([feats(xtr[i : i + 1000]) for i in range(0, len(xtr), 1000)])


def _explain_descriptors(model: Any, gen: Any, out_cpu: Any, xtr: torch.Tensor,
                         metrics: dict[str, Any]) -> tuple[Any, Any] | None:
    """Morpho-MNIST descriptor probes on 1,000 training digits, then descriptor deltas of the counterfactuals."""
    from captum_cfx import CounterfactualDescriptorAttribution
    from captum_cfx.descriptors import Morphometry, sign_agreement

    morpho = Morphometry(scale=2)  # 2x upsampling: 5x faster than 4x, same sign agreement (benchmarks)
    aux = xtr[::4]
    cda = CounterfactualDescriptorAttribution(model, gen)
    latents = cda.encode(aux.to(gen.device)).cpu()
    cda.fit(latents=latents, descriptors=morpho(aux), names=morpho.names)
    expl = cda.explain(out_cpu.counterfactuals, counterfactuals=out_cpu)
    glob = cda.global_attribution(out_cpu)  # per (source -> target) transition when each has enough rows
    if int((glob.counts >= 5).sum()) < 3:
        glob = cda.global_attribution(out_cpu, group_by="target")
    metrics["descriptor_probe_scores"] = cda.probes_.scores_
    if bool(out_cpu.success.any()):
        img = cda.measure_images(morpho, out_cpu)
        metrics["descriptor_sign_agreement_top_quartile"] = sign_agreement(expl.deltas, img,
                                                                           mask=out_cpu.success).value
    return (expl, glob) if len(glob.transitions) else None


def _to_cpu(out: Any) -> Any:
    from dataclasses import fields, replace

    kw = {}
    for f in fields(out):
        v = getattr(out, f.name)
        if isinstance(v, torch.Tensor) or hasattr(v, "free"):
            kw[f.name] = v.to("cpu")
    return replace(out, **kw)


def cmd_compare(a: argparse.Namespace) -> int:
    from captum_cfx.compare import DATASETS, run_compare

    datasets = [d.strip() for d in a.datasets.split(",") if d.strip()]
    if not datasets or any(d not in DATASETS for d in datasets):
        raise ValueError(f"`--datasets` must be a comma-separated subset of {','.join(DATASETS)}; got {a.datasets!r}")
    if a.n is not None and a.n < 4:
        raise ValueError(f"`--n` must be >= 4 (sFID splits the images in halves); got {a.n}")
    if a.threads < 1:
        raise ValueError(f"`--threads` must be >= 1; got {a.threads}")
    check_device(a.device)
    check_out(a.out)
    torch.set_num_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    size = "quick" if a.quick else "full" if a.full else "default"
    res = run_compare(a.out, size=size, n=a.n, datasets=datasets, methods=methods,
                      attributions=not a.no_attributions, device=a.device, progress=not a.no_progress)
    rows = sum(len(t["rows"]) for t in res["tasks"].values())
    print(f"compared {rows} method rows on {len(res['tasks'])} tasks ({res['n_per_dataset']} images each) "
          f"in {res['seconds']:.1f}s; {len(res['skipped'])} not run")
    print(f"results: {Path(a.out) / 'compare.md'}")
    return 0


def cmd_convert(a: argparse.Namespace) -> int:
    """``captum-cfx convert diffae CKPT OUT --template NAME``: an official checkpoint to a safetensors folder."""
    import json

    from captum_cfx.generators.diffae_official import convert_diffae_checkpoint

    template: Any = a.template
    if template.endswith(".json"):
        try:
            template = json.loads(Path(template).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"`--template`: cannot read {a.template!r} as a JSON object of TrainConfig "
                             f"fields ({e})") from e
    out = convert_diffae_checkpoint(a.checkpoint, a.out, template=template, ema=not a.no_ema,
                                    num_inference_steps=a.steps)
    print(f"converted {a.checkpoint} ({'model' if a.no_ema else 'ema_model'} weights) to {out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``captum-cfx: error: ...`` and exit status 2 (no usage block)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"captum-cfx: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from captum_cfx.attr.latent_attack import LatentAttackConfig

    p = _Parser(prog="captum-cfx", description="Counterfactual explanations for Captum users.")
    p.add_argument("--version", action="version", version=f"captum-cfx {captum_cfx.__version__}")
    sub = p.add_subparsers(dest="command")
    e = sub.add_parser("explain", help="explain a classifier with latent counterfactuals and write a report",
                       description="Explain the shipped MNIST classifier (or yours) with latent counterfactual "
                                   f"attacks on test digits. Defaults: {DEFAULT_N} class-interleaved test digits, "
                                   "seeded random targets different from the label.")
    e.add_argument("--n", type=int, default=DEFAULT_N, help=f"number of test digits (default {DEFAULT_N})")
    e.add_argument("--target", default="random",
                   help="'random' (default), 'next' or a class index 0..K-1 (K read from the model); for a "
                        "regressor in absolute / relative mode the value to reach / the change")
    e.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    e.add_argument("--model", default=None, help="module:factory returning your classifier (default: shipped)")
    e.add_argument("--generator", default=None,
                   help="module:factory, a diffusers model folder, a zoo name, or vae / gan / diffae "
                        "(default: mnist-vae; "
                        "descriptor bars are skipped for the GAN, whose encoder is an optimisation)")
    e.add_argument("--margin", type=float, default=LatentAttackConfig.margin, help="logit margin of the objective")
    e.add_argument("--max-steps", type=int, default=LatentAttackConfig.max_steps, help="step limit per digit")
    e.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random targets")
    e.add_argument("--out", default="cfx-report", help="report folder (default ./cfx-report)")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e.add_argument("--no-descriptors", action="store_true",
                   help="skip the Morpho-MNIST descriptor bars and global descriptor chart")
    e.add_argument("--data", default=None,
                   help="explain a data set in shards: mnist-test, mnist-train, squares-<size>:<n>, a folder of "
                        "PNG/JPEG images (labels from --labels or <folder>/labels.csv), or a tensor file: .npz "
                        "with 'images' (N, C, H, W) [and 'labels' (N,)], .npy (images), .safetensors with "
                        "'images' [and 'labels'], .pt (a tensor or a dict with 'images' [and 'labels']); writes "
                        "shards, a manifest, summary.json and grid.png (docs/bring_your_own.md)")
    e.add_argument("--labels", default=None,
                   help="with a --data folder: a CSV of filename,label rows (class indices, or numbers for a "
                        "regressor); default <folder>/labels.csv when it exists, else unlabelled")
    e.add_argument("--task", default="auto", choices=("auto", "classification", "regression"),
                   help="with --data: auto (default) reads it from the model's output: (N, K) logits classify, "
                        "(N,) or (N, 1) values regress")
    e.add_argument("--regression-mode", default="mirror", choices=("mirror", "absolute", "relative"),
                   help="regressors: mirror (default; the prediction moved by half of --output-range), absolute "
                        "(--target is the value to reach) or relative (--target is the change)")
    e.add_argument("--tolerance", type=float, default=0.05,
                   help="regressors: success when |prediction - goal| <= tolerance (default 0.05)")
    e.add_argument("--output-range", default="0,1",
                   help="regressors: the known output range LO,HI (default 0,1; write --output-range=-1,1 for a "
                        "negative LO)")
    e.add_argument("--pixel-range", default=None,
                   help="with a --data folder: map its [0, 1] pixels to LO,HI (default: the generator's "
                        "input_range); e.g. --pixel-range=-1,1")
    e.add_argument("--image-shape", default=None,
                   help="with --data: C,H,W the images are read as (default: the generator's image_shape, else "
                        "the first image's)")
    e.add_argument("--num-classes", type=int, default=None,
                   help="with --data: the classes K the model must output (default: read from the model)")
    e.add_argument("--shard-size", type=int, default=100, help="images per shard with --data (default 100)")
    e.add_argument("--limit", type=int, default=None, help="only the first N images of --data")
    e.add_argument("--resume", action="store_true", help="with --data: skip shards already complete in --out")
    e.add_argument("--max-batch", type=int, default=None,
                   help="with --data: refilling, at most N images in flight; finished ones are replaced by waiting "
                        "ones (default: each group of shards is one batch)")
    e.add_argument("--group-shards", type=int, default=1,
                   help="with --data: shards searched together as one refilling group (default 1)")
    e.add_argument("--threads", type=int, default=1,
                   help="intra-op CPU threads (per rank with --data, where it is part of the run's bits); default 1, "
                        "which measured faster than torch's default on a busy machine (docs/scale.md)")
    e.set_defaults(func=cmd_explain)
    c = sub.add_parser("compare", help="run every available method on the same images and write one table",
                       description="Run every shipped counterfactual and attribution method on the same images and "
                                   "targets (embedded MNIST, the attribute world, squares), score them with "
                                   "captum_cfx.metrics and write compare.md, compare.json and figure grids.")
    size = c.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="a smoke of every row: 8 images per data set, slow methods on 2 (under a minute of CPU "
                           "on one thread)")
    size.add_argument("--full", action="store_true",
                      help="1000 images per data set, slow methods on all of them (hours on one thread)")
    c.add_argument("--n", type=int, default=None,
                   help="images per data set (default 100; 8 with --quick, 1000 with --full); slow methods keep "
                        "their subset (the first 8, or 2 with --quick)")
    c.add_argument("--datasets", default="mnist,world,squares", help="comma-separated subset of mnist,world,squares")
    c.add_argument("--methods", default=None,
                   help="comma-separated name fragments: keep only the methods whose names contain one")
    c.add_argument("--no-attributions", action="store_true", help="skip the attribution table")
    c.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    c.add_argument("--threads", type=int, default=1, help="intra-op CPU threads (default 1)")
    c.add_argument("--out", default="cfx-compare", help="output folder (default ./cfx-compare)")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    c.set_defaults(func=cmd_compare)
    v = sub.add_parser("convert", help="convert a released checkpoint to a safetensors folder (once)",
                       description="Read a released pickle checkpoint without running code from it and write a "
                                   "safetensors folder that captum_cfx loads.")
    vsub = v.add_subparsers(dest="kind", required=True)
    d = vsub.add_parser("diffae", help="an official Diffusion Autoencoder last.ckpt (github.com/phizaz/diffae)")
    d.add_argument("checkpoint", help="the official Lightning checkpoint (last.ckpt)")
    d.add_argument("out", help="output folder")
    d.add_argument("--template", default="ffhq256_autoenc",
                   help="official template name (ffhq256_autoenc, ffhq128_autoenc_130M, bedroom128_autoenc, "
                        "horse128_autoenc, celeba64d2c_autoenc, ...) or a .json file of TrainConfig fields")
    d.add_argument("--no-ema", action="store_true", help="take the training weights instead of the EMA weights")
    d.add_argument("--steps", type=int, default=None, help="default DDIM steps of the folder (default: T_eval)")
    d.set_defaults(func=cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if getattr(a, "func", None) is None:
        p.print_help()
        return 0
    try:
        return a.func(a)
    except (ValueError, TypeError, OSError) as err:  # the user's input: one line, no traceback
        print(f"captum-cfx: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("captum-cfx: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - anything else is a bug: still one line, the traceback on request
        if os.environ.get("CAPTUM_CFX_DEBUG"):
            raise
        print(f"captum-cfx: error: unexpected {type(err).__name__}: {_one_line(err)} "
              "(set CAPTUM_CFX_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{text}: {err.filename!r}"
    return text[:2000]


if __name__ == "__main__":
    raise SystemExit(main())
