"""Safe weight loading (safetensors only, never pickle) and atomic writes (a reader never sees half a file)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}


def _weight_file(path: str | Path, argument: str) -> Path:
    """``path`` as a ``Path`` to an existing file that is not a pickle-based format (clear errors otherwise)."""
    path = Path(path)
    if path.suffix in _PICKLE_SUFFIXES:
        raise ValueError(f"`{argument}` points to {path.name!r}, a pickle-based format; captum_cfx only "
                         "loads .safetensors weights (pickles can run arbitrary code)")
    if not path.is_file():
        raise ValueError(f"`{argument}`: weight file {str(path)!r} does not exist")
    return path


def load_safetensors(path: str | Path, argument: str = "path") -> dict[str, torch.Tensor]:
    """Load a safetensors file; refuse pickle-based formats with a clear error."""
    path = _weight_file(path, argument)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"`{argument}`: {str(path)!r} is not a valid safetensors file ({e})") from e


#: the largest safetensors header read (the shipped models' headers are a few KiB)
MAX_HEADER_BYTES = 16 << 20


def read_safetensors_header(path: str | Path, argument: str = "path",
                            max_tensors: int | None = None) -> dict[str, dict]:
    """Read and check a safetensors header without reading any tensor data.

    Refuses a header longer than :data:`MAX_HEADER_BYTES` (or than ``max_tensors`` entries could need), more
    than ``max_tensors`` entries, and entries whose byte ranges do not fit the file.
    """
    import json
    import math
    import struct

    path = _weight_file(path, argument)
    size = path.stat().st_size
    limit = MAX_HEADER_BYTES if max_tensors is None else min(MAX_HEADER_BYTES, 4096 + 1024 * max_tensors)
    bad = f"`{argument}`: {str(path)!r} is not a valid safetensors file"
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{bad} (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > limit or n > size - 8:
            raise ValueError(f"{bad} (header of {n} bytes; expected at most {min(limit, size - 8)})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{bad} (header is not JSON: {e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{bad} (header is not a JSON object)")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if max_tensors is not None and len(entries) > max_tensors:
        raise ValueError(f"`{argument}`: {path.name} lists {len(entries)} tensors; the model has {max_tensors}")
    data = size - 8 - n
    for k, v in entries.items():
        ok = (isinstance(v, dict) and isinstance(v.get("shape"), list) and isinstance(v.get("data_offsets"), list)
              and len(v["data_offsets"]) == 2 and all(isinstance(s, int) and s >= 0 for s in v["shape"])
              and all(isinstance(o, int) for o in v["data_offsets"]))
        if not ok or not 0 <= v["data_offsets"][0] <= v["data_offsets"][1] <= data:
            raise ValueError(f"{bad} (entry {k[:80]!r} is malformed or points outside the file)")
        if math.prod(v["shape"]) > v["data_offsets"][1] - v["data_offsets"][0]:
            raise ValueError(f"{bad} (entry {k[:80]!r}: shape {v['shape']} does not fit its bytes)")
    return header


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp)`` on a hidden temporary file next to it, then an atomic rename.

    A killed writer leaves ``.<name>.tmp`` behind (safe to delete), never a half-written ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (see :func:`atomic_write`)."""
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Save tensors (detached, on the CPU, contiguous) as safetensors, atomically (see :func:`atomic_write`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp)))
