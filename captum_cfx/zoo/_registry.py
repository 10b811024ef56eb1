from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from captum_cfx.zoo import models as _models

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: how each shipped generative model is wrapped in the generator protocol, unless its JSON config
#: carries a ``"generator"`` entry ``{"wrapper": "<class in captum_cfx.generators>", **kwargs}``.
_GENERATORS: dict[str, dict[str, Any]] = {
    "mnist-vae": {"wrapper": "VAEGenerator", "input_range": [0.0, 1.0], "image_shape": [1, 28, 28]},
}


def available() -> list[str]:
    """Names of the shipped models (those whose weights are present)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def resolve_class(name: str) -> type[nn.Module]:
    """A model class from its name in ``captum_cfx.zoo.models`` or a ``module:Class`` path."""
    if ":" in name:
        mod, cls = name.split(":", 1)
        return getattr(importlib.import_module(mod), cls)
    return getattr(_models, name)


def _config(name: str, weights_dir: Path) -> dict:
    path = weights_dir / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"`name` must be one of {available()}; got {name!r}")
    return json.loads(path.read_text())


def load_pretrained(name: str, weights_dir: str | Path | None = None) -> nn.Module:
    """Load a shipped model by name, in eval mode, float32, on CPU.

    Args:
        name: one of :func:`available`, e.g. ``"mnist-classifier"``, ``"mnist-oracle"``, ``"mnist-vae"``.
        weights_dir: a folder holding ``<name>.json`` + ``<name>.safetensors`` (default: the package's).

    Examples::

        >>> from captum_cfx.zoo import load_pretrained
        >>> model = load_pretrained("mnist-classifier")
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str; got {type(name).__name__}")
    wd = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    cfg = _config(name, wd)
    model = resolve_class(cfg["class"])(**cfg["config"])
    from captum_cfx._io import load_safetensors

    state = load_safetensors(wd / f"{name}.safetensors", argument="name")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state)
    return model.eval()


def load_generator(name: str = "mnist-vae", weights_dir: str | Path | None = None) -> Any:
    """Load a shipped generative model, wrapped in the generator protocol.

    Examples::

        >>> import torch
        >>> from captum_cfx.zoo import load_generator
        >>> gen = load_generator("mnist-vae")
        >>> gen.encode(torch.rand(2, 1, 28, 28)).free.shape
        torch.Size([2, 32])
    """
    from captum_cfx import generators

    wd = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    spec = None
    if isinstance(name, str) and (wd / f"{name}.json").is_file():
        spec = _config(name, wd).get("generator")
    spec = spec or _GENERATORS.get(name) if isinstance(name, str) else None
    if spec is None:
        gens = sorted(set(_GENERATORS) | {n for n in available() if _config(n, WEIGHTS_DIR).get("generator")})
        raise ValueError(f"`name` must be a generator, one of {gens}; got {name!r}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "wrapper"}
    wrapper: Any = generators
    for part in spec["wrapper"].split("."):  # a class, or a "Class.constructor" such as "DDIMGenerator.from_weights"
        wrapper = getattr(wrapper, part)
    return wrapper(load_pretrained(name, wd), **kwargs).eval()
