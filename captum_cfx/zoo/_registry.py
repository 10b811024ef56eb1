"""The zoo's loaders and its allow-lists.

A model's JSON config is data, never code: its ``"class"`` is a short name looked up in :data:`MODEL_CLASSES`
(an allow-list of classes inside ``captum_cfx``) and its ``"generator"`` ``"wrapper"`` a short name looked up in
:data:`GENERATOR_WRAPPERS`. Nothing named by a JSON file is imported. Before anything is allocated, a config's
values are checked against bounds, the model is built on the ``meta`` device (no memory) and its parameter
names and shapes are compared with the safetensors header, which is read on its own and refused when it lists
more tensors than the class has. To load your own class from a weights folder, register it in code with
:func:`register_model`.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: the model classes a zoo JSON may name: short name -> (module inside captum_cfx, class name), imported lazily
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "MNISTClassifier": ("captum_cfx.zoo.models", "MNISTClassifier"),
    "MNISTOracle": ("captum_cfx.zoo.models", "MNISTOracle"),
    "MNISTVAE": ("captum_cfx.zoo.models", "MNISTVAE"),
    "MNISTGAN": ("captum_cfx.zoo.gan_models", "MNISTGAN"),
    "DDPMWeights": ("captum_cfx.zoo.diffusion_models", "DDPMWeights"),
    "DiffAEWeights": ("captum_cfx.zoo.diffusion_models", "DiffAEWeights"),
    "WorldOracle": ("captum_cfx.zoo.world_models", "WorldOracle"),
    "WorldClassifier": ("captum_cfx.zoo.world_models", "WorldClassifier"),
    "SquaresRegressor": ("captum_cfx.zoo.world_models", "SquaresRegressor"),
    "WorldVAE": ("captum_cfx.zoo.world_models", "WorldVAE"),
    "WorldFactorAE": ("captum_cfx.zoo.world_models", "WorldFactorAE"),
}
#: classes registered in code by :func:`register_model`
_USER_CLASSES: dict[str, type[nn.Module]] = {}

#: the generator wrappers a zoo JSON may name: short name -> attribute path in ``captum_cfx.generators``
GENERATOR_WRAPPERS: dict[str, str] = {
    "VAEGenerator": "VAEGenerator",
    "GANGenerator": "GANGenerator",
    "DDIMGenerator.from_weights": "DDIMGenerator.from_weights",
    "DiffusionAutoencoder.from_weights": "DiffusionAutoencoder.from_weights",
}

#: how each shipped generative model is wrapped in the generator protocol, unless its JSON config
#: carries a ``"generator"`` entry ``{"wrapper": "<name in GENERATOR_WRAPPERS>", **kwargs}``.
_GENERATORS: dict[str, dict[str, Any]] = {
    "mnist-vae": {"wrapper": "VAEGenerator", "input_range": [0.0, 1.0], "image_shape": [1, 28, 28]},
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: bounds on a config's values, checked before the model is built
MAX_INT = 16384
MAX_LIST = 64
MAX_STRING = 128
MAX_DEPTH = 4
MAX_CONFIG_BYTES = 1 << 20


def available() -> list[str]:
    """Names of the shipped models (those whose weights are present)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def register_model(name: str, cls: type[nn.Module]) -> None:
    """Allow zoo JSON files to build ``cls`` under the short ``name`` (``"class": name``).

    This is how a weights folder of your own names your model class: the allow-list grows in code, never
    from a data file.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise ValueError(f"`name` must be a short identifier (letters, digits, _); got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"`cls` must be a torch.nn.Module subclass; got {cls!r}")
    if name in MODEL_CLASSES:
        raise ValueError(f"`name` {name!r} is a shipped class; choose another name")
    _USER_CLASSES[name] = cls


def _allowed_classes() -> list[str]:
    return sorted(set(MODEL_CLASSES) | set(_USER_CLASSES))


def resolve_class(name: str) -> type[nn.Module]:
    """A model class from its short name in the allow-list (:data:`MODEL_CLASSES` or :func:`register_model`).

    ``"captum_cfx.zoo.<module>:<Class>"`` strings written by older versions are accepted only when they spell
    exactly a registered entry; any other import path is refused without importing anything.
    """
    if not isinstance(name, str):
        raise TypeError(f"`class` must be a str naming a registered model class; got {type(name).__name__}")
    if name in _USER_CLASSES:
        return _USER_CLASSES[name]
    short = next((k for k, (m, c) in MODEL_CLASSES.items() if name == f"{m}:{c}"), name)
    if short not in MODEL_CLASSES:
        raise ValueError(f"`class` must be one of the registered model classes {_allowed_classes()} "
                         f"(see captum_cfx.zoo.register_model); got {name[:200]!r}")
    mod, cls = MODEL_CLASSES[short]
    return getattr(importlib.import_module(mod), cls)


def _resolve_wrapper(name: Any) -> Callable[..., Any]:
    if not isinstance(name, str) or name not in GENERATOR_WRAPPERS:
        raise ValueError(f"`generator.wrapper` must be one of {sorted(GENERATOR_WRAPPERS)}; got {str(name)[:200]!r}")
    from captum_cfx import generators

    obj: Any = generators
    for part in GENERATOR_WRAPPERS[name].split("."):
        obj = getattr(obj, part)
    return obj


def check_name(name: Any, weights_dir: Path) -> Path:
    """Check a zoo name (no separators, no ``..``) and return ``weights_dir/<name>.json``, inside ``weights_dir``."""
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str; got {type(name).__name__}")
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError("`name` must be a model name of letters, digits, '.', '_' or '-' without path separators "
                         f"or '..' (one of {available()} or a model in `weights_dir`); got {name[:200]!r}")
    path = weights_dir / f"{name}.json"
    if path.resolve().parent != weights_dir.resolve():
        raise ValueError(f"`name` must stay inside `weights_dir`; got {name!r}")
    return path


def _check_value(value: Any, where: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"`config` is nested deeper than {MAX_DEPTH} levels at {where}")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError(f"`config` value {where} must be an int in [-{MAX_INT}, {MAX_INT}]; got {value}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"`config` value {where} must be finite; got {value}")
    elif isinstance(value, str):
        if len(value) > MAX_STRING:
            raise ValueError(f"`config` value {where} must be a string of at most {MAX_STRING} characters; "
                             f"got {len(value)}")
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ValueError(f"`config` value {where} must be a list of at most {MAX_LIST} items; got {len(value)}")
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_value(v, f"{where}.{k}", depth + 1)
    else:
        raise TypeError(f"`config` value {where} must be JSON data; got {type(value).__name__}")


def _config(name: str, weights_dir: Path) -> dict:
    path = check_name(name, weights_dir)
    if not path.is_file():
        raise ValueError(f"`name` must be one of {available()} or a model in `weights_dir`; got {name!r}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"`name`: {path.name} is larger than {MAX_CONFIG_BYTES} bytes; not a zoo config")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"`name`: {path.name} is not valid JSON ({e})") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config", {}), dict):
        raise ValueError(f"`name`: {path.name} must be a JSON object with 'class' and a 'config' object")
    _check_value(cfg.get("config", {}), "config")
    return cfg


def _build_checked(cfg: dict, weights: Path) -> nn.Module:
    """Build the config's class on the meta device, compare it with the safetensors header, then build it."""
    from captum_cfx._io import load_safetensors, read_safetensors_header

    cls = resolve_class(cfg.get("class"))
    kwargs = cfg.get("config", {})
    try:
        with torch.device("meta"):
            meta = cls(**kwargs)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"`config` does not fit class {cfg.get('class')!r} ({type(e).__name__}: {e})") from e
    expected = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    header = read_safetensors_header(weights, argument="name", max_tensors=len(expected))
    got = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    if got != expected:
        extra = sorted(set(got) - set(expected))[:5]
        missing = sorted(set(expected) - set(got))[:5]
        shapes = [k for k in set(got) & set(expected) if got[k] != expected[k]][:5]
        raise ValueError(f"`name`: {weights.name} does not match class {cfg.get('class')!r} with this config "
                         f"(unexpected tensors {extra}, missing {missing}, other shapes {shapes})")
    del meta
    model = cls(**kwargs)
    state = load_safetensors(weights, argument="name")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state)
    return model


def load_pretrained(name: str, weights_dir: str | Path | None = None) -> nn.Module:
    """Load a shipped model by name, in eval mode, float32, on CPU.

    Args:
        name: one of :func:`available`, e.g. ``"mnist-classifier"``, ``"mnist-oracle"``, ``"mnist-vae"``; or
            a model in ``weights_dir`` (a plain name: no path separators, no ``..``).
        weights_dir: a folder holding ``<name>.json`` + ``<name>.safetensors`` (default: the package's). Its
            JSON may name only classes of :data:`MODEL_CLASSES` or registered with :func:`register_model`.

    Examples::

        >>> from captum_cfx.zoo import load_pretrained
        >>> model = load_pretrained("mnist-classifier")
    """
    wd = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    cfg = _config(name, wd)
    return _build_checked(cfg, wd / f"{name}.safetensors").eval()


def generator_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """The wrapper's keyword arguments from a zoo generator spec: lists become tuples, and a
    ``feature_network`` named by a string becomes that preset network (:mod:`captum_cfx.zoo.presets`)."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "wrapper"}
    if isinstance(kwargs.get("feature_network"), str):
        from captum_cfx.zoo.presets import feature_network

        kwargs["feature_network"] = feature_network(kwargs["feature_network"])
    return kwargs


def load_generator(name: str = "mnist-vae", weights_dir: str | Path | None = None) -> Any:
    """Load a shipped generative model, wrapped in the generator protocol.

    Examples::

        >>> import torch
        >>> from captum_cfx.zoo import load_generator
        >>> gen = load_generator("mnist-vae")
        >>> gen.encode(torch.rand(2, 1, 28, 28)).free.shape
        torch.Size([2, 32])
    """
    wd = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    spec = None
    if check_name(name, wd).is_file():
        spec = _config(name, wd).get("generator")
    spec = spec or _GENERATORS.get(name)
    if spec is None:
        gens = sorted(set(_GENERATORS) | {n for n in available() if _config(n, WEIGHTS_DIR).get("generator")})
        raise ValueError(f"`name` must be a generator, one of {gens}; got {name!r}")
    if not isinstance(spec, dict):
        raise ValueError(f"`name`: the 'generator' entry of {name}.json must be an object; got {type(spec).__name__}")
    wrapper = _resolve_wrapper(spec.get("wrapper"))
    _check_value({k: v for k, v in spec.items() if k != "wrapper"}, "generator")
    kwargs = generator_kwargs(spec)
    return wrapper(load_pretrained(name, wd), **kwargs).eval()
