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

- **refilling** (continuous batching): with an ``admit`` function, samples wait until there is room
  (``max_batch`` in flight); when samples stop, waiting ones are admitted (encoded by ``admit``) and enter
  the running batch at step 0 with fresh optimiser state, so the batch stays full and no batch ends in a
  long tail of a few samples. Each sample counts its own optimiser steps (``steps``, which
  :class:`~captum_cfx.optim.LatentAdam` takes per sample), so a sample's search does not depend on when it
  entered: per-sample results equal those without refilling (bit for bit where the model's rows do not
  depend on the batch size, e.g. on the CPU in float64);
- **fewer host syncs** (``check_every = k``): stops are recorded every pass without a host sync (index
  writes, ``torch.where``), but the batch is compacted and refilled only every ``k`` passes; in between,
  the stopped samples ride along frozen (their values, latents and optimiser state are restored after each
  update), so the results are the same as with ``k = 1``;
- **mixed precision**: ``autocast`` (e.g. ``torch.bfloat16``) runs the method's step under
  ``torch.autocast``; the optimiser and the results stay in the inputs' dtype.

Shape:
    - every tensor of :attr:`ActiveSet.vars` and :attr:`ActiveSet.state`: ``(n_active, *)``;
    - every tensor of :attr:`ActiveSet.results`: ``(n, *)``, one row per sample of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext as _nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from captum_cfx._utils import index_args

__all__ = ["ActiveSet", "Entrants", "Step", "rows_finite"]


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


def _join(old: Any, new: Any) -> Any:
    """``old`` and ``new`` per-sample values one after the other: tensors and anything with a ``cat``
    (a ``Latent``) are concatenated; a tuple of arguments member by member, where a member that is the same
    object in both (an argument that is not per sample, passed on by :func:`index_args`) is kept once."""
    if old is None or old is new:
        return old
    if isinstance(old, tuple):
        return tuple(o if o is w else _join(o, w) for o, w in zip(old, new))
    if isinstance(old, Tensor):
        return torch.cat([old, new])
    if hasattr(type(old), "cat"):
        return type(old).cat([old, new])
    return old


@dataclass(kw_only=True)
class Entrants:
    """Samples entering the search (what a method's ``admit`` returns for rows ``lo:hi`` of the batch).

    Attributes:
        vars: their per-sample values, the keys of :attr:`ActiveSet.vars`, batch first.
        state: their fresh optimiser state (``LatentOptimizer.init_state``).
        results: the initial values of their result rows (what a sample that never writes keeps); a buffer
            ``(n, *)`` is allocated on the first admission.
    """

    vars: dict[str, Any]
    state: dict[str, Tensor] = field(default_factory=dict)
    results: dict[str, Tensor] = field(default_factory=dict)


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
        grad: the gradient, if the method computes it itself (then ``loss`` is ``None``); for a search without
            gradients, the move ``update`` will make (the engine only checks that it is finite).
        stop: bool ``(n_active,)`` or ``None``: samples that stop now without meeting the objective (a search
            that can make no more progress); they stop unsuccessfully, with their current values.
    """

    done: Tensor
    finite: Tensor
    values: dict[str, Tensor] = field(default_factory=dict)
    loss: Tensor | None = None
    wrt: Tensor | None = None
    grad: Tensor | None = None
    stop: Tensor | None = None


class ActiveSet:
    """The samples of one batch that are still searching, and the results of those that stopped.

    Args:
        n: samples in the batch.
        device: device of the index, counters and flags.
        vars: per-sample values of the active samples, batch first: tensors, :class:`Latent` s, or tuples
            of arguments whose tensors with the batch size are per sample (``additional_forward_args``).
            Read and replace them through :attr:`vars`; they are sliced on every compaction. ``None``: no
            sample is active yet; :meth:`run` admits them with its ``admit`` function (refilling).
        results: the final buffers, ``(n, *)`` each, initialised by the caller (what a sample that never
            writes keeps); :meth:`finish` and :meth:`write` fill them. Buffers that entrants bring are
            allocated on admission.
        state: per-sample optimiser state (``LatentOptimizer.init_state``), sliced with the active set.

    Attributes:
        index: long ``(n_active,)``: batch rows of the active samples.
        steps: long ``(n_active,)``: optimiser steps each active sample has taken.
        t: passes of the loop so far (the number of updates; equal to ``steps`` of every active sample
            while no sample enters late).
        admitted: rows ``0:admitted`` of the batch have entered the search (samples enter in row order).
        n_steps: long ``(n,)``: steps each sample had taken when it stopped.
        success: bool ``(n,)``: the sample stopped because it met the objective, with finite values.
        nonfinite: bool ``(n,)``: the sample stopped because a value or gradient was NaN/Inf.
        sizes: ``(active samples, with gradients)`` of every pass.
    """

    def __init__(self, n: int, device: torch.device, *, vars: dict[str, Any] | None = None,
                 results: dict[str, Tensor] | None = None, state: dict[str, Tensor] | None = None) -> None:
        self.n = n
        self.admitted = n if vars is not None else 0
        self.index = torch.arange(self.admitted, device=device)
        self.steps = torch.zeros(self.admitted, dtype=torch.long, device=device)
        self.t = 0
        self.vars: dict[str, Any] = dict(vars or {})
        self.results: dict[str, Tensor] = dict(results or {})
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
            buf = self.results[k]
            buf[idx] = v[mask].to(buf.dtype)  # values computed under autocast go back to the buffer's dtype

    def enter(self, lo: int, hi: int, entrants: Entrants) -> None:
        """Rows ``lo:hi`` of the batch join the active samples at step 0 with their fresh optimiser state."""
        if lo != self.admitted or not (lo < hi <= self.n or lo == hi == self.n == 0):
            raise ValueError(f"samples enter in row order: expected rows {self.admitted}:<= {self.n}; got {lo}:{hi}")
        for k, v in entrants.results.items():
            if k not in self.results:
                self.results[k] = v.new_zeros((self.n, *v.shape[1:]))
            self.results[k][lo:hi] = v
        if not self.vars:  # the first entrants: taken as they are (no copy)
            self.vars, self.state = dict(entrants.vars), dict(entrants.state)
        else:
            self.vars = {k: _join(v, entrants.vars[k]) for k, v in self.vars.items()}
            self.state = {k: torch.cat([v, entrants.state[k]]) for k, v in self.state.items()}
        dev = self.index.device
        self.index = torch.cat([self.index, torch.arange(lo, hi, device=dev)])
        self.steps = torch.cat([self.steps, torch.zeros(hi - lo, dtype=torch.long, device=dev)])
        self.admitted = hi

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

    def _judge(self, step: Step, last: bool, zero_grad_stops: bool, at_last: Tensor | None = None,
               frozen: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(stop, finite, grad)`` of one pass: non-finite samples stop, and their loss does not reach the
        backward pass of the others. ``at_last``: samples at their step limit (they stop; refilling mixes
        them with others); ``frozen``: stopped samples riding along until the next compaction (their loss
        is zeroed too)."""
        finite = step.finite
        stop = step.done | ~finite
        if step.stop is not None:
            stop = stop | step.stop
        if last:
            return torch.ones_like(stop), finite, None
        if at_last is not None:
            stop = stop | at_last
        grad = step.grad
        if grad is None:
            if step.loss is None or step.wrt is None:
                raise ValueError("a search step must return `grad`, or `loss` and `wrt`, before the last pass")
            # samples that stop now contribute nothing to the backward pass
            dead = stop if frozen is None else stop | frozen
            loss = torch.where(dead | ~torch.isfinite(step.loss), torch.zeros_like(step.loss), step.loss)
            (grad,) = torch.autograd.grad(loss.sum(), step.wrt)
        gfin = rows_finite(grad)
        finite = finite & (gfin | stop)
        stop = stop | ~gfin
        if zero_grad_stops and (at_last is not None or self.t == 0):
            stop = stop | ((self.steps == 0) & (grad.flatten(1).abs().amax(1) == 0))
        return stop, finite, grad

    def _admit(self, admit: Callable[[ActiveSet, int, int], Entrants], max_batch: int | None) -> None:
        """Admit waiting samples, in row order, while there is room for them."""
        room = self.n - self.admitted if max_batch is None else min(max_batch - len(self), self.n - self.admitted)
        if room > 0:
            lo = self.admitted
            self.enter(lo, lo + room, admit(self, lo, lo + room))

    def run(self, step: Callable[[ActiveSet, bool], Step], update: Callable[[ActiveSet, Tensor], None],
            max_steps: int, *, admit: Callable[[ActiveSet, int, int], Entrants] | None = None,
            max_batch: int | None = None, check_every: int = 1, autocast: torch.dtype | None = None,
            zero_grad_stops: bool = False, progress: bool = False, desc: str = "search") -> ActiveSet:
        """Search until every sample has stopped.

        Each pass calls ``step(self, last)`` on the active samples (``last``: every active sample has
        reached the step limit, evaluate without gradients; they all stop), records the stopped ones,
        compacts, counts a step for the others and calls ``update(self, grad)`` under ``no_grad`` to move
        them (replace their entries of :attr:`vars`; the optimiser state is :attr:`state`, the per-sample
        step numbers, 1-based, :attr:`steps`).

        Args:
            step: evaluates the active samples.
            update: moves the active samples along the gradient.
            max_steps: optimiser steps per sample (``>= 0``).
            admit: ``admit(self, lo, hi) -> Entrants``: encode rows ``lo:hi`` of the batch so that they enter
                the search (needed when the set was made without ``vars``).
            max_batch: refilling: at most this many samples in flight; when samples stop, waiting ones are
                admitted at step 0. ``None``: every sample enters at once.
            check_every: compact the batch (and refill it) every this many passes; stopped samples ride
                along frozen in between. 1 (default) compacts after every pass.
            autocast: run ``step`` under ``torch.autocast`` with this dtype (``torch.bfloat16``,
                ``torch.float16``); ``None``: the inputs' precision.
            zero_grad_stops: samples whose first gradient is exactly zero stop (unsuccessfully).
            progress: show a tqdm progress bar over steps (over samples when refilling).
            desc: the progress bar's label.

        Returns:
            ``self``, with :attr:`results`, :attr:`n_steps`, :attr:`success`, :attr:`nonfinite` and
            :attr:`sizes` filled in.
        """
        if admit is None and self.admitted < self.n:
            raise ValueError("an ActiveSet made without `vars` needs `admit`")
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"`max_batch` must be a positive int or None; got {max_batch!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"`check_every` must be a positive int; got {check_every!r}")
        if autocast not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"`autocast` must be None, torch.bfloat16 or torch.float16; got {autocast!r}")
        refill = admit is not None and max_batch is not None and max_batch < self.n
        bar = tqdm(total=self.n if refill else max_steps, disable=not progress, desc=desc, leave=False)
        late = False  # a sample entered after the first pass: step counts differ within the batch
        live: Tensor | None = None  # check_every > 1: active samples still searching (others ride along frozen)
        if admit is not None and self.n == 0:  # an empty batch: its (empty) values and result buffers
            self.enter(0, 0, admit(self, 0, 0))
        while True:
            if admit is not None and self.admitted < self.n and (
                    live is None or self.t % check_every == 0 or not len(self)):
                late = late or self.t > 0
                before = len(self)
                self._admit(admit, max_batch)
                if live is not None:
                    live = torch.cat([live, live.new_ones(len(self) - before)])
            if not len(self):
                break
            at_last = self.steps >= max_steps if late else None
            if at_last is None:
                last = self.t == max_steps
            else:  # with k > 1 no host sync: rows at their limit stop through ``at_last``
                last = bool(at_last.all()) if live is None else False
            ctx = torch.autocast(self.index.device.type, dtype=autocast) if autocast is not None else _nullcontext()
            with ctx:
                s = step(self, last)
            self.sizes.append((len(self), not last))
            if check_every == 1:
                self._pass_compacting(s, last, at_last, zero_grad_stops)
            else:
                if live is None:
                    live = torch.ones(len(self), dtype=torch.bool, device=self.index.device)
                live = self._pass_masked(s, last, at_last, live, zero_grad_stops)
                if last or (self.t + 1) % check_every == 0:
                    self.compact(live)
                    live = live[live]
            if not len(self) and self.admitted == self.n:
                break
            if "_grad" in self.vars:
                grad = self.vars.pop("_grad")
                self.t += 1
                if live is None:
                    self.steps += 1
                    with torch.no_grad():
                        update(self, grad)
                else:
                    self.steps += live.long()
                    self._update_masked(update, grad, live)
            else:  # no active sample left to move; the waiting ones enter on the next pass
                self.t += 1
            bar.update((self.admitted - len(self)) - bar.n if refill else 1)  # samples done / steps
            bar.set_postfix(active=len(self), refresh=False)
        bar.close()
        return self

    def _pass_compacting(self, s: Step, last: bool, at_last: Tensor | None, zero_grad_stops: bool) -> None:
        """Record the samples that stop in this pass and compact them away (``check_every == 1``)."""
        stop, finite, grad = self._judge(s, last, zero_grad_stops, at_last)
        idx = self.index[stop]
        self.success[idx] = (s.done & finite)[stop]
        self.nonfinite[idx] = ~finite[stop]
        if grad is not None:
            self.vars["_grad"] = grad
        self.finish(stop, **s.values)
        if not len(self):
            self.vars.pop("_grad", None)

    def _pass_masked(self, s: Step, last: bool, at_last: Tensor | None, live: Tensor,
                     zero_grad_stops: bool) -> Tensor:
        """Record the samples that stop in this pass without a host sync; return the new ``live`` mask."""
        stop, finite, grad = self._judge(s, last, zero_grad_stops, at_last, ~live)
        new = stop & live
        idx = self.index
        self.success[idx] = torch.where(new, s.done & finite, self.success[idx])
        self.nonfinite[idx] = torch.where(new, ~finite, self.nonfinite[idx])
        self.n_steps[idx] = torch.where(new, self.steps, self.n_steps[idx])
        for k, v in s.values.items():
            buf = self.results[k]
            keep = new.view(-1, *([1] * (v.dim() - 1)))
            buf[idx] = torch.where(keep, v.to(buf.dtype), buf[idx])
        if grad is not None:
            self.vars["_grad"] = grad
        return live & ~new

    def _update_masked(self, update: Callable[[ActiveSet, Tensor], None], grad: Tensor, live: Tensor) -> None:
        """``update`` on the whole batch, then the frozen samples' values and optimiser state restored."""
        before = dict(self.vars)
        saved = {k: v.clone() for k, v in self.state.items()}
        with torch.no_grad():
            update(self, grad)
            for k, v in self.vars.items():
                old = before.get(k)
                if isinstance(v, Tensor) and isinstance(old, Tensor) and v is not old and v.shape == old.shape:
                    self.vars[k] = torch.where(live.view(-1, *([1] * (v.dim() - 1))), v, old)
            for k, v in self.state.items():
                self.state[k] = torch.where(live.view(-1, *([1] * (v.dim() - 1))), v, saved[k])
