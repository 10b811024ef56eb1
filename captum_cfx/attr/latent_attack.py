"""Counterfactual Attacks: an adversarial attack on the latent code of a generative model.

Goldwasser & Hooker (2025) optimise a latent code with Adam on the classifier's output, through the
decoder, and stop as soon as the target is reached. The decoder keeps every step on the image
manifold, so the change is semantic rather than adversarial noise.

How this implementation differs from the reference code (one image at a time, in a notebook):

- **Batched with compaction.** Each step computes only the samples still searching; a finished
  sample leaves the batch and its latent is frozen (Adam's momentum cannot move it further).
- **Default objective: a clamped logit margin** (:class:`~captum_cfx.objectives.LogitMargin`, margin
  6.25) instead of a probability threshold. The reference's thresholds are available as
  :class:`~captum_cfx.objectives.TargetClass` / :class:`~captum_cfx.objectives.ProbabilityThreshold`.
- **Source of the starting class.** By default the class to move away from is the model's prediction
  on the *input* (what the user asks to explain). ``source="reconstruction"`` uses the prediction on
  ``G(E(x))``, as the paper does.
- The reference's other choices are options: ``start="sample"`` starts from a reparameterised
  posterior sample, ``skip_zero_grad=True`` gives up on samples whose first gradient is exactly zero.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from torch import Tensor

from captum_cfx._config import Config, Interval, Options, Satisfies
from captum_cfx._search import ActiveSet, Entrants, Step, rows_finite
from captum_cfx._validation import check_decoded
from captum_cfx.attr._base import CounterfactualMethod, Inputs
from captum_cfx.attr.output import CounterfactualOutput
from captum_cfx.generators.base import Latent
from captum_cfx.objectives import LogitMargin, Objective, get_objective
from captum_cfx.optim import LatentOptimizer, get_optimizer

__all__ = ["LatentAttackConfig", "LatentCounterfactualAttack"]


@dataclass(frozen=True, kw_only=True)
class LatentAttackConfig(Config):
    """The latent attack's settings, validated once; the defaults are the documented configuration
    (benchmarked in ``benchmarks/latent_attack.py``) that the CLI and the benchmarks read. The fields mean
    what the arguments of :meth:`LatentCounterfactualAttack.generate` of the same names mean; ``lr=None``
    takes :attr:`ADAM_LR` for Adam and the optimiser's own default otherwise.

    The speed options change no result (docs/latent_attack.md, "Speed"): ``max_batch`` refills (continuous
    batching: at most this many samples in flight; when samples finish, waiting ones are encoded and enter the
    running batch at step 0 with fresh optimiser state, so no batch ends in a long tail; per-sample results are
    those of ``max_batch=None``, bit for bit where the models' rows do not depend on the batch size, within float
    rounding otherwise; with ``start="sample"`` the starting noise is drawn per admission); ``check_every``
    compacts and refills every this many steps, the finished samples riding along frozen in between (fewer host
    syncs on a GPU); ``autocast`` runs decoder, model and loss under ``torch.autocast`` with this dtype
    (``torch.bfloat16``, ``torch.float16``), the latents and optimiser in full precision."""

    margin: float = 6.25
    optimizer: Any = "adam"
    lr: float | None = None
    max_steps: int = 500
    source: str = "input"
    start: str = "mean"
    distance_penalty: float = 0.0
    radius: float | None = None
    skip_zero_grad: bool = False
    sparsity: float = 0.0
    line_search: int = 0
    mask_threshold: float | None = None
    mask_dilation: int = 1
    max_batch: int | None = None
    check_every: int = 1
    autocast: Any = None

    #: Adam's step size when ``lr`` is ``None``
    ADAM_LR: ClassVar[float] = 0.3
    #: named settings: ``"paper"`` (the defaults) and ``"minimal"`` (steepest descent in the latent L2 norm
    #: instead of Adam's per-dimension steps; docs/latent_attack.md, "Minimal counterfactuals",
    #: ``benchmarks/results/minimal_cpu.json``)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "minimal": {"optimizer": "l2", "lr": 0.5, "max_steps": 2000},
    }
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "margin": [Interval(float, 0, None)],
        "optimizer": [Options("adam", "l2", "sign"), Satisfies(LatentOptimizer, "a LatentOptimizer")],
        "lr": [Interval(float, 0, None, low_open=True), None],
        "max_steps": [Interval(int, 0, None)],
        "source": [Options("input", "reconstruction")],
        "start": [Options("mean", "sample")],
        "distance_penalty": [Interval(float, 0, None)],
        "radius": [Interval(float, 0, None, low_open=True), None],
        "skip_zero_grad": [Satisfies(bool, "a bool")],
        "sparsity": [Interval(float, 0, None)],
        "line_search": [Interval(int, 0, None)],
        "mask_threshold": [Interval(float, 0, None, low_open=True), None],
        "mask_dilation": [Interval(int, 0, None)],
        "max_batch": [Interval(int, 1, None), None],
        "check_every": [Interval(int, 1, None)],
        "autocast": [Options(torch.bfloat16, torch.float16), None],
    }

    @classmethod
    def preset(cls, name: str, **changes: Any) -> LatentAttackConfig:
        """The settings of preset ``name`` (see :attr:`PRESETS`), with ``changes``; pass them on with
        ``attack.generate(x, target=t, **LatentAttackConfig.preset("minimal").to_dict())``."""
        if name not in cls.PRESETS:
            raise ValueError(f"`name` must be one of {sorted(cls.PRESETS)}; got {name!r}")
        return cls(**{**cls.PRESETS[name], **changes})

    def make_optimizer(self) -> LatentOptimizer:
        """The optimiser these settings name (Adam at :attr:`ADAM_LR` unless ``lr`` is given)."""
        return get_optimizer(self.optimizer, self.ADAM_LR if self.lr is None and self.optimizer == "adam" else self.lr)


_DEFAULT = LatentAttackConfig()
_FIELDS = frozenset(f.name for f in dataclasses.fields(LatentAttackConfig))


class LatentCounterfactualAttack(CounterfactualMethod):
    r"""Counterfactual images by gradient search in a generator's latent space.

    Encode ``x`` to ``z0``, then move ``z`` until the model's output on ``decode(z)`` meets the
    objective (by default: the target class leads every other logit by ``margin = 6.25``). Each sample
    stops at the first step where it meets the objective; finished samples are removed from the batch.

    :meth:`attribute` returns ``counterfactual - reconstruction`` (or ``- input``), a pixel map shaped
    like the input; :meth:`generate` returns every intermediate result as a
    :class:`~captum_cfx.CounterfactualOutput`; :meth:`perturb` returns the counterfactual images, so
    the class works as a ``captum.robust.Perturbation`` in ``AttackComparator`` and
    ``MinParamPerturbation``.

    Reference: Goldwasser & Hooker, *Counterfactual Attacks* (2025).

    Args:
        forward_func: the model to explain; returns logits ``(N, K)`` (or ``(N,)``/``(N, 1)`` for
            one-logit binary models and regressors).
        generator: a :class:`~captum_cfx.generators.LatentGenerator` whose images are in the model's
            input range.

    Shape:
        - inputs: ``(N, C, H, W)`` in ``generator.input_range`` (or a tuple whose first tensor is
          the image; the other tensors are passed to ``forward_func`` unchanged).
        - target: int, list or ``(N,)`` tensor of classes; ``None`` for untargeted objectives.
        - attribute returns ``(N, C, H, W)``, values in ``[-(hi - lo), hi - lo]``.

    Examples::

        >>> from captum_cfx import LatentCounterfactualAttack
        >>> from captum_cfx.datasets import load_mnist
        >>> from captum_cfx.zoo import load_generator, load_pretrained
        >>> x, y = load_mnist("test")
        >>> x, y = x[::125], y[::125]                                 # 8 digits of 8 classes
        >>> attack = LatentCounterfactualAttack(load_pretrained("mnist-classifier"), load_generator("mnist-vae"))
        >>> out = attack.generate(x, target=(y + 1) % 10)
        >>> bool(out.success.all()), out.counterfactuals.shape
        (True, torch.Size([8, 1, 28, 28]))
        >>> maps = attack.attribute(x, target=(y + 1) % 10)          # counterfactual - reconstruction
        >>> maps.shape
        torch.Size([8, 1, 28, 28])
    """

    def generate(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType | float = None,
        additional_forward_args: Any = None,
        *,
        objective: Objective | str | None = None,
        margin: float | None = None,
        optimizer: LatentOptimizer | str = _DEFAULT.optimizer,
        lr: float | None = _DEFAULT.lr,
        max_steps: int = _DEFAULT.max_steps,
        source: str = _DEFAULT.source,
        start: str = _DEFAULT.start,
        distance_penalty: float = _DEFAULT.distance_penalty,
        radius: float | None = _DEFAULT.radius,
        skip_zero_grad: bool = _DEFAULT.skip_zero_grad,
        sparsity: float = _DEFAULT.sparsity,
        line_search: int = _DEFAULT.line_search,
        mask_threshold: float | None = _DEFAULT.mask_threshold,
        mask_dilation: int = _DEFAULT.mask_dilation,
        internal_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        max_batch: int | None = _DEFAULT.max_batch,
        check_every: int = _DEFAULT.check_every,
        autocast: torch.dtype | None = _DEFAULT.autocast,
    ) -> CounterfactualOutput:
        """Search counterfactuals and return every result.

        Args:
            inputs: images ``(N, C, H, W)`` or a tuple whose first member is the image.
            target: the class to reach per example (``TargetType``), or the regression value; may be
                ``None`` for :class:`~captum_cfx.objectives.Flip` and
                :class:`~captum_cfx.objectives.ProbabilityThreshold`.
            additional_forward_args: extra arguments for ``forward_func``; tensors with the batch size
                are indexed per sample.
            objective: an :class:`~captum_cfx.objectives.Objective` or its name; default
                ``LogitMargin(margin)``.
            margin: margin of the default objective (default 6.25); ignored when ``objective`` is given.
            optimizer: ``"adam"`` (default), ``"l2"``, ``"sign"`` or a
                :class:`~captum_cfx.optim.LatentOptimizer`.
            lr: step size (default 0.3 for Adam; the paper used 0.1 on its MNIST VAE).
            max_steps: step limit per sample (int ``>= 0``).
            source: where the starting prediction comes from: ``"input"`` (default) or
                ``"reconstruction"`` (the paper's choice). It decides the class that ``Flip`` leaves
                and the direction of ``ProbabilityThreshold``.
            start: ``"mean"`` (default) or ``"sample"``: a reparameterised posterior sample (needs a
                generator with ``encode_sample``, e.g. :class:`~captum_cfx.generators.VAEGenerator`).
            distance_penalty: weight of ``||z - z0||^2`` added to the loss (0 = the paper's choice).
            radius: if given, project ``z`` back onto the L2 ball of this radius around ``z0``.
            skip_zero_grad: stop samples whose first gradient is exactly zero (the reference skips
                them); they are reported as unsuccessful.
            sparsity: weight of an L1 penalty on ``z - z0`` as ISTA's proximal step: ``z - z0`` is
                soft-thresholded by ``sparsity * lr`` after every optimiser step (0 = off, the paper's choice;
                docs/latent_attack.md, "Minimal counterfactuals", and ``LatentAttackConfig.preset``).
            line_search: after success, this many bisection steps along ``z0 + alpha (z - z0)``, keeping the
                smallest ``alpha`` in ``(0, 1]`` found that still meets the objective (0 = off).
            mask_threshold, mask_dilation: ACE-style masking (``None`` = off): pixels where
                ``|counterfactual - reconstruction|`` (max over channels) exceeds the threshold, dilated by
                ``mask_dilation`` pixels, take the counterfactual, the others the reconstruction; kept only
                if the masked image still meets the objective.
            internal_batch_size: process the inputs in chunks of this size.
            generator: a ``torch.Generator`` for the stochastic start.
            progress: show a tqdm progress bar over steps (over finished samples when refilling).
            max_batch, check_every, autocast: speed, same results (see :class:`LatentAttackConfig` and
                docs/latent_attack.md, "Speed"): refilling, compaction every k steps, ``torch.autocast``.

        Returns:
            :class:`~captum_cfx.CounterfactualOutput`.
        """
        settings = {k: v for k, v in locals().items() if k in _FIELDS}  # every config field is an argument
        cfg = LatentAttackConfig(**{**settings, "margin": _DEFAULT.margin if margin is None else margin})
        obj = get_objective(objective) if objective is not None else LogitMargin(cfg.margin)
        opt = cfg.make_optimizer()
        if start == "sample" and not hasattr(self.generator, "encode_sample"):
            raise ValueError(f"`start='sample'` needs a generator with `encode_sample`; "
                             f"{type(self.generator).__name__} has none")
        batch = self._prepare(inputs, target, additional_forward_args, obj)
        return CounterfactualOutput.cat(self._per_chunk(
            batch, internal_batch_size, lambda chunk: self._search_chunk(chunk, obj, opt, cfg, generator, progress)))

    # ------------------------------------------------------------------ the search
    def _start(self, b: Inputs, obj: Objective, cfg: LatentAttackConfig,
               rng: torch.Generator | None) -> tuple[Any, ...]:
        """Encode the chunk: ``(latent0, reconstructions, source predictions, goals, starting z)``."""
        gen = self.generator
        with torch.no_grad():
            latent0 = gen.encode(b.x).detach()
            recon = check_decoded(gen.decode(latent0), b.x).detach()
            src = recon if cfg.source == "reconstruction" else b.x
            src_pred = self._model(src, b.others, b.extra).detach()
        goal = obj.prepare(src_pred, b.target)
        if cfg.start == "sample":
            with torch.no_grad():
                z = gen.encode_sample(b.x, generator=rng).free.detach().clone()  # type: ignore[attr-defined]
        else:
            z = latent0.free.detach().clone()
        return latent0, recon, src_pred, goal, z

    def _step(self, a: ActiveSet, last: bool, obj: Objective, penalty: float) -> Step:
        """Decode the active latents, ask the model, and the loss to descend (none on the last pass)."""
        v = a.vars
        zr = v["z"].detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            img = self.generator.decode(v["latent"].replace(zr))
            out = self._model(img, v["others"], v["extra"])
        if a.t == 0 and not last:
            if not img.requires_grad:
                raise TypeError(f"`generator.decode` of {type(self.generator).__name__} is not differentiable: its "
                                "output does not depend on the latent through autograd (no_grad, detach or numpy "
                                "inside?)")
            if not out.requires_grad:
                raise TypeError("`forward_func` is not differentiable: its output does not depend on the image "
                                "through autograd (no_grad, detach or numpy inside?)")
        out_d = out.detach()
        loss = None
        if not last:
            loss = obj.loss(out, v["goal"])
            if penalty > 0:
                loss = loss + penalty * (zr - v["z0"]).flatten(1).pow(2).sum(1)
        return Step(done=obj.done(out_d, v["goal"]), finite=rows_finite(out_d) & rows_finite(v["z"]),
                    values={"z": v["z"].detach(), "x": img.detach(), "pred": out_d}, loss=loss, wrt=zr)

    @staticmethod
    def _update(a: ActiveSet, grad: Tensor, opt: LatentOptimizer, radius: float | None, sparsity: float) -> None:
        """One optimiser step on the active latents, soft-thresholded towards ``z0`` by ``sparsity * lr``
        (the proximal step of an L1 penalty), then projected onto the ``radius`` ball around ``z0``."""
        z = opt.step(a.vars["z"].detach(), grad, a.state, t=a.steps)
        if sparsity > 0:
            d = z - a.vars["z0"]
            z = a.vars["z0"] + d.sign() * (d.abs() - sparsity * opt.lr).clamp_min(0)
        if radius is not None:
            d = z - a.vars["z0"]
            nrm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
            z = a.vars["z0"] + d * (radius / nrm).clamp(max=1.0).view(-1, *([1] * (d.dim() - 1)))
        a.vars["z"] = z

    def _search_chunk(self, b: Inputs, obj: Objective, opt: LatentOptimizer, cfg: LatentAttackConfig,
                      rng: torch.Generator | None, progress: bool) -> CounterfactualOutput:
        t_start = time.perf_counter()
        starts: list[tuple[Any, ...]] = []  # (latent0, recon, src_pred, goal) of each admission, in row order

        def admit(a: ActiveSet, lo: int, hi: int) -> Entrants:
            sub = b if (lo, hi) == (0, len(b)) else b.rows(lo, hi)
            latent0, recon, src_pred, goal, z = self._start(sub, obj, cfg, rng)
            starts.append((latent0, recon, src_pred, goal))
            return Entrants(vars={"z": z, "z0": latent0.free, "goal": goal, "latent": latent0, "others": sub.others,
                                  "extra": sub.extra},
                            state=opt.init_state(z), results={"z": z, "x": recon, "pred": torch.zeros_like(src_pred)})

        a = ActiveSet(len(b), b.x.device)
        a.run(lambda a, last: self._step(a, last, obj, float(cfg.distance_penalty)),
              lambda a, grad: self._update(a, grad, opt, cfg.radius, float(cfg.sparsity)),
              cfg.max_steps, admit=admit, max_batch=cfg.max_batch, check_every=cfg.check_every,
              autocast=cfg.autocast, zero_grad_stops=cfg.skip_zero_grad, progress=progress, desc="latent attack")
        latent0, recon, src_pred, goal = starts[0] if len(starts) == 1 else (
            Latent.cat([st[0] for st in starts]), *(torch.cat([st[i] for st in starts]) for i in (1, 2, 3)))
        z_cf, x_cf, pred = a.results["z"], a.results["x"], a.results["pred"]
        if cfg.line_search > 0:
            z_cf, x_cf, pred = self._line_search(b, obj, goal, latent0, a.success, (z_cf, x_cf, pred),
                                                 cfg.line_search)
        if cfg.mask_threshold is not None:
            x_cf, pred = self._mask(b, obj, goal, a.success, recon, (x_cf, pred), cfg.mask_threshold,
                                    cfg.mask_dilation)
        return CounterfactualOutput(
            counterfactuals=x_cf,
            latents=latent0.replace(z_cf),
            original_latents=latent0,
            reconstructions=recon,
            original_predictions=src_pred,
            predictions=pred,
            success=a.success,
            n_steps=a.n_steps,
            goals=goal,
            nonfinite=a.nonfinite,
            active_batch_sizes=a.sizes,
            seconds=time.perf_counter() - t_start,
            projection_ok=latent0.diagnostics.get("projection_ok"),
        )

    # ------------------------------------------------------------------ minimality refinements
    def _line_search(self, b: Inputs, obj: Objective, goal: Tensor, latent0: Any, success: Tensor,
                     found: tuple[Tensor, Tensor, Tensor], n_bisect: int) -> tuple[Tensor, Tensor, Tensor]:
        """Bisection of ``alpha`` in ``(0, 1]`` along ``z0 + alpha (z_cf - z0)`` for the successful samples:
        the smallest ``alpha`` found whose decoded image still meets the objective (``alpha = 1`` meets it).
        ``found`` = ``(z_cf, x_cf, pred)`` of the search; returns them at the chosen ``alpha``."""
        z_cf, x_cf, pred = found
        z0 = latent0.free
        d = z_cf - z0
        shape = (-1, *([1] * (d.dim() - 1)))
        lo = torch.zeros(len(d), device=d.device, dtype=d.dtype)
        hi = torch.ones_like(lo)
        best_x, best_pred = x_cf.clone(), pred.clone()
        with torch.no_grad():
            for _ in range(n_bisect):
                mid = (lo + hi) / 2
                img = self.generator.decode(latent0.replace(z0 + mid.view(shape) * d))
                out = self._model(img, b.others, b.extra)
                ok = obj.done(out, goal) & rows_finite(out) & success
                hi = torch.where(ok, mid, hi)
                lo = torch.where(ok | ~success, lo, mid)
                best_x[ok], best_pred[ok] = img[ok], out[ok]
        return torch.where(success.view(shape), z0 + hi.view(shape) * d, z_cf), best_x, best_pred

    def _mask(self, b: Inputs, obj: Objective, goal: Tensor, success: Tensor, recon: Tensor,
              found: tuple[Tensor, Tensor], threshold: float, dilation: int) -> tuple[Tensor, Tensor]:
        """ACE-style: the counterfactual inside the (dilated) region that moved, the reconstruction outside;
        kept for the successful samples whose masked image still meets the objective. ``found`` =
        ``(x_cf, pred)``."""
        x_cf, pred = found
        moved = ((x_cf - recon).abs().amax(1, keepdim=True) > threshold).to(x_cf.dtype)
        if dilation > 0:
            moved = torch.nn.functional.max_pool2d(moved, 2 * dilation + 1, stride=1, padding=dilation)
        masked = recon + moved * (x_cf - recon)
        with torch.no_grad():
            out = self._model(masked, b.others, b.extra)
        keep = obj.done(out, goal) & rows_finite(out) & success
        return (torch.where(keep.view(-1, *([1] * (x_cf.dim() - 1))), masked, x_cf),
                torch.where(keep.view(-1, *([1] * (pred.dim() - 1))), out, pred))
