"""The base of the counterfactual methods: Captum's ``attribute`` / ``perturb`` and the input front-end, once.

A method subclasses :class:`CounterfactualMethod` and implements ``generate(inputs, target,
additional_forward_args, *, ...)`` returning a :class:`~captum_cfx.CounterfactualOutput`. Its ``generate``
validates its own settings, calls :meth:`CounterfactualMethod._prepare` (format the inputs, check images
and devices, turn a list target into a tensor) and :meth:`CounterfactualMethod._per_chunk` (eval mode,
gradients on, ``internal_batch_size`` chunks with their targets and per-sample forward arguments), and
searches each chunk, usually with :class:`~captum_cfx._search.ActiveSet`.

Captum's batching helper (``captum.attr._utils.batching._batched_generator``) is not used for the chunks:
it warns whenever the inputs do not require gradients (ours never do: the search differentiates with
respect to a latent) and it slices every additional argument, where a per-sample argument is only one
whose first dimension is the batch size (:func:`~captum_cfx._utils.index_args`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import GradientAttribution
from captum.log import log_usage
from captum.robust import Perturbation
from torch import Tensor

from captum_cfx._utils import as_tuple, call_model, check_same_device, eval_mode, index_args
from captum_cfx._validation import check_positive, format_inputs
from captum_cfx.attr._common import check_model_and_generator, generate_on, like_inputs
from captum_cfx.generators.base import LatentGenerator
from captum_cfx.objectives import Objective

__all__ = ["CounterfactualMethod", "Inputs"]


@dataclass
class Inputs:
    """The formatted inputs of one ``generate`` call, or of one chunk of it.

    Attributes:
        x: the images ``(N, C, H, W)``.
        others: the other members of an input tuple, ``(N, *)`` each, passed to the model unchanged.
        extra: ``additional_forward_args`` as a tuple; tensors whose first dimension is ``N`` are per sample.
        target: the target as given, a list of numbers turned into a ``(N,)`` tensor.
    """

    x: Tensor
    others: tuple[Tensor, ...]
    extra: tuple[Any, ...]
    target: Any

    def __len__(self) -> int:
        return self.x.shape[0]

    def chunks(self, size: int | None) -> Iterator[Inputs]:
        """Consecutive chunks of ``size`` samples (one chunk if ``None``); a per-example target (a ``(N,)``
        tensor or a list/tuple of length ``N``) is split with the inputs, any other target is shared."""
        n = len(self)
        size = size or max(n, 1)
        for lo in range(0, max(n, 1), size):
            yield self.rows(lo, min(lo + size, n))

    def rows(self, lo: int, hi: int) -> Inputs:
        """Samples ``lo:hi``: a per-example target is split with the inputs, any other target is shared."""
        n, tgt, sl = len(self), self.target, slice(lo, hi)
        t = tgt[sl] if isinstance(tgt, Tensor) and tgt.dim() == 1 and tgt.shape[0] == n else tgt
        if isinstance(t, (list, tuple)) and len(t) == n:
            t = list(t)[sl]
        return Inputs(self.x[sl], tuple(o[sl] for o in self.others), index_args(self.extra, n, sl), t)


class CounterfactualMethod(GradientAttribution, Perturbation):
    """Base of the methods that search one counterfactual per input (see the module docstring).

    Args:
        forward_func: the model to explain.
        generator: a :class:`~captum_cfx.generators.LatentGenerator` whose images are in the model's range.
    """

    def __init__(self, forward_func: Callable[..., Tensor], generator: LatentGenerator) -> None:
        check_model_and_generator(forward_func, generator)
        GradientAttribution.__init__(self, forward_func)
        self.generator = generator

    def generate(self, inputs: TensorOrTupleOfTensorsGeneric, target: TargetType | float = None,
                 additional_forward_args: Any = None, **kwargs: Any) -> Any:
        """Search counterfactuals and return every result (implemented by each method)."""
        raise NotImplementedError

    @log_usage()
    def attribute(  # type: ignore[override]
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType | float = None,
        additional_forward_args: Any = None,
        *,
        baseline: str = "reconstruction",
        **kwargs: Any,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Pixel map ``counterfactual - reconstruction`` (default) or ``counterfactual - input``.

        Args:
            inputs, target, additional_forward_args: as in Captum.
            baseline: ``"reconstruction"`` subtracts the generator's reconstruction of the input (for a
                method that searches the pixels, the input itself), separating what the model needed
                changed from the generator's reconstruction error; ``"input"`` subtracts ``x``.
            kwargs: search settings, see ``generate``.

        Returns:
            A tensor (or tuple) shaped like ``inputs``; extra tuple members get zeros.
        """
        if baseline not in ("reconstruction", "input"):
            raise ValueError(f"`baseline` must be 'reconstruction' or 'input'; got {baseline!r}")
        out, tup, is_tuple = generate_on(self, inputs, target, additional_forward_args, **kwargs)
        ref = out.reconstructions if baseline == "reconstruction" else tup[0]
        return like_inputs((out.counterfactuals - ref).detach(), tup, is_tuple)

    def perturb(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType | float = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Counterfactual images shaped like ``inputs`` (the ``captum.robust.Perturbation`` interface)."""
        out, tup, is_tuple = generate_on(self, inputs, target, additional_forward_args, **kwargs)
        return (out.counterfactuals, *tup[1:]) if is_tuple else out.counterfactuals

    # ------------------------------------------------------------------ for subclasses
    def _prepare(self, inputs: Any, target: Any, additional_forward_args: Any, objective: Objective) -> Inputs:
        """Format and check the inputs (images against the generator, devices), require a target when the
        objective needs one, and turn a list of numbers into a target tensor."""
        tup, _ = format_inputs(inputs)
        x = self.generator.check_images(tup[0], "inputs")
        check_same_device(x, generator=self.generator, forward_func=self.forward_func)
        if objective.needs_target and target is None:
            raise ValueError(f"`target` is required by {type(objective).__name__}")
        tgt = target
        if isinstance(tgt, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in tgt):
            ints = all(isinstance(v, int) for v in tgt)
            tgt = torch.tensor(tgt, device=x.device, dtype=torch.long if ints else x.dtype)
        return Inputs(x, tup[1:], as_tuple(additional_forward_args), tgt)

    def _per_chunk(self, inputs: Inputs, internal_batch_size: int | None,
                   search: Callable[[Inputs], Any]) -> list[Any]:
        """``search`` on each chunk of ``internal_batch_size`` inputs, models in eval mode, gradients on."""
        if internal_batch_size is not None:
            check_positive(internal_batch_size, "internal_batch_size", integer=True)
        with eval_mode(self.forward_func, self.generator), torch.enable_grad():
            return [search(chunk) for chunk in inputs.chunks(internal_batch_size)]

    def _model(self, x: Tensor, others: tuple[Tensor, ...], extra: tuple[Any, ...]) -> Tensor:
        return call_model(self.forward_func, x, others, extra)
