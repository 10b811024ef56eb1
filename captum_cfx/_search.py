"""The per-sample search engine shared by every method that optimises one thing per sample.

A batch of searches (a latent per image, pixels per image, a GAN projection per image) runs as one
:class:`ActiveSet`: the per-sample tensors of the samples still searching, their optimiser state and
step counters, and the final buffers the stopped samples have been written into. A method supplies only
its *step*: a function that evaluates the active samples and returns a :class:`Step` (which samples
met the objective, which are finite, the loss or gradient, and the per-sample values to keep if a sample
stops now), and an *update* that moves the active samples. :meth:`ActiveSet.run` does the rest, once
for every method:

- **compaction**: a sample that stops leaves the batch; its values are written into the final buffers
  (:meth:`ActiveSet.finish`) and every per-sample tensor, the optimiser state and the step counters are
  sliced (:meth:`ActiveSet.compact`), so later steps compute only the samples still searching;
- **non-finite isolation**: a sample whose output, latent or gradient is NaN/Inf is flagged
  (``nonfinite``) and leaves; its loss is zeroed before the backward pass, so the other samples'
  results are bit-identical to a run without it;
- **step accounting**: ``n_steps`` per sample (optimiser steps taken when it stopped) and the size of
  every forward pass (``sizes``), from which the loop's overhead is measured;
- a tqdm **progress bar** that can be turned off.

Every per-sample quantity is a tensor with one row per active sample (``steps`` included: each sample
counts its own optimiser steps, and :class:`~captum_cfx.optim.LatentAdam` takes per-sample step
counts), so samples that enter a running batch at step 0 with fresh optimiser state (refilling) need
only be appended to the active set. Refilling goes here, in one place: an ``admit(rows, vars, state)`` that
concatenates the new samples' batch rows to :attr:`ActiveSet.index`, zeros to :attr:`ActiveSet.steps`,
their per-sample values to :attr:`ActiveSet.vars` and ``optimizer.init_state`` of their latents to
:attr:`ActiveSet.state` (the result buffers then cover every sample of the data set, or are flushed as
samples stop), and a per-sample "last pass" (``steps == max_steps``) in :meth:`ActiveSet.run` instead of the
shared ``t == max_steps``. The methods' steps already read everything per sample from the active set.

Shape:
    - every tensor of :attr:`ActiveSet.vars` and :attr:`ActiveSet.state`: ``(n_active, *)``;
    - every tensor of :attr:`ActiveSet.results`: ``(n, *)``, one row per sample of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from captum_cfx._utils import index_args

__all__ = ["ActiveSet", "Step", "rows_finite"]


def rows_finite(x: Tensor) -> Tensor:
    """bool ``(N,)``: every entry of row ``i`` of ``x`` is finite."""
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(1)


def _take(value: Any, keep: Tensor, n: int) -> Any:
    """Rows ``keep`` of a per-sample value: a tuple of arguments (whose tensors with batch size ``n`` are
    indexed, the others passed on), ``None``, or anything indexed by rows (a tensor, a ``Latent``)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return index_args(value, n, keep)
    return value[keep]


@dataclass(kw_only=True)
class Step:
    """What a method's step reports about the active samples.

    Attributes:
        done: bool ``(n_active,)``: the sample met its objective (it stops, successfully).
        finite: bool ``(n_active,)``: the forward pass of the sample is finite; a non-finite sample stops,
            unsuccessfully, flagged ``nonfinite``.
        values: per-sample tensors ``(n_active, *)`` written into :attr:`ActiveSet.results` for the samples
            that stop now (keys of registered results).
        loss: per-sample loss ``(n_active,)`` with its graph to ``wrt``; the engine zeroes the rows that
            stop now or are not finite, and takes the gradient. ``None`` on the last pass.
        wrt: the leaf tensor the loss is differentiated with respect to.
        grad: the gradient, if the method computes it itself (then ``loss`` is ``None``).
    """

    done: Tensor
    finite: Tensor
    values: dict[str, Tensor] = field(default_factory=dict)
    loss: Tensor | None = None
    wrt: Tensor | None = None
    grad: Tensor | None = None


class ActiveSet:
    """The samples of one batch that are still searching, and the results of those that stopped.

    Args:
        n: samples in the batch.
        device: device of the index, counters and flags.
        vars: per-sample values of the active samples, batch first: tensors, :class:`Latent` s, or tuples
            of arguments whose tensors with the batch size are per sample (``additional_forward_args``).
            Read and replace them through :attr:`vars`; they are sliced on every compaction.
        results: the final buffers, ``(n, *)`` each, initialised by the caller (what a sample that never
            writes keeps); :meth:`finish` and :meth:`write` fill them.
        state: per-sample optimiser state (``LatentOptimizer.init_state``), sliced with the active set.

    Attributes:
        index: long ``(n_active,)``: batch rows of the active samples.
        steps: long ``(n_active,)``: optimiser steps each active sample has taken.
        t: passes of the loop so far (the number of updates; equal to ``steps`` of every active sample
            while no sample enters late).
        n_steps: long ``(n,)``: steps each sample had taken when it stopped.
        success: bool ``(n,)``: the sample stopped because it met the objective, with finite values.
        nonfinite: bool ``(n,)``: the sample stopped because a value or gradient was NaN/Inf.
        sizes: ``(active samples, with gradients)`` of every pass.
    """

    def __init__(self, n: int, device: torch.device, *, vars: dict[str, Any], results: dict[str, Tensor],
                 state: dict[str, Tensor] | None = None) -> None:
        self.n = n
        self.index = torch.arange(n, device=device)
        self.steps = torch.zeros(n, dtype=torch.long, device=device)
        self.t = 0
        self.vars: dict[str, Any] = dict(vars)
        self.results: dict[str, Tensor] = dict(results)
        self.state: dict[str, Tensor] = dict(state or {})
        self.n_steps = torch.zeros(n, dtype=torch.long, device=device)
        self.success = torch.zeros(n, dtype=torch.bool, device=device)
        self.nonfinite = torch.zeros(n, dtype=torch.bool, device=device)
        self.sizes: list[tuple[int, bool]] = []

    def __len__(self) -> int:
        return self.index.numel()

    def write(self, mask: Tensor, /, **values: Tensor) -> None:
        """Write ``values[mask]`` into the result rows of the active samples selected by ``mask``."""
        idx = self.index[mask]
        for k, v in values.items():
            if k not in self.results:
                raise KeyError(f"no result buffer {k!r}; registered: {sorted(self.results)}")
            self.results[k][idx] = v[mask]

    def compact(self, keep: Tensor) -> None:
        """Keep only the active samples selected by the bool mask ``keep``."""
        n = self.index.numel()
        self.index, self.steps = self.index[keep], self.steps[keep]
        self.vars = {k: _take(v, keep, n) for k, v in self.vars.items()}
        self.state = {k: v[keep] for k, v in self.state.items()}

    def finish(self, stop: Tensor, /, **values: Tensor) -> None:
        """Samples ``stop`` leave: ``values[stop]`` go to their result rows, their ``n_steps`` is recorded,
        and the active set is compacted."""
        if not bool(stop.any()):
            return
        self.write(stop, **values)
        self.n_steps[self.index[stop]] = self.steps[stop]
        self.compact(~stop)

    def _judge(self, step: Step, last: bool, zero_grad_stops: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(stop, finite, grad)`` of one pass: non-finite samples stop, and their loss does not reach the
        backward pass of the others."""
        finite = step.finite
        stop = step.done | ~finite
        if last:
            return torch.ones_like(stop), finite, None
        grad = step.grad
        if grad is None:
            if step.loss is None or step.wrt is None:
                raise ValueError("a search step must return `grad`, or `loss` and `wrt`, before the last pass")
            # samples that stop now contribute nothing to the backward pass
            loss = torch.where(stop | ~torch.isfinite(step.loss), torch.zeros_like(step.loss), step.loss)
            (grad,) = torch.autograd.grad(loss.sum(), step.wrt)
        gfin = rows_finite(grad)
        finite = finite & (gfin | stop)
        stop = stop | ~gfin
        if zero_grad_stops and self.t == 0:
            stop = stop | (grad.flatten(1).abs().amax(1) == 0)
        return stop, finite, grad

    def run(self, step: Callable[[ActiveSet, bool], Step], update: Callable[[ActiveSet, Tensor], None],
            max_steps: int, *, zero_grad_stops: bool = False, progress: bool = False,
            desc: str = "search") -> ActiveSet:
        """Search until every sample has stopped.

        Each pass calls ``step(self, last)`` on the active samples (``last``: the step limit is reached,
        evaluate without gradients; every sample stops), records the stopped ones, compacts, counts a step
        for the others and calls ``update(self, grad)`` under ``no_grad`` to move them (replace their
        entries of :attr:`vars`; the optimiser state is :attr:`state`, the per-sample step numbers,
        1-based, :attr:`steps`).

        Args:
            step: evaluates the active samples.
            update: moves the active samples along the gradient.
            max_steps: optimiser steps per sample (``>= 0``).
            zero_grad_stops: samples whose first gradient is exactly zero stop (unsuccessfully).
            progress: show a tqdm progress bar over steps.
            desc: the progress bar's label.

        Returns:
            ``self``, with :attr:`results`, :attr:`n_steps`, :attr:`success`, :attr:`nonfinite` and
            :attr:`sizes` filled in.
        """
        bar = tqdm(total=max_steps, disable=not progress, desc=desc, leave=False)
        while len(self):
            last = self.t == max_steps
            s = step(self, last)
            self.sizes.append((len(self), not last))
            stop, finite, grad = self._judge(s, last, zero_grad_stops)
            idx = self.index[stop]
            self.success[idx] = (s.done & finite)[stop]
            self.nonfinite[idx] = ~finite[stop]
            if grad is not None:
                self.vars["_grad"] = grad
            self.finish(stop, **s.values)
            if not len(self):
                break
            grad = self.vars.pop("_grad")
            self.t += 1
            self.steps += 1
            with torch.no_grad():
                update(self, grad)
            bar.update(1)
            bar.set_postfix(active=len(self), refresh=False)
        bar.close()
        return self
