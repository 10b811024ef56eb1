"""Safe weight loading: safetensors only, never pickle."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}


def load_safetensors(path: str | Path, argument: str = "path") -> dict[str, torch.Tensor]:
    """Load a safetensors file; refuse pickle-based formats with a clear error."""
    path = Path(path)
    if path.suffix in _PICKLE_SUFFIXES:
        raise ValueError(f"`{argument}` points to {path.name!r}, a pickle-based format; captum_cfx only "
                         "loads .safetensors weights (pickles can run arbitrary code)")
    if not path.is_file():
        raise ValueError(f"`{argument}`: weight file {str(path)!r} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"`{argument}`: {str(path)!r} is not a valid safetensors file ({e})") from e
