"""Sparse latent counterfactuals: a greedy best-first search over the generator's latent coordinates.

Gradient searches (:class:`~captum_cfx.LatentCounterfactualAttack` with any step rule or L1 penalty) move
every latent coordinate the model's gradient touches. In a generator whose coordinates mean something on
their own (an attribute-coded latent such as the zoo's ``world-factor-ae``, whose nine coordinates are the
attribute world's factors; an attribute-conditioned generator's attribute inputs), the sparsest
counterfactual is the one that changes the *fewest coordinates*, and it can be searched for directly:

each round, for every sample still searching, every coordinate not yet changed is set in turn to each of
its candidate values (by default the quantiles 0, 0.25, 0.5, 0.75, 1 of the encoded batch: values the data
takes), and all candidates are decoded and scored in batches. The sample keeps the candidate that moves the
model furthest towards the goal (the lowest loss), if it improves on its current loss, and is done as soon as
the kept candidate reaches the objective; at most ``max_changes`` coordinates change. Among several
candidates that reach the objective in the same round it takes, by default, the one that moves the model
furthest past the goal (``select="effect"``); ``select="pixels"`` takes the one whose image changed least.

This is the best-first search of SEDC (Martens & Provost 2014, counterfactuals of document classifiers:
remove the word that lowers the score most until the class changes) moved into a generator's latent space;
the decoder keeps every candidate an image of the data, as in Goldwasser & Hooker's latent attack. Unlike
the gradient search, it needs no gradient of the model or the decoder, and its cost is
``rounds x coordinates x values`` decodes per sample: meant for latents of tens of coordinates, not
thousands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from torch import Tensor

from captum_cfx._config import Config, Interval, Options
from captum_cfx._search import ActiveSet, Step, rows_finite
from captum_cfx._utils import index_args
from captum_cfx._validation import check_decoded
from captum_cfx.attr._base import CounterfactualMethod, Inputs
from captum_cfx.attr.output import CounterfactualOutput
from captum_cfx.objectives import LogitMargin, Objective, get_objective

__all__ = ["CoordinateSearchConfig", "LatentCoordinateSearch"]

#: quantiles of the encoded batch used as candidate values when ``values`` is not given
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True, kw_only=True)
class CoordinateSearchConfig(Config):
    """The coordinate search's settings, validated once; the fields mean what the arguments of
    :meth:`LatentCoordinateSearch.generate` of the same names mean. The defaults are the configuration measured
    in ``benchmarks/coordinate_search.py`` and the ``compare`` row "coordinate search (factor AE)"."""

    max_changes: int = 3
    margin: float = 0.0
    select: str = "effect"
    candidate_batch_size: int = 1024

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "max_changes": [Interval(int, 1, None)],
        "margin": [Interval(float, 0, None)],
        "select": [Options("effect", "pixels", "latent")],
        "candidate_batch_size": [Interval(int, 1, None)],
    }


_DEFAULT = CoordinateSearchConfig()


def candidate_values(values: Tensor | Sequence[float] | None, z0: Tensor) -> Tensor:
    """The ``(D, G)`` candidate values of each of the ``D`` latent coordinates.

    ``values`` may be ``(G,)`` (the same values for every coordinate), ``(D, G)``, or ``None``: the
    quantiles :data:`QUANTILES` of the encoded batch ``z0`` ``(N, D)``, which needs ``N >= 2``.
    """
    n, d = z0.shape
    if values is None:
        if n < 2:
            raise ValueError("`values` must be given when explaining fewer than 2 inputs: the default candidate "
                             f"values are the quantiles of the encoded batch; got {n} input")
        q = torch.tensor(QUANTILES, dtype=torch.float64, device=z0.device)
        return torch.quantile(z0.double(), q, dim=0).T.to(z0.dtype).contiguous()
    try:
        v = torch.as_tensor(values, dtype=z0.dtype, device=z0.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"`values` must be a (G,) or (D, G) tensor or a sequence of numbers; "
                        f"got {type(values).__name__}") from None
    if v.dim() == 1:
        v = v.expand(d, -1)
    if v.dim() != 2 or v.shape[0] != d or v.shape[1] < 1:
        raise ValueError(f"`values` must be (G,) or ({d}, G) for a latent of {d} coordinates; got shape "
                         f"{tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("`values` must be finite; got NaN or inf")
    return v.contiguous()


class LatentCoordinateSearch(CounterfactualMethod):
    """Counterfactuals that change as few latent coordinates as a greedy search can (module docstring).

    Args:
        forward_func: the model to explain.
        generator: a :class:`~captum_cfx.generators.LatentGenerator` whose images are in the model's
            input range; its free latent is searched coordinate by coordinate (flattened).

    Shape:
        - inputs: ``(N, C, H, W)`` in ``generator.input_range`` (or a tuple whose first tensor is the image).
        - target: int, list or ``(N,)`` tensor of classes (or values, with a regression objective).
        - attribute returns ``(N, C, H, W)``: ``counterfactual - reconstruction``.

    Examples::

        >>> import torch
        >>> from captum_cfx import LatentCoordinateSearch
        >>> from captum_cfx.datasets import AttributeWorld
        >>> from captum_cfx.zoo import load_generator, load_pretrained
        >>> x, _ = AttributeWorld().sample(16, generator=torch.Generator().manual_seed(0))
        >>> clf = load_pretrained("world-smile-decorrelated")
        >>> search = LatentCoordinateSearch(clf, load_generator("world-factor-ae"))
        >>> out = search.generate(x, target=1 - clf(x).argmax(1))
        >>> out.counterfactuals.shape, int(out.n_steps.max()) <= 3
        (torch.Size([16, 3, 32, 32]), True)
    """

    def generate(  # type: ignore[override]
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType | float = None,
        additional_forward_args: Any = None,
        *,
        values: Tensor | Sequence[float] | None = None,
        max_changes: int = _DEFAULT.max_changes,
        objective: Objective | str | None = None,
        margin: float = _DEFAULT.margin,
        select: str = _DEFAULT.select,
        candidate_batch_size: int = _DEFAULT.candidate_batch_size,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> CounterfactualOutput:
        """Search counterfactuals and return every result.

        Args:
            inputs, target, additional_forward_args: as in Captum (see the class).
            values: candidate values per coordinate, ``(G,)`` or ``(D, G)``; default the quantiles 0, 0.25,
                0.5, 0.75 and 1 of the encoded batch (then ``N >= 2``).
            max_changes: the most coordinates a sample may change (rounds of the search), int ``>= 1``.
            objective: an :class:`~captum_cfx.objectives.Objective` or its name; default
                ``LogitMargin(margin)``.
            margin: margin of the default objective; 0 (default): the target class's logit is the largest.
            select: which of the candidates that reach the objective in a round a sample takes: ``"effect"``
                (default, SEDC's rule), the one that moves the model furthest past the goal
                (:meth:`~captum_cfx.objectives.Objective.score`); ``"pixels"``, the one whose image is closest to
                the reconstruction (L2); ``"latent"``, the one whose coordinate moves least, in units of its
                candidate range.
            candidate_batch_size: candidate images decoded and scored at a time.
            internal_batch_size: search the inputs in chunks of this size (memory); the default candidate
                values are still the quantiles of the whole batch (encoded chunk by chunk first, an extra
                encoding pass that passing ``values`` avoids), so the results do not depend on the chunking.
            progress: show a tqdm progress bar over rounds.

        Returns:
            :class:`~captum_cfx.CounterfactualOutput`; ``n_steps`` is the number of coordinates changed.
        """
        cfg = CoordinateSearchConfig(max_changes=max_changes, margin=margin, select=select,
                                     candidate_batch_size=candidate_batch_size)
        obj = get_objective(objective) if objective is not None else LogitMargin(cfg.margin)
        batch = self._prepare(inputs, target, additional_forward_args, obj)
        if values is None and internal_batch_size is not None and internal_batch_size < len(batch):
            with torch.no_grad():
                z0 = torch.cat([self.generator.encode(c.x).free.flatten(1) for c in batch.chunks(internal_batch_size)])
            values = candidate_values(None, z0)
        return CounterfactualOutput.cat(self._per_chunk(batch, internal_batch_size,
                                                        lambda b: self._search(b, obj, values, cfg, progress)))

    # ------------------------------------------------------------------ the search
    def _score(self, v: dict[str, Any], rows: Tensor, z: Callable[[int, int], Tensor],
               chunk: int) -> tuple[Tensor, Tensor, list[int]]:
        """Decode the flat latents ``z(lo, hi)`` ``(hi - lo, D)`` of active samples ``rows[lo:hi]``, in chunks of
        ``chunk`` (a chunk's latents are built only when it is scored): the model's outputs, each image's L2
        distance to its sample's reconstruction ``(M,)``, and the chunk sizes."""
        outs, dist, sizes = [], [], []
        n = len(v["z"])
        shape = v["latent"].free.shape[1:]
        for lo in range(0, len(rows), chunk):
            r = rows[lo:lo + chunk]
            img = self.generator.decode(v["latent"][r].replace(z(lo, lo + len(r)).view(-1, *shape)))
            outs.append(self._model(img, tuple(o[r] for o in v["others"]), index_args(v["extra"], n, r)))
            dist.append((img - v["recon"][r]).flatten(1).norm(dim=1))
            sizes.append(len(r))
        return torch.cat(outs), torch.cat(dist), sizes

    def _choose(self, v: dict[str, Any], rows: Tensor, cand: Tensor, obj: Objective, cfg: CoordinateSearchConfig, *,
                sizes: list[int]) -> tuple[Tensor, Tensor]:
        """Score every unchanged coordinate of the active samples ``rows`` at every candidate value ``cand``
        ``(D, G)``: the next flat latents ``(len(rows), D)`` and which samples can make no more progress."""
        z, z0, goal = v["z"], v["z0"], v["goal"]
        ok = ~v["changed"][rows, :, None] & (cand[None] != z[rows, :, None])  # (m, D, G)
        s, d, g = ok.nonzero(as_tuple=True)
        at = rows[s]

        def candidates(lo: int, hi: int) -> Tensor:  # the current latents with one coordinate set
            zc = z[at[lo:hi]].clone()
            zc[torch.arange(hi - lo, device=z.device), d[lo:hi]] = cand[d[lo:hi], g[lo:hi]]
            return zc

        out, dist, chunks = self._score(v, at, candidates, cfg.candidate_batch_size)
        sizes += chunks
        fin = rows_finite(out)
        loss = torch.full(ok.shape, float("inf"), device=z.device, dtype=torch.float64)
        rank = loss.clone()
        loss[s, d, g] = torch.where(fin, obj.loss(out, goal[at]).double(), float("inf"))
        reach = obj.done(out, goal[at]) & fin
        if cfg.select == "effect":
            r = obj.score(out, goal[at])
        elif cfg.select == "latent":
            r = (cand[d, g] - z0[at, d]).abs() / (cand.amax(1) - cand.amin(1)).clamp_min(1e-12)[d]
        else:
            r = dist
        rank[s[reach], d[reach], g[reach]] = r.double()[reach]
        rank, loss = rank.flatten(1), loss.flatten(1)
        # reached: the first by `select`; not reached: the lowest loss, if it improves on the current one
        any_reach = torch.isfinite(rank).any(1)
        best = loss.argmin(1)
        improves = loss.gather(1, best[:, None]).squeeze(1) < v["loss"][rows]
        pick = torch.where(any_reach, rank.argmin(1), best)
        nxt = z[rows].clone()
        move = any_reach | improves
        dd, gg = pick[move] // cand.shape[1], pick[move] % cand.shape[1]
        nxt[torch.arange(len(rows), device=z.device)[move], dd] = cand[dd, gg]
        return nxt, ~move

    def _step(self, a: ActiveSet, last: bool, obj: Objective, cand: Tensor, cfg: CoordinateSearchConfig, *,
              sizes: list[int]) -> Step:
        """Evaluate the active samples' current latents; for those still searching, choose the next move."""
        v = a.vars
        every = torch.arange(len(a), device=v["z"].device)
        img = self.generator.decode(v["latent"].replace(v["z"].view_as(v["latent"].free)))
        out = self._model(img, v["others"], v["extra"])
        sizes.append(len(a))
        done, finite = obj.done(out, v["goal"]), rows_finite(out)
        step = Step(done=done, finite=finite, values={"z": v["z"], "x": img, "pred": out})
        if last:
            return step
        v["loss"] = torch.where(finite, obj.loss(out, v["goal"]).double(), float("inf"))
        v["next"], stuck = v["z"].clone(), torch.zeros_like(done)
        searching = every[~done & finite]
        if len(searching):
            v["next"][searching], stuck[searching] = self._choose(v, searching, cand, obj, cfg, sizes=sizes)
        step.grad, step.stop = v["z"] - v["next"], stuck
        return step

    @staticmethod
    def _update(a: ActiveSet) -> None:
        """Take the chosen moves: one coordinate per sample, at its candidate value exactly."""
        v = a.vars
        v["changed"] = v["changed"] | (v["next"] != v["z"])
        v["z"] = v.pop("next")

    def _search(self, b: Inputs, obj: Objective, values: Any, cfg: CoordinateSearchConfig,
                progress: bool) -> CounterfactualOutput:
        t0 = time.perf_counter()
        n = len(b)
        with torch.no_grad():
            latent0 = self.generator.encode(b.x).detach()
            recon = check_decoded(self.generator.decode(latent0), b.x).detach()
            src_pred = self._model(b.x, b.others, b.extra).detach()
        goal = obj.prepare(src_pred, b.target)
        z0 = latent0.free.reshape(n, -1)
        cand = candidate_values(values, z0)
        sizes: list[int] = []  # images of every decode, for active_batch_sizes
        a = ActiveSet(n, b.x.device, vars={
            "z": z0.clone(), "z0": z0, "goal": goal, "latent": latent0, "recon": recon, "others": b.others,
            "extra": b.extra, "changed": torch.zeros(z0.shape, dtype=torch.bool, device=z0.device)},
            results={"z": z0.clone(), "x": recon.clone(), "pred": torch.zeros_like(src_pred)})
        with torch.no_grad():
            a.run(lambda a, last: self._step(a, last, obj, cand, cfg, sizes=sizes), lambda a, _: self._update(a),
                  cfg.max_changes, progress=progress, desc="coordinate search")
        pred = a.results["pred"]
        return CounterfactualOutput(
            counterfactuals=a.results["x"],
            latents=latent0.replace(a.results["z"].view_as(latent0.free)),
            original_latents=latent0,
            reconstructions=recon,
            original_predictions=src_pred,
            predictions=pred,
            success=a.success,
            n_steps=a.n_steps,
            goals=goal,
            nonfinite=a.nonfinite,
            active_batch_sizes=[(k, False) for k in sizes],
            seconds=time.perf_counter() - t0,
            projection_ok=latent0.diagnostics.get("projection_ok"),
        )
