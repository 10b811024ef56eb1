"""The report of ``captum-cfx compare``: ``compare.md`` and one figure grid per task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from captum_cfx.compare.tasks import Task

__all__ = ["SHOW", "to_markdown", "write_figure"]

SHOW = 8  # images per figure grid


def write_figure(task: Task, shown: dict[str, tuple[Tensor, Tensor, Tensor]], out: Path) -> str:
    """Draw the input row and one row per method (titles: the model's output, green when the target was
    reached) into ``out`` and return the file name.

    Args:
        task: the task (its first :data:`SHOW` images are the input row).
        shown: method name -> (counterfactuals, valid mask, model outputs) of its first images.
        out: the folder to write into.
    """
    import matplotlib.pyplot as plt

    x = task.images[:SHOW].cpu()
    cols = len(x)
    rows = [("input", x, None, None)] + [(k, *v) for k, v in shown.items()]
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.15 * cols + 1.6, 1.2 * len(rows)), squeeze=False)
    for r, (label, imgs, valid, outs) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(imgs):  # a slow method run on fewer images
                ax.axis("off")
                continue
            img = imgs[c].clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if outs is None:
                g, s = task.goals[c].item(), task.sources[c].item()
                title = f"{s:.2f}→{g:.2f}" if task.regression else f"{int(s)}→{int(g)}"
                ax.set_title(title, fontsize=7)
            else:
                v = outs[c].item()
                ax.set_title(f"{v:.2f}" if task.regression else str(int(v)), fontsize=7,
                             color="green" if bool(valid[c]) else "red")
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{task.name}: model output (green: target reached)", fontsize=8)
    fig.tight_layout()
    name = "grid_" + "".join(ch if ch.isalnum() else "_" for ch in task.name).strip("_") + ".png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def _fmt(v: Any, kind: str = "f") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == "%":
        return f"{v:.0%}"
    if kind == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    if kind == "e":
        return f"{v:.3g}"
    return f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.4f}"


def _counterfactual_lines(name: str, t: dict[str, Any], per_cf: str) -> list[str]:
    lines = [f"### Counterfactuals: {name}", "", t["description"] + ".", "",
             "| method | n | valid | oracle agrees | L1 px | L2 px | L2 latent | px changed | FID | sFID | "
             "manifold dist. | COUT | time / CF | steps / CF |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['method']}{note} | {r['n']} | {_fmt(r['validity'], '%')} | "
                     f"{_fmt(r['oracle_agreement'], '%')} | "
                     f"{_fmt(r['l1_pixels'])} | {_fmt(r['l2_pixels'])} | {_fmt(r['l2_latent'])} | "
                     f"{_fmt(r['sparsity'], '%')} | {_fmt(r['fid'])} | {_fmt(r['sfid'])} | "
                     f"{_fmt(r['manifold_distance'], 'e')} | {_fmt(r['cout'])} | "
                     f"{_fmt(r[per_cf], 's')} | {_fmt(r['steps_per_cf'])} |")
    ref = t["reference"]
    bits = [f"FID between two halves of the real images {_fmt(ref['fid_between_halves_of_real_images'])}"]
    if "manifold_distance_of_real_images" in ref:
        bits.append(f"manifold distance of the real images {_fmt(ref['manifold_distance_of_real_images'], 'e')}")
    bits.append(f"inputs already at their target {_fmt(ref['already_at_target'], '%')}")
    lines += ["", "Reference: " + "; ".join(bits) + ".", ""]
    if t.get("figure"):
        lines += [f"![{name}]({t['figure']})", ""]
    return lines


def _ground_truth_lines(name: str, t: dict[str, Any]) -> list[str]:
    lines = [f"#### Ground truth: {name}", ""]
    if t["truth"]:
        top = sorted(t["truth"].items(), key=lambda kv: -kv[1])[:4]
        lines += ["What the model truly depends on (decision flip rate under do(factor := 1 − factor)): "
                  + ", ".join(f"{k} {v:.0%}" for k, v in top) + f"; right factor: **{t['right_factor']}**.", ""]
    else:
        lines += [f"Right factor: **{t['right_factor']}** (the regression target).", ""]
    sp = t["ground_truth"][0].get("spurious_factor")
    head = "| rank | method | n | valid | right factor changed | only the right factor | MNAC |"
    sep = "|---|---|---|---|---|---|---|"
    if sp:
        head += f" {sp} changed | reveals the planted {sp} reliance |"
        sep += "---|---|"
    lines += [head, sep]
    for i, r in enumerate(t["ground_truth"], 1):
        line = (f"| {i} | {r['method']} | {r['n']} | {_fmt(r['validity'], '%')} | "
                f"{_fmt(r['right_factor_rate'], '%')} | "
                f"{_fmt(r['right_factor_only_rate'], '%')} | {_fmt(r['mnac'])} |")
        if sp:
            line += f" {_fmt(r['spurious_change_rate'], '%')} | {_fmt(r['reveals_spurious'])} |"
        lines.append(line)
    lines.append("")
    return lines


def _attribution_lines(name: str, rows: list[dict[str, Any]], per_image: str) -> list[str]:
    lines = [f"### Attributions: {name}", "",
             "Explaining the logit of the true label on the same images; lower is better for both scores.", "",
             "| method | n | infidelity | sensitivity max | time / image |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['n']} | {_fmt(r['infidelity'], 'e')} | "
                     f"{_fmt(r['sensitivity_max'], 'e')} | {_fmt(r[per_image], 's')} |")
    lines.append("")
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    """The markdown report of a :func:`~captum_cfx.compare.run_compare` result (the ``compare.json`` dict)."""
    cpu = result["clock"] == "cpu"
    clock = "process CPU time" if cpu else "wall time"
    lines = [f"Produced by `{result['command']}` ({result['n_per_dataset']} images per data set, fixed seeds, "
             f"{result['threads']} thread(s) on {result['device']}; {result['seconds']:.0f} s wall, "
             f"{result['cpu_seconds']:.0f} s CPU in all; times per method are {clock}). "
             "Columns: docs/metrics.md.", ""]
    per_cf = "cpu_seconds_per_cf" if cpu else "seconds_per_cf"
    per_image = "cpu_seconds_per_image" if cpu else "seconds_per_image"
    for name, t in result["tasks"].items():
        lines += _counterfactual_lines(name, t, per_cf)
        if t["ground_truth"]:
            lines += _ground_truth_lines(name, t)
    for name, rows in result["attributions"].items():
        lines += _attribution_lines(name, rows, per_image)
    if result["skipped"]:
        lines += ["Not run: " + "; ".join(f"{s['method']} on {s['task']} ({s['reason']})" for s in result["skipped"])
                  + ".", ""]
    return "\n".join(lines)
