from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from captum_cfx.zoo import models as _models

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_GENERATORS = {"mnist-vae"}


def available() -> list[str]:
    """Names of the shipped models (those whose weights are present)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


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
    cls = getattr(_models, cfg["class"])
    model = cls(**cfg["config"])
    from captum_cfx._io import load_safetensors

    state = load_safetensors(wd / f"{name}.safetensors", argument="name")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state)
    return model.eval()


def load_generator(name: str = "mnist-vae", weights_dir: str | Path | None = None):
    """Load a shipped generative model, wrapped in the generator protocol.

    Examples::

        >>> from captum_cfx.zoo import load_generator
        >>> gen = load_generator("mnist-vae")
        >>> gen.encode(torch.rand(2, 1, 28, 28)).free.shape
        torch.Size([2, 32])
    """
    from captum_cfx.generators import VAEGenerator

    if name not in _GENERATORS:
        raise ValueError(f"`name` must be a generator, one of {sorted(_GENERATORS)}; got {name!r}")
    vae = load_pretrained(name, weights_dir)
    return VAEGenerator(vae, input_range=(0.0, 1.0), image_shape=(1, 28, 28)).eval()

