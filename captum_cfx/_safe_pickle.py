"""Reading released pickle checkpoints (PyTorch Lightning ``.ckpt``) without running code from them.

A pickle names functions to call while it is read; ``torch.load(weights_only=False)`` calls them, so a checkpoint
from the internet can run anything. :func:`load_checkpoint` first tries ``torch.load(weights_only=True)``
(PyTorch's own allow-list: tensors and plain containers). Lightning checkpoints usually also pickle training
objects (``AttributeDict`` hyperparameters, callback states) that this refuses; then a restricted unpickler reads
the file instead: tensors and plain containers are rebuilt, every other global the file names is replaced by an
inert :class:`OpaqueObject` record. Nothing is imported and nothing the file names is called.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

import torch

__all__ = ["OpaqueObject", "load_checkpoint"]

# what a tensor checkpoint may call: PyTorch's tensor/parameter rebuilders and plain containers
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("collections", "OrderedDict"), ("torch", "Size"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
}
_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}


class OpaqueObject:
    """Stands in for any object a checkpoint pickles other than tensors and containers: it records what the file
    named (``module``, ``name``) and the arguments and state it gave, and does nothing else."""

    module = "?"
    name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict subclasses are filled item by item
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value: Any) -> None:  # list subclasses
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("values", []).extend(values)

    def __repr__(self) -> str:
        return f"OpaqueObject({self.module}.{self.name})"


def _opaque(module: str, name: str) -> type:
    return type("OpaqueObject", (OpaqueObject,), {"module": module, "name": name})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "torch" and name in _DTYPES):
            return super().find_class(module, name)
        return _opaque(module, name)


# a stand-in for the ``pickle`` module that torch.load accepts as ``pickle_module``
_restricted_pickle = types.ModuleType("captum_cfx_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_restricted_pickle.__name__ = "captum_cfx_restricted_pickle"


def load_checkpoint(path: str | Path, argument: str = "path") -> Any:
    """Read a PyTorch checkpoint to CPU without executing anything it names.

    Args:
        path: a ``torch.save`` file (``.ckpt``, ``.pt``, ``.pth``).
        argument: the argument name used in error messages.

    Returns:
        the stored object: tensors and plain containers as saved; any other object as an :class:`OpaqueObject`.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"`{argument}`: checkpoint {str(p)!r} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # names a global outside PyTorch's allow-list: read it again with inert stand-ins
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"`{argument}`: {str(p)!r} is not a readable PyTorch checkpoint ({e})") from e
    try:
        return torch.load(p, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, TypeError, AttributeError) as e:
        raise ValueError(f"`{argument}`: {str(p)!r} is not a readable PyTorch checkpoint ({e})") from e
