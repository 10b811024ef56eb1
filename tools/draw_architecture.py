"""Draw docs/images/architecture.png: the package's layers and the one import rule (imports point down).

    python tools/draw_architecture.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "architecture.png"

# (x, y, width, height, title, detail, colour)
BOXES = {
    "app": (0.3, 8.0, 9.0, 1.5, "application: cli, compare, runner, report",
            "argument parsing, data-set runs, tables, figures, reports\n"
            "(and tools/, outside the package); may import anything; nothing imports cli", "#fde0c5"),
    "zoo": (9.9, 4.9, 3.8, 4.6, "zoo: shipped models + presets",
            "weights as safetensors, JSON configs\n\npresets wire them into the generic\nclasses: mnist_features,"
            "\nworld_features, squares_features,\nmnist_distance, mnist-gan's\nfeature network\n\n"
            "nothing in attr or below\nimports the zoo", "#e3d7f4"),
    "attr": (0.3, 5.6, 9.0, 1.8, "attr: one method per file",
             "latent_attack, descriptor, interfacegan, global_directions,\nlatent_ig, causal, diffusion_pixel\n"
             "Captum's call shape: attribute / generate / perturb", "#cfe3f7"),
    "mid": (0.3, 2.6, 9.0, 2.4, "building blocks: generic (no image size, classes, data set or shipped net)",
            "generators: encode / decode (VAE, diffusers, DDIM, DiffAE, GAN)\n"
            "_search: the per-sample search engine     objectives: loss + done\n"
            "optim: per-sample optimisers     metrics     descriptors\ninterventions     visualization",
            "#d5efd5"),
    "data": (9.9, 2.6, 3.8, 1.7, "datasets", "mnist (embedded), squares,\nattribute world (procedural)",
             "#f4f0c8"),
    "bottom": (0.3, 0.9, 13.4, 1.1, "_validation, _utils, _io",
               "input checks with named errors, NotFittedError, eval_mode, safetensors loading, atomic writes",
               "#e8e8e8"),
}
# arrows "may import", as (start, end) points
ARROWS = [((4.8, 8.0), (4.8, 7.4)), ((9.3, 8.75), (9.9, 8.75)), ((9.9, 6.5), (9.3, 6.5)), ((4.8, 5.6), (4.8, 5.0)),
          ((9.9, 5.2), (9.3, 4.2)), ((11.8, 4.9), (11.8, 4.3)), ((4.8, 2.6), (4.8, 2.0)),
          ((11.8, 2.6), (11.8, 2.0))]


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 7.4))
    for x, y, w, h, title, detail, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04,rounding_size=0.15", fc=colour,
                                    ec="#444444", lw=1.2))
        ax.text(x + 0.15, y + h - 0.15, title, fontsize=10, fontweight="bold", va="top")
        ax.text(x + 0.15, y + h - 0.55, detail, fontsize=8.5, va="top", linespacing=1.45)
    for a, b in ARROWS:
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.5, color="#333333"))
    ax.text(0.3, 0.35, "An arrow means \"may import\"; imports point down only. "
            "tests/test_architecture.py checks every "
            "import of every module, function-level ones included.", fontsize=8.8, style="italic")
    ax.set_xlim(0, 14)
    ax.set_ylim(0.1, 9.7)
    ax.axis("off")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    plt.close(fig)
    print(OUT)


if __name__ == "__main__":
    main()
