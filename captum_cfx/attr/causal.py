"""Contrastive and causal necessity / sufficiency of human attributes for a black-box classifier's decision.

Alipour et al. (2022), *Explaining Image Classifiers Using Contrastive Counterfactuals in Generative Latent
Spaces*, ask of every attribute ``A`` (smile, eyeglasses, age, ...) whether it is **necessary** for a positive
decision (removing it flips the decision), **sufficient** (adding it flips a negative decision) or both,
following LEWIS (Galhotra et al. 2021). Attributes are intervened on in a pretrained generator's latent space
(:mod:`captum_cfx.interventions`) and the classifier reads the decoded images:

- ``NEC(A)   = P(h(do(A=0)) negative | A present, h positive)``
- ``SUF(A)   = P(h(do(A=1)) positive | A absent,  h negative)``
- ``NESUF(A) = P(h(do(A=1)) positive and h(do(A=0)) negative)``

How this implementation differs from the paper (whose code holds only the shift-predictor training):

- **Monte Carlo with a validity filter.** Every estimate is a frequency over samples (encoded data or prior
  draws). An intervention counts only when an attribute *oracle* (an image classifier of the attributes) reads
  the requested state on the decoded image; the kept fractions are reported per attribute and direction.
- **Bootstrap confidence intervals** over samples for all three scores.
- **Two modes**, our reading of the paper's contrastive / causal distinction: ``"contrastive"`` pins every other
  attribute at its current state; ``"causal"`` leaves them free (``c = 0``), so what the latent space ties to
  ``A`` follows it. Given a ``causal_graph``, the causal mode instead pins the non-descendants of ``A`` and
  requests new states for its descendants, drawn from the conditional frequencies ``P(D | parents)`` estimated
  on the samples (with abduction: a descendant only changes when its parents' change makes it likely to).
- **Continuous attributes** (e.g. age) are present above a threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor

from captum_cfx._utils import as_tuple, eval_mode
from captum_cfx._validation import check_positive, parse_target
from captum_cfx.attr._common import CaptumInputs, check_model_and_generator
from captum_cfx.generators.base import Latent, LatentGenerator
from captum_cfx.interventions import MODES, LatentIntervention

__all__ = ["CounterfactualSufficiencyNecessity", "SufficiencyNecessityOutput", "plot_sufficiency_necessity"]

SCORES = ("nec", "suf", "nesuf")


@dataclass
class SufficiencyNecessityOutput:
    """Global scores per attribute, with their uncertainty and the per-sample evidence behind them.

    Attributes:
        names: the ``k`` attribute names.
        mode: ``"contrastive"`` or ``"causal"``.
        nec, suf, nesuf: ``(k,)`` estimates (NaN where no sample qualifies).
        nec_ci, suf_ci, nesuf_ci: ``(k, 2)`` bootstrap percentile intervals.
        n_nec, n_suf, n_nesuf: ``(k,)`` samples each estimate averages over (after the validity filter).
        kept_add, kept_remove: ``(k,)`` fraction of interventions the oracle confirms, over the samples where
            the intervention changes the attribute (adding to samples without it, removing from samples with it).
        others_changed: ``(k,)`` mean number of other attributes whose oracle state changed (both directions).
        prob, prob_add, prob_remove: ``(N,)`` model probability of the positive outcome on the decoded samples,
            ``(N, k)`` after ``do(A=1)`` and after ``do(A=0)``.
        state: ``(N, k)`` bool, attribute presence read by the oracle on the decoded samples.
        valid_add, valid_remove: ``(N, k)`` bool, oracle-confirmed interventions.
        latents: ``(N, d)`` the samples; latents_add, latents_remove: ``(N, k, d)`` the intervened latents
            (``None`` with ``keep_latents=False``).
        confidence: level of the intervals.
        nonfinite: ``(N,)`` bool, the model gave NaN/Inf for this sample (before or after an intervention); such
            samples are left out of every estimate, the others count as without them.
        extra: ``causal_graph`` (whether one was used) and the samples' ``Latent.diagnostics``: for samples
            encoded by optimisation (e.g. :class:`~captum_cfx.generators.GANGenerator`), ``projection_ok``:
            ``(N,)`` bool, False where the sample is a failed projection of its image, and ``projection_error``.
    """

    names: list[str]
    mode: str
    nec: Tensor
    suf: Tensor
    nesuf: Tensor
    nec_ci: Tensor
    suf_ci: Tensor
    nesuf_ci: Tensor
    n_nec: Tensor
    n_suf: Tensor
    n_nesuf: Tensor
    kept_add: Tensor
    kept_remove: Tensor
    others_changed: Tensor
    prob: Tensor
    prob_add: Tensor
    prob_remove: Tensor
    state: Tensor
    valid_add: Tensor
    valid_remove: Tensor
    latents: Tensor
    latents_add: Tensor | None = None
    latents_remove: Tensor | None = None
    confidence: float = 0.95
    extra: dict[str, Any] = field(default_factory=dict)
    nonfinite: Tensor | None = None

    @property
    def kept(self) -> Tensor:
        """``(k,)`` kept fraction over both directions."""
        ch_add, ch_rem = ~self.state, self.state
        num = (self.valid_add & ch_add).sum(0) + (self.valid_remove & ch_rem).sum(0)
        return num.float() / (ch_add.sum(0) + ch_rem.sum(0)).clamp_min(1).float()

    def score(self, name: str) -> Tensor:
        """``(k,)`` values of ``"nec"``, ``"suf"`` or ``"nesuf"``."""
        if name not in SCORES:
            raise ValueError(f"`name` must be one of {SCORES}; got {name!r}")
        return getattr(self, name)

    def index(self, attribute: str) -> int:
        if attribute not in self.names:
            raise ValueError(f"`attribute` must be one of {self.names}; got {attribute!r}")
        return self.names.index(attribute)

    def to_dict(self, digits: int = 4) -> dict[str, dict[str, Any]]:
        """``{attribute: {nec, nec_ci, n_nec, suf, ..., kept_add, kept_remove}}`` with rounded floats."""

        def r(v: Tensor) -> float | None:
            f = float(v)
            return None if f != f else round(f, digits)

        out: dict[str, dict[str, Any]] = {}
        for j, n in enumerate(self.names):
            row: dict[str, Any] = {}
            for s in SCORES:
                row[s] = r(getattr(self, s)[j])
                row[f"{s}_ci"] = [r(v) for v in getattr(self, f"{s}_ci")[j]]
                row[f"n_{s}"] = int(getattr(self, f"n_{s}")[j])
            row.update(kept_add=r(self.kept_add[j]), kept_remove=r(self.kept_remove[j]), kept=r(self.kept[j]),
                       others_changed=r(self.others_changed[j]))
            out[n] = row
        return out

    def plot(self, **kwargs: Any) -> Any:
        """Bar chart of the three scores per attribute (see :func:`plot_sufficiency_necessity`)."""
        return plot_sufficiency_necessity({self.mode: self}, **kwargs)


def plot_sufficiency_necessity(results: Mapping[str, SufficiencyNecessityOutput] | SufficiencyNecessityOutput,
                               title: str | None = None, scores: Sequence[str] = SCORES) -> Any:
    """Global bar charts: NEC, SUF and NESUF per attribute with their intervals, one panel per result (mode).

    Args:
        results: one output, or ``{label: output}`` (e.g. ``{"contrastive": a, "causal": b}``).
        title: figure title.
        scores: which scores to draw.

    Returns:
        a matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if isinstance(results, SufficiencyNecessityOutput):
        results = {results.mode: results}
    if not isinstance(results, Mapping) or not results or not all(
            isinstance(v, SufficiencyNecessityOutput) for v in results.values()):
        raise TypeError("`results` must be a SufficiencyNecessityOutput or a non-empty mapping of them")
    for s in scores:
        if s not in SCORES:
            raise ValueError(f"`scores` must be drawn from {SCORES}; got {s!r}")
    colors = {"nec": "#1f77b4", "suf": "#d62728", "nesuf": "#2ca02c"}
    k = max(len(r.names) for r in results.values())
    fig, axes = plt.subplots(1, len(results), figsize=(max(4.0, 0.55 * k + 1.5) * len(results), 3.2), squeeze=False,
                             sharey=True)
    width = 0.8 / len(scores)
    for ax, (label, res) in zip(axes[0], results.items()):
        x = np.arange(len(res.names))
        for i, s in enumerate(scores):
            v = res.score(s).float().nan_to_num(0).numpy()
            ci = getattr(res, f"{s}_ci").float().numpy()
            err = np.stack([v - np.nan_to_num(ci[:, 0], nan=0.0), np.nan_to_num(ci[:, 1], nan=0.0) - v]).clip(0)
            ax.bar(x + (i - (len(scores) - 1) / 2) * width, v, width, yerr=err, capsize=2, color=colors[s],
                   label=s.upper(), ecolor="0.3")
        ax.set_xticks(x)
        ax.set_xticklabels(res.names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{label} (kept {float(res.kept.mean()):.0%})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("probability")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _topological(graph: Mapping[str, Sequence[str]], names: Sequence[str]) -> list[str]:
    order: list[str] = []
    todo = [n for n in names if n in graph]
    while todo:
        ready = [n for n in todo if all(p not in todo for p in graph.get(n, ()))]
        if not ready:
            raise ValueError(f"`causal_graph` must be acyclic; found a cycle among {todo}")
        order += ready
        todo = [n for n in todo if n not in ready]
    return order


class CounterfactualSufficiencyNecessity(PerturbationAttribution):
    r"""Necessity, sufficiency and both (NEC, SUF, NESUF) of named attributes for a classifier's decision.

    The attributes are intervened on in a generator's latent space (:mod:`captum_cfx.interventions`); an oracle
    reads the attributes on the decoded images to keep only the interventions that did what they were asked
    (the validity filter) and to tell which attributes each sample has. See the module docstring for the
    definitions and for how this implementation differs from Alipour et al. (2022).

    :meth:`estimate` returns the global scores (:class:`SufficiencyNecessityOutput`); :meth:`attribute` returns
    a local, per-input reading in Captum's style: ``p(h = o | do(A=1)) - p(h = o | do(A=0))`` per attribute.
    Each intervention batch is decoded once.

    Args:
        forward_func: the classifier (logits ``(N, K)``; one logit for a binary model).
        generator: the :class:`~captum_cfx.generators.LatentGenerator` whose latent space is intervened on.
        intervention: a fitted :class:`~captum_cfx.interventions.LatentIntervention`
            (:class:`~captum_cfx.interventions.LinearDirections` or :class:`~captum_cfx.interventions.ShiftPredictor`).
        oracle: images ``(N, C, H, W)`` -> attribute readings ``(N, k)``, columns in ``intervention.names_`` order
            (e.g. ``lambda x: torch.sigmoid(world_oracle(x))``).
        thresholds: ``{attribute: value}``: presence is ``reading > threshold`` (default 0.5 for every attribute).
        causal_graph: optional ``{attribute: parents}`` (e.g. :data:`~captum_cfx.datasets.CAUSAL_GRAPH`) for the
            graph-following causal mode.

    Shape:
        - inputs: ``(N, C, H, W)`` images in ``generator.input_range`` (or a tuple whose first member is the
          images; the later members are passed to ``forward_func`` after them).
        - attribute returns ``(N, k)`` in ``[-1, 1]``: 0 where an intervention failed the validity filter (for
          tuple inputs a tuple: the ``(N, k)`` effects, then zeros shaped like the later members).

    Examples::

        >>> import torch
        >>> from captum_cfx import CounterfactualSufficiencyNecessity, LatentProbes
        >>> from captum_cfx.datasets import AttributeWorld
        >>> from captum_cfx.interventions import LinearDirections
        >>> from captum_cfx.zoo import load_generator, load_pretrained
        >>> world, gen = AttributeWorld(), load_generator("world-vae")
        >>> oracle = load_pretrained("world-oracle")
        >>> x, f = world.sample(400, generator=torch.Generator().manual_seed(0))
        >>> z = gen.encode(x).free.detach()
        >>> lin = LinearDirections(LatentProbes().fit(z, f, world.factor_names), z)
        >>> cfsn = CounterfactualSufficiencyNecessity(load_pretrained("world-smile-spurious"), gen, lin,
        ...                                           oracle=lambda im: torch.sigmoid(oracle(im)))
        >>> res = cfsn.estimate(x[:100], target=1, n_bootstrap=100)   # global scores per attribute
        >>> res.suf.shape
        torch.Size([9])
        >>> cfsn.attribute(x[:4], target=1).shape                     # per-input effects
        torch.Size([4, 9])
    """

    def __init__(self, forward_func: Callable[..., Tensor], generator: LatentGenerator,
                 intervention: LatentIntervention, *, oracle: Callable[[Tensor], Tensor],
                 thresholds: Mapping[str, float] | None = None,
                 causal_graph: Mapping[str, Sequence[str]] | None = None) -> None:
        check_model_and_generator(forward_func, generator)
        if not isinstance(intervention, LatentIntervention):
            raise TypeError(f"`intervention` must be a LatentIntervention (LinearDirections, ShiftPredictor); "
                            f"got {type(intervention).__name__}")
        intervention.check_fitted()
        if not callable(oracle):
            raise TypeError(f"`oracle` must be callable (images -> (N, k) attribute readings); "
                            f"got {type(oracle).__name__}")
        PerturbationAttribution.__init__(self, forward_func)
        self.generator = generator
        self.intervention = intervention
        self.oracle = oracle
        names = list(intervention.names_)
        thresholds = dict(thresholds or {})
        unknown = sorted(set(thresholds) - set(names))
        if unknown:
            raise ValueError(f"`thresholds` must name attributes from {names}; got unknown {unknown}")
        self.thresholds = torch.tensor([float(thresholds.get(n, 0.5)) for n in names])
        self.causal_graph: dict[str, tuple[str, ...]] | None = None
        if causal_graph is not None:
            if not isinstance(causal_graph, Mapping):
                raise TypeError(f"`causal_graph` must be a mapping {{attribute: parents}}; "
                                f"got {type(causal_graph).__name__}")
            graph = {str(k): tuple(v) for k, v in causal_graph.items() if k in names}
            _topological(graph, names)
            self.causal_graph = {n: tuple(p for p in graph.get(n, ()) if p in names) for n in names}

    @property
    def names(self) -> list[str]:
        """The attribute names, in column order."""
        return list(self.intervention.names_)

    def descendants(self, attribute: str) -> list[str]:
        """Attributes downstream of ``attribute`` in :attr:`causal_graph` (empty without a graph)."""
        if self.causal_graph is None:
            return []
        out: list[str] = []
        frontier = [attribute]
        while frontier:
            cur = frontier.pop()
            for child, parents in self.causal_graph.items():
                if cur in parents and child not in out:
                    out.append(child)
                    frontier.append(child)
        return [n for n in self.names if n in out]

    # ------------------------------------------------------------------ helpers
    def _probability(self, images: Tensor, target: Tensor | None, extra: tuple[Any, ...]) -> Tensor:
        """Probability of the positive outcome; ``target`` is ``None`` or one class per image, ``(N,)``."""
        out = self.forward_func(images, *extra)
        if not isinstance(out, Tensor):
            raise TypeError(f"`forward_func` must return a tensor; got {type(out).__name__}")
        if out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1):
            return torch.sigmoid(out.reshape(out.shape[0]))
        if out.dim() != 2:
            raise ValueError(f"`forward_func` must return (N, K) logits; got shape {tuple(out.shape)}")
        if target is None:
            if out.shape[1] != 2:
                raise ValueError(f"`target` is required for a model with {out.shape[1]} outputs: the class whose "
                                 "probability is the positive outcome")
            target = torch.ones(out.shape[0], dtype=torch.long, device=out.device)
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= out.shape[1]):
            raise ValueError(f"`target` must be a class index in [0, {out.shape[1] - 1}]; "
                             f"got values in [{int(target.min())}, {int(target.max())}]")
        return torch.softmax(out.float(), 1).gather(1, target.view(-1, 1).to(out.device))[:, 0]

    def _read(self, images: Tensor) -> Tensor:
        r = self.oracle(images)
        k = len(self.names)
        if not isinstance(r, Tensor) or r.shape != (images.shape[0], k):
            raise ValueError(f"`oracle` must return ({images.shape[0]}, {k}) readings, one column per attribute "
                             f"{self.names}; got {getattr(r, 'shape', type(r).__name__)}")
        return r.float()

    def _evaluate(self, z: Tensor, fixed: dict[str, Tensor], target: Tensor | None, extra: tuple[Any, ...],
                  batch_size: int) -> tuple[Tensor, Tensor]:
        """Decode ``z`` once per batch; return model probability ``(N,)`` and oracle presence ``(N, k)``."""
        probs, states = [], []
        thr = self.thresholds.to(z.device)
        for lo in range(0, z.shape[0], batch_size):
            sl = slice(lo, lo + batch_size)
            lat = Latent(self._unflatten(z[sl]), {k: v[sl] for k, v in fixed.items()})
            x = self.generator.decode(lat)
            args = tuple(a[sl] if isinstance(a, Tensor) and a.dim() and a.shape[0] == z.shape[0] else a
                         for a in extra)
            probs.append(self._probability(x, target[sl] if target is not None else None, args).float())
            states.append(self._read(x) > thr)
        return torch.cat(probs), torch.cat(states)

    def _conditionals(self, state: Tensor) -> dict[str, tuple[list[int], Tensor]]:
        """``{attribute: (parent columns, P(present | parent pattern) table)}`` estimated on the samples."""
        out: dict[str, tuple[list[int], Tensor]] = {}
        for n, parents in (self.causal_graph or {}).items():
            if not parents:
                continue
            cols = [self.names.index(p) for p in parents]
            code = sum(state[:, c].long() << i for i, c in enumerate(cols))
            cells = 2 ** len(cols)
            hit = torch.zeros(cells).index_add_(0, code.cpu(), state[:, self.names.index(n)].float().cpu())
            cnt = torch.zeros(cells).index_add_(0, code.cpu(), torch.ones(state.shape[0]))
            out[n] = (cols, (hit + 1) / (cnt + 2))  # Laplace-smoothed frequencies
        return out

    def _requests(self, state: Tensor, j: int, add: bool, mode: str, cond: dict[str, tuple[list[int], Tensor]],
                  generator: torch.Generator | None) -> Tensor:
        n, k = state.shape
        s = state.float()
        if mode == "contrastive" or self.causal_graph is not None:
            c = 2 * s - 1
        else:
            c = torch.zeros(n, k, device=state.device)
        c[:, j] = 1.0 if add else -1.0
        if mode == "causal" and self.causal_graph is not None:
            new = s.clone()
            new[:, j] = 1.0 if add else 0.0
            for name in _topological(self.causal_graph, self.names):
                if name not in cond or name not in self.descendants(self.names[j]):
                    continue
                cols, table = cond[name]
                d = self.names.index(name)
                old_code = sum(s[:, col].long() << i for i, col in enumerate(cols)).cpu()
                new_code = sum(new[:, col].long() << i for i, col in enumerate(cols)).cpu()
                p_old, p_new = table[old_code], table[new_code]
                # abduction: the exogenous uniform u is consistent with the observed state, then reused
                u = torch.rand(n, generator=generator)
                cur = s[:, d].cpu()
                u = torch.where(cur > 0.5, u * p_old, p_old + u * (1 - p_old))
                new[:, d] = (u < p_new).float().to(state.device)
                c[:, d] = 2 * new[:, d] - 1
        return c

    def _unflatten(self, z: Tensor) -> Tensor:
        """Flat ``(N, d)`` latents back in the shape the generator's free part has (e.g. an SD-VAE's
        ``(N, 4, h, w)``), as recorded by the last :meth:`estimate`; flat when unknown."""
        shape = getattr(self, "latent_shape_", None)
        return z.reshape(z.shape[0], *shape) if shape is not None and len(shape) > 1 else z

    def _prepare(self, inputs: Tensor | None, latents: Any, n_samples: int | None, generator: torch.Generator | None
                 ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``(z, fixed parts, diagnostics)`` of the samples (``z`` flat; the free part's shape is recorded in
        ``latent_shape_``)."""
        z, fixed, diagnostics, shape = self._prepare_shaped(inputs, latents, n_samples, generator)
        self.latent_shape_ = shape
        return z, fixed, diagnostics

    def _prepare_shaped(self, inputs: Tensor | None, latents: Any, n_samples: int | None,
                        generator: torch.Generator | None
                        ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], tuple[int, ...] | None]:
        given = [inputs is not None, latents is not None, n_samples is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of `inputs` (images to encode), `latents` and `n_samples` "
                             "(draws from the generator's prior)")
        if inputs is not None:
            x = self.generator.check_images(inputs, "inputs")
            with eval_mode(self.generator):
                lat = self.generator.encode(x).detach()
            return lat.free.flatten(1), lat.fixed, lat.diagnostics, tuple(lat.free.shape[1:])
        if latents is not None:
            if isinstance(latents, Latent):
                lat = latents.detach()
                return lat.free.flatten(1), lat.fixed, lat.diagnostics, tuple(lat.free.shape[1:])
            if not isinstance(latents, Tensor) or latents.dim() < 2 or not latents.is_floating_point():
                raise ValueError(f"`latents` must be a floating (N, d) tensor or a Latent; got "
                                 f"{getattr(latents, 'shape', type(latents).__name__)}")
            return latents.detach().flatten(1), {}, {}, tuple(latents.shape[1:])
        check_positive(n_samples, "n_samples", integer=True)
        draw = getattr(self.generator, "sample", None)
        if callable(draw):  # the generator's own prior (e.g. a GAN's mapped W), with its fixed part
            lat = draw(int(n_samples), generator=generator).detach()
            return lat.free.flatten(1), lat.fixed, lat.diagnostics, tuple(lat.free.shape[1:])
        z = torch.randn(int(n_samples), self.intervention.latent_dim_, generator=generator)
        return z.to(self.generator.device, self.generator.dtype), {}, {}, None

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def estimate(
        self,
        inputs: TensorOrTupleOfTensorsGeneric | None = None,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        latents: Tensor | Latent | None = None,
        n_samples: int | None = None,
        mode: str = "contrastive",
        n_bootstrap: int = 1000,
        confidence: float = 0.95,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
        keep_latents: bool = True,
    ) -> SufficiencyNecessityOutput:
        """Monte Carlo NEC, SUF and NESUF of every attribute, with bootstrap intervals.

        Args:
            inputs: images to encode as the samples, or a tuple whose first member is the images and whose later
                members are passed to ``forward_func`` after them; or give ``latents`` or ``n_samples``.
            target: the class whose probability > 0.5 is the positive outcome ``o``: one class for every sample
                (an int or a one-element tensor) or one per sample (a list or an ``(N,)`` tensor); default 1 for
                two-logit models; ignored for one-logit models.
            additional_forward_args: extra arguments of ``forward_func`` (tensors with ``N`` rows are batched).
            latents: ``(N, d)`` latents (or a ``Latent``) to use as the samples.
            n_samples: draw this many latents from the generator's prior instead: its ``sample(n,
                generator=...)`` method where it has one (e.g. a GAN's mapped W), else a standard normal.
            mode: ``"contrastive"`` or ``"causal"`` (see the class docstring).
            n_bootstrap: bootstrap resamples for the intervals.
            confidence: interval level.
            batch_size: latents decoded at a time.
            generator: ``torch.Generator`` for prior draws, causal-mode draws and the bootstrap.
            keep_latents: keep the intervened latents in the output (for :meth:`plot_examples`).

        Returns:
            :class:`SufficiencyNecessityOutput`.
        """
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}")
        check_positive(n_bootstrap, "n_bootstrap", integer=True)
        check_positive(batch_size, "batch_size", integer=True)
        if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
            raise ValueError(f"`confidence` must be a float in (0, 1); got {confidence!r}")
        inp = CaptumInputs.parse(inputs) if inputs is not None else None
        z, fixed, diagnostics = self._prepare(inp.image if inp is not None else None, latents, n_samples, generator)
        if z.shape[0] == 0:
            raise ValueError("the samples must hold at least one row; got 0")
        target = parse_target(target, z.shape[0], None, z.device)
        extra = inp.forward_args(additional_forward_args) if inp is not None else as_tuple(additional_forward_args)
        names, n = self.names, z.shape[0]
        with eval_mode(self.generator, self.forward_func):
            p0, s0 = self._evaluate(z, fixed, target, extra, batch_size)
            cond = self._conditionals(s0) if mode == "causal" and self.causal_graph is not None else {}
            p_add, p_rem, v_add, v_rem, others, z_add, z_rem = self._intervene_all(
                z, fixed, target, extra, s0=s0, mode=mode, cond=cond, generator=generator, batch_size=batch_size,
                keep_latents=keep_latents)
        p0, s0 = p0.cpu(), s0.cpu()
        bad = ~torch.isfinite(p0) | ~torch.isfinite(p_add).all(1) | ~torch.isfinite(p_rem).all(1)
        if bool(bad.any()):
            warnings.warn(f"{int(bad.sum())} of {n} samples gave NaN/Inf model outputs; they are left out of the "
                          "estimates (see SufficiencyNecessityOutput.nonfinite)", stacklevel=2)
        pos0 = (p0 > 0.5)[:, None]
        ok = ~bad[:, None]
        rows = {"nec": s0 & pos0 & v_rem & ok, "suf": ~s0 & ~pos0 & v_add & ok, "nesuf": v_add & v_rem & ok}
        events = {"nec": p_rem <= 0.5, "suf": p_add > 0.5, "nesuf": (p_add > 0.5) & (p_rem <= 0.5)}
        est = _scores_with_ci(rows, events, self._bootstrap_weights(n, n_bootstrap, generator), confidence)
        kept_add = (v_add & ~s0).sum(0).float() / (~s0).sum(0).clamp_min(1).float()
        kept_rem = (v_rem & s0).sum(0).float() / s0.sum(0).clamp_min(1).float()
        return SufficiencyNecessityOutput(
            names=names, mode=mode, **est, kept_add=kept_add, kept_remove=kept_rem, others_changed=others,
            prob=p0, prob_add=p_add, prob_remove=p_rem, state=s0, valid_add=v_add, valid_remove=v_rem,
            latents=z.cpu(), latents_add=z_add, latents_remove=z_rem, confidence=confidence,
            extra={"causal_graph": self.causal_graph is not None,
                   **{k: v.cpu() for k, v in diagnostics.items()}},
            nonfinite=bad,
        )

    def _intervene_all(self, z: Tensor, fixed: Any, target: Any, extra: Any, *, s0: Tensor, mode: str,
                       cond: dict, generator: torch.Generator | None, batch_size: int,
                       keep_latents: bool) -> tuple[Tensor, ...]:
        """Intervene on every attribute, adding and removing it, and read the model and the oracle:
        ``(p_add, p_remove, valid_add, valid_remove, others_changed, latents_add, latents_remove)``."""
        n, k = s0.shape
        p_add, p_rem = torch.empty(n, k), torch.empty(n, k)
        v_add = torch.empty(n, k, dtype=torch.bool)
        v_rem = torch.empty(n, k, dtype=torch.bool)
        others = torch.zeros(k)
        z_add = torch.empty(n, k, z.shape[1], dtype=z.dtype) if keep_latents else None
        z_rem = torch.empty(n, k, z.shape[1], dtype=z.dtype) if keep_latents else None
        for j in range(k):
            for add in (True, False):
                c = self._requests(s0, j, add, mode, cond, generator)
                z1 = self.intervention.apply(z, c)
                p1, s1 = self._evaluate(z1, fixed, target, extra, batch_size)
                ok = s1[:, j] == add
                mask = torch.ones(k, dtype=torch.bool)
                mask[j] = False
                others[j] += (s1[:, mask] != s0[:, mask]).float().sum(1).mean().cpu() / 2
                p, v, zs = (p_add, v_add, z_add) if add else (p_rem, v_rem, z_rem)
                p[:, j], v[:, j] = p1.cpu(), ok.cpu()
                if zs is not None:
                    zs[:, j] = z1.cpu()
        return p_add, p_rem, v_add, v_rem, others, z_add, z_rem  # type: ignore[return-value]

    @staticmethod
    def _bootstrap_weights(n: int, b: int, generator: torch.Generator | None) -> Tensor:
        """``(b, n)`` resampling counts (each row sums to ``n``)."""
        idx = torch.randint(0, n, (b, n), generator=generator)
        return torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(b, n, dtype=torch.float64))

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        mode: str = "contrastive",
        batch_size: int = 256,
        generator: torch.Generator | None = None,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Per-input effect ``p(o | do(A=1)) - p(o | do(A=0))`` of every attribute on the positive outcome.

        An input whose ``do(A=1)`` or ``do(A=0)`` fails the validity filter gets 0 for ``A``.

        Args:
            inputs, target, additional_forward_args: as in :meth:`estimate`.
            mode, batch_size, generator: as in :meth:`estimate`.

        Returns:
            ``(N, k)`` tensor in ``[-1, 1]`` on the inputs' device; columns :attr:`names`. For tuple ``inputs``,
            a tuple: the ``(N, k)`` effects, then zeros shaped like the later members.
        """
        inp = CaptumInputs.parse(inputs)
        with torch.enable_grad():  # Captum convention; no gradients are taken
            res = self.estimate(inp.image, target, inp.forward_args(additional_forward_args), mode=mode,
                                n_bootstrap=1, batch_size=batch_size, generator=generator, keep_latents=False)
        eff = torch.where(res.valid_add & res.valid_remove, res.prob_add - res.prob_remove, 0.0)
        return inp.like_inputs(eff.to(inp.image.device, inp.image.dtype))

    @torch.no_grad()
    def plot_examples(self, result: SufficiencyNecessityOutput, attributes: Sequence[str] | None = None,
                      n: int = 3, *, target: int | None = None) -> Any:
        """Image grid: per attribute, ``n`` valid interventions (adds, then removes), before and after, with the
        classifier's probability of the positive outcome on each image.

        Args:
            result: an :meth:`estimate` output made with ``keep_latents=True``.
            attributes: the rows (default: every attribute).
            n: examples per attribute.
            target: as in :meth:`estimate`.

        Returns:
            a matplotlib ``Figure``.
        """
        import matplotlib.pyplot as plt

        if not isinstance(result, SufficiencyNecessityOutput):
            raise TypeError(f"`result` must be a SufficiencyNecessityOutput; got {type(result).__name__}")
        if result.latents_add is None or result.latents_remove is None:
            raise ValueError("`result` holds no intervened latents; call `estimate(..., keep_latents=True)`")
        check_positive(n, "n", integer=True)
        attributes = list(result.names) if attributes is None else list(attributes)
        for a in attributes:
            result.index(a)
        fig, axes = plt.subplots(len(attributes), 2 * n, figsize=(1.3 * 2 * n, 1.45 * len(attributes)),
                                 squeeze=False)
        dev, dt = self.generator.device, self.generator.dtype
        for r, a in enumerate(attributes):
            j = result.index(a)
            adds = ((~result.state[:, j]) & result.valid_add[:, j]).nonzero().flatten().tolist()
            rems = (result.state[:, j] & result.valid_remove[:, j]).nonzero().flatten().tolist()
            picks = [(i, True) for i in adds[: (n + 1) // 2]] + [(i, False) for i in rems[: n // 2]]
            picks += [(i, True) for i in adds[(n + 1) // 2:]][: n - len(picks)]
            picks += [(i, False) for i in rems[n // 2:]][: n - len(picks)]
            for col in range(n):
                for side in range(2):
                    ax = axes[r, 2 * col + side]
                    ax.axis("off")
                    if col >= len(picks):
                        continue
                    i, add = picks[col]
                    zz = result.latents[i: i + 1] if side == 0 else (
                        result.latents_add if add else result.latents_remove)[i, j][None]
                    with eval_mode(self.generator):
                        img = self.generator.decode(Latent(self._unflatten(zz.to(dev, dt))))
                    p = float(self._probability(img, parse_target(target, 1, None, img.device), ()).reshape(-1)[0])
                    im = img[0].detach().float().cpu()
                    lo, hi = self.generator.input_range or (float(im.min()), float(im.max()))
                    im = ((im - lo) / max(hi - lo, 1e-8)).clamp(0, 1).permute(1, 2, 0).numpy()
                    ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray" if im.shape[2] == 1 else None)
                    label = "before" if side == 0 else ("+" if add else "-") + a
                    ax.set_title(f"{label}\np={p:.2f}", fontsize=7)
        fig.suptitle(f"{result.mode} interventions; p = classifier probability of the positive outcome", fontsize=8)
        fig.tight_layout()
        return fig


def _scores_with_ci(rows: dict[str, Tensor], events: dict[str, Tensor], weights: Tensor,
                    confidence: float) -> dict[str, Tensor]:
    """Each score ``P(event | row qualifies)`` per attribute, its bootstrap interval (``weights`` ``(B, N)``
    resample the rows) and its number of qualifying rows."""
    q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
    est: dict[str, Tensor] = {}
    for s in SCORES:
        r, e = rows[s].double(), (rows[s] & events[s]).double()
        den = r.sum(0)
        est[s] = (e.sum(0) / den).float()  # NaN where no sample qualifies
        bn, bd = weights @ e, weights @ r  # (B, k)
        boot = torch.where(bd > 0, bn / bd.clamp_min(1), torch.nan)
        est[f"{s}_ci"] = torch.nanquantile(boot, q, dim=0).T.float()
        est[f"n_{s}"] = den.long()
    return est
