"""Small shared helpers: eval mode that restores itself, device checks, batch indexing of extra args."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from captum_cfx._validation import check_dtypes, check_model_output


@contextmanager
def eval_mode(*models: Any) -> Iterator[None]:
    """Put every ``nn.Module`` among ``models`` in eval mode; restore each submodule's flag on exit."""
    saved = [(m, m.training) for model in models if isinstance(model, nn.Module) for m in model.modules()]
    try:
        for model in models:
            if isinstance(model, nn.Module):
                model.eval()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def module_device(obj: Any) -> torch.device | None:
    """The device of a module's first parameter or buffer (``None`` for callables without any)."""
    if isinstance(obj, nn.Module):
        for t in obj.parameters():
            return t.device
        for t in obj.buffers():
            return t.device
    if hasattr(obj, "__self__") and isinstance(obj.__self__, nn.Module):
        return module_device(obj.__self__)
    return None


def check_same_device(x: Tensor, **models: Any) -> None:
    """Raise a clear error when a model's parameters live on another device than the inputs."""
    for name, model in models.items():
        dev = module_device(model)
        if dev is not None and dev.type != x.device.type:
            raise ValueError(f"`{name}` is on {dev} but `inputs` are on {x.device}; move them to one device")
    check_dtypes(x, "inputs", **models)


def index_args(args: tuple[Any, ...], n: int, index: Tensor | slice) -> tuple[Any, ...]:
    """Select rows of every tensor argument whose first dimension is the batch size ``n``."""
    return tuple(a[index] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n else a for a in args)


def as_tuple(args: Any) -> tuple[Any, ...]:
    if args is None:
        return ()
    return args if isinstance(args, tuple) else (args,)


def call_model(forward_func: Callable[..., Tensor], x: Tensor, others: tuple[Tensor, ...],
               extra: tuple[Any, ...]) -> Tensor:
    return check_model_output(forward_func(x, *others, *extra), x.shape[0])


def predicted_classes(outputs: Tensor) -> Tensor:
    """Class per row from model outputs: argmax for ``(N, K>1)``, ``logit > 0`` for one-logit models, ``(N,)``."""
    if outputs.dim() == 2 and outputs.shape[1] > 1:
        return outputs.argmax(1)
    return (outputs.reshape(outputs.shape[0]) > 0).long()
