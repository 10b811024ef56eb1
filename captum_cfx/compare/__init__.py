"""``captum-cfx compare``: every available method on the same images and targets, in one table.

The command builds one :class:`Task` per data set (:mod:`~captum_cfx.compare.tasks`: the images, the model
to explain, the targets, an independent oracle, a feature network for realism, the data set's reference
generator), runs every row of a :class:`Registry` that applies and whose models are shipped
(:mod:`~captum_cfx.compare.methods` holds the built-in rows), scores every result with the same
:mod:`captum_cfx.metrics` (:mod:`~captum_cfx.compare.scoring`), and writes ``compare.json``,
``compare.md`` and one figure grid per task (:mod:`~captum_cfx.compare.report`).

Sizes (:data:`SIZES`; fixed seeds): ``--quick`` = 8 images per data set, slow methods on 2 (a smoke of every
row, under a minute of CPU on one thread); the default = 100 images per data set, slow methods on the first 8
(the README's tables); ``--full`` = 1,000 images, slow methods on all of them.

- ``mnist``: class-interleaved embedded MNIST test digits; ``mnist-classifier``; target = label + 1 (mod 10);
  oracle ``mnist-oracle``; generator ``mnist-vae``. One target per digit keeps the binary questions that
  GCD needs to 10 (one per class pair) instead of up to 90 with random targets.
- ``world (spurious smile)`` / ``world (decorrelated smile)``: attribute-world faces; the two smile
  classifiers; target = the other class; oracle = ``world-oracle``'s smile reading; generator ``world-vae``.
  Scored against the ground truth too (which factor each counterfactual changed, MNAC, and the factor the
  classifier truly depends on, measured by single-factor interventions).
- ``squares``: the regressor; mirrored targets as in seed 003 (the prediction moved by 0.5 towards the
  other half of ``[0, 1]``, reached within 0.05); oracle ``squares-oracle``; generator ``squares-vae`` when
  it is shipped (otherwise only pixel methods run there).

Adding a method
---------------
A counterfactual method is one adapter, a function ``Task -> CFResult`` (or ``None`` when it does not
apply to that task), registered on a :class:`Registry` that you pass to :func:`run_compare`. Rows for
methods whose ``requires`` models are not shipped are absent from the table (listed under "not run" with
the reason), never faked. For example, the latent attack in a diffusion autoencoder's latent space::

    from captum_cfx.compare import CFResult, Task, default_registry, run_compare, timed

    registry = default_registry()          # the built-in rows; Registry() starts empty

    @registry.register("latent attack (my DiffAE)", ("mnist",), requires=("mnist-diffae",), slow=True)
    def latent_attack_diffae(task: Task) -> CFResult:
        from captum_cfx import LatentCounterfactualAttack
        from captum_cfx.zoo import load_generator

        gen = load_generator("mnist-diffae").to(task.images.device)
        attack = LatentCounterfactualAttack(task.model, gen)
        out, seconds = timed(lambda: attack.generate(task.images, target=task.goals))
        return CFResult.from_output(out, seconds)

    run_compare("cmp", registry=registry, methods=["my DiffAE"])

A pixel-space method returns images only: ``CFResult(cf, seconds)`` (``start=None``: changes are read
against the inputs). ``slow=True`` methods run on only the first ``slow_n`` images of each task (the
table's ``n`` column says so). Registration order is table order. Attribution methods register the same
way with :meth:`Registry.register_attribution`: a builder ``Task -> attribute(inputs, target) -> attributions``;
they are scored with ``captum.metrics.infidelity`` and ``captum.metrics.sensitivity_max``.
"""

from captum_cfx.compare.methods import default_registry
from captum_cfx.compare.registry import AttributionMethod, CFResult, Method, Registry, timed
from captum_cfx.compare.report import to_markdown
from captum_cfx.compare.run import SIZES, RunSize, run_compare
from captum_cfx.compare.scoring import score_attribution, score_counterfactuals, score_ground_truth
from captum_cfx.compare.tasks import DATASETS, SEEDS, Task, build_tasks

__all__ = [
    "DATASETS",
    "SEEDS",
    "SIZES",
    "AttributionMethod",
    "CFResult",
    "Method",
    "Registry",
    "RunSize",
    "Task",
    "build_tasks",
    "default_registry",
    "run_compare",
    "score_attribution",
    "score_counterfactuals",
    "score_ground_truth",
    "timed",
    "to_markdown",
]
