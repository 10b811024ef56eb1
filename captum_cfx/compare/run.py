"""The run of ``captum-cfx compare``: every applicable row of a registry on every task, scored and reported."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from captum_cfx.compare.registry import AttributionMethod, Method, Registry, timed
from captum_cfx.compare.report import SHOW, to_markdown, write_figure
from captum_cfx.compare.scoring import (
    score_attribution,
    score_counterfactuals,
    score_ground_truth,
    score_reference,
)
from captum_cfx.compare.tasks import DATASETS, SEEDS, Task, build_tasks

__all__ = ["SIZES", "RunSize", "run_compare"]


@dataclass(frozen=True)
class RunSize:
    """How many images a compare run uses.

    Attributes:
        name: the preset's name (``"quick"``, ``"default"``, ``"full"``), or your own.
        n: images per data set (at least 4).
        slow_n: methods registered as ``slow`` run on only the first ``slow_n`` images of each task
            (MNIST's images are class-interleaved, so they are different digits); ``None``: on all ``n``.
    """

    name: str
    n: int
    slow_n: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 4:
            raise ValueError(f"`n` must be an int >= 4 (sFID splits the images in halves); got {self.n!r}")
        if self.slow_n is not None and (isinstance(self.slow_n, bool) or not isinstance(self.slow_n, int)
                                        or self.slow_n < 1):
            raise ValueError(f"`slow_n` must be a positive int or None; got {self.slow_n!r}")

    def command(self) -> str:
        """The command that makes a run of this size: ``captum-cfx compare`` and its options for a preset."""
        preset = SIZES.get(self.name)
        if preset is None or preset.slow_n != self.slow_n:
            return f"captum_cfx.compare.run_compare(size={self!r})"
        opt = "" if self.name == "default" else f" --{self.name}"
        return "captum-cfx compare" + opt + (f" --n {self.n}" if self.n != preset.n else "")


#: ``quick``: a smoke of every row (8 images per data set, slow methods on 2; under a minute of CPU on one
#: thread); ``default``: the README's tables (100 images, slow methods on 8); ``full``: 1,000 images,
#: slow methods on all of them (hours on one CPU thread: the diffusion rows take seconds per image)
SIZES: dict[str, RunSize] = {
    "quick": RunSize("quick", 8, 2),
    "default": RunSize("default", 100, 8),
    "full": RunSize("full", 1000, None),
}


def _applicable(entry: Method | AttributionMethod, task: Task, shipped: set[str],
                only: Sequence[str] | None) -> str | None:
    """``None`` when ``entry`` runs on ``task``, else the reason it does not."""
    if task.family not in entry.families:
        return "n/a"
    if only and not any(s.lower() in entry.name.lower() for s in only):
        return "n/a"
    missing = [r for r in entry.requires.get(task.family, ()) if r not in shipped]
    if missing:
        return f"not shipped: {', '.join(missing)}"
    return None


def _for(entry: Method | AttributionMethod, task: Task, size: RunSize) -> Task:
    """The task an entry runs on: its first ``size.slow_n`` images for a slow entry."""
    return task.subset(size.slow_n) if entry.slow and size.slow_n is not None else task


@dataclass
class _Run:
    """What every task of one run shares: the registry, the size, the filters and the output so far."""

    registry: Registry
    size: RunSize
    shipped: set[str]
    only: Sequence[str] | None
    out: Path
    result: dict[str, Any]

    def skip(self, task: Task, entry: Method | AttributionMethod, why: str | None) -> None:
        if why is not None and why != "n/a":
            self.result["skipped"].append({"task": task.name, "method": entry.name, "reason": why})

    def methods(self, task: Task, bar: Any) -> dict[str, Any]:
        """Every counterfactual row on ``task``: the task's entry of ``compare.json`` (figure drawn)."""
        entry: dict[str, Any] = {"description": task.description, "rows": [], "ground_truth": [],
                                 "truth": task.truth, "right_factor": task.right_factor, "reference": {}}
        entry["reference"] = score_reference(task)
        shown: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        for m in self.registry.methods:
            bar.set_postfix_str(f"{task.name}: {m.name}")
            why = _applicable(m, task, self.shipped, self.only)
            if why is None:
                sub = _for(m, task, self.size)
                c0 = time.process_time()
                res = m.run(sub)
                cpu = time.process_time() - c0
                if res is None:
                    why = "n/a"
                else:
                    row, valid, outs = score_counterfactuals(sub, res)
                    row["cpu_seconds"], row["cpu_seconds_per_cf"] = cpu, cpu / len(sub.images)
                    entry["rows"].append({"method": m.name, **row})
                    gt = score_ground_truth(sub, res, valid)
                    if gt is not None:
                        entry["ground_truth"].append({"method": m.name, **gt})
                    shown[m.name] = (res.counterfactuals[:SHOW].detach().cpu(), valid[:SHOW].cpu(),
                                     outs[:SHOW].cpu())
            self.skip(task, m, why)
            bar.update(1)
        entry["ground_truth"].sort(key=lambda r: (-r["right_factor_rate"], r["mnac"] if r["mnac"] is not None
                                                  else math.inf))
        if shown:
            entry["figure"] = write_figure(task, shown, self.out)
        return entry

    def attributions(self, task: Task) -> list[dict[str, Any]]:
        """Every attribution row on ``task``."""
        rows = []
        for a in self.registry.attributions:
            why = _applicable(a, task, self.shipped, self.only)
            sub = _for(a, task, self.size)
            fn = a.build(sub) if why is None else None
            if fn is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # LIG walks; captum's requires_grad notes
                    rows.append({"method": a.name, **score_attribution(sub, fn, n_perturb=5)})
            else:
                self.skip(task, a, why)
        return rows


def _size(size: str | RunSize, n: int | None) -> RunSize:
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"`size` must be one of {sorted(SIZES)} or a RunSize; got {size!r}")
        size = SIZES[size]
    elif not isinstance(size, RunSize):
        raise TypeError(f"`size` must be a str or a RunSize; got {type(size).__name__}")
    if n is not None:
        size = RunSize(size.name, n, size.slow_n)
    return size


def run_compare(out_dir: str | Path, *, size: str | RunSize = "default", n: int | None = None,
                datasets: Sequence[str] = DATASETS, methods: Sequence[str] | None = None,
                attributions: bool = True, registry: Registry | None = None, device: str | torch.device = "cpu",
                progress: bool = True) -> dict[str, Any]:
    """Run every applicable row of ``registry`` on every task; write ``compare.json``, ``compare.md`` and figures.

    Args:
        out_dir: output folder (created).
        size: ``"quick"``, ``"default"`` or ``"full"`` (see :data:`SIZES`), or a :class:`RunSize`.
        n: images per data set, replacing ``size.n`` (slow methods keep ``size.slow_n``).
        datasets: which data sets (``"mnist"``, ``"world"``, ``"squares"``).
        methods: keep only rows whose names contain one of these substrings (case-insensitive).
        attributions: also score the attribution methods.
        registry: the rows; default :func:`~captum_cfx.compare.default_registry`.
        device: where to run.
        progress: show a progress bar.

    Returns:
        The JSON written to ``compare.json``.
    """
    from tqdm.auto import tqdm

    import captum_cfx
    from captum_cfx.compare.methods import default_registry
    from captum_cfx.zoo import available

    rs = _size(size, n)
    reg = default_registry() if registry is None else registry
    if not isinstance(reg, Registry):
        raise TypeError(f"`registry` must be a captum_cfx.compare.Registry; got {type(reg).__name__}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    dev = torch.device(device)
    # per-method times: process CPU time for a one-thread CPU run (the wall time on an idle core, and
    # steady on a shared machine), wall time otherwise
    clock = "cpu" if dev.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    tasks, t_setup = timed(lambda: build_tasks(rs.n, datasets, device))
    result: dict[str, Any] = {
        "command": rs.command(), "size": rs.name, "n_per_dataset": rs.n,
        "slow_n": rs.slow_n, "captum_cfx_version": captum_cfx.__version__,
        "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        "clock": clock, "seeds": SEEDS, "tasks": {}, "attributions": {}, "skipped": [], "setup_seconds": t_setup,
    }
    run = _Run(reg, rs, set(available()), methods, out, result)
    bar = tqdm(total=len(tasks) * len(reg.methods), disable=not progress, desc="compare")
    for task in tasks:
        result["tasks"][task.name] = run.methods(task, bar)
        rows = run.attributions(task) if attributions else []
        if rows:
            result["attributions"][task.name] = rows
    bar.close()
    result["seconds"] = time.perf_counter() - t_start
    result["cpu_seconds"] = time.process_time() - c_start
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "compare.md").write_text(to_markdown(result))
    return result
