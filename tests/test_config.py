"""Hyperparameters as data: frozen configs, declared constraints, keyword-only settings."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from captum_cfx import (
    DiffusionPixelCounterfactual,
    GANGenerator,
    LatentAttackConfig,
    LatentCounterfactualAttack,
    PixelCounterfactualConfig,
)
from captum_cfx.generators import GANInversionConfig


@pytest.mark.parametrize("cls, method", [
    (LatentAttackConfig, LatentCounterfactualAttack.generate),
    (PixelCounterfactualConfig, DiffusionPixelCounterfactual.generate),
    (GANInversionConfig, GANGenerator.__init__),
])
def test_config_is_the_signature_default_and_settings_are_keyword_only(cls, method):
    params = inspect.signature(method).parameters
    for f in dataclasses.fields(cls):
        p = params[f.name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f.name
        if not (cls is LatentAttackConfig and f.name == "margin"):  # margin=None: the config's margin
            assert p.default == f.default, f.name
    positional = [p for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 4  # self + at most three (inputs, target, additional_forward_args)


def test_documented_defaults_and_frozen():
    cfg = LatentAttackConfig()
    assert (cfg.margin, cfg.optimizer, cfg.max_steps, LatentAttackConfig.ADAM_LR) == (6.25, "adam", 500, 0.3)
    assert cfg.make_optimizer().lr == 0.3 and LatentAttackConfig(optimizer="l2").make_optimizer().lr == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_steps = 3  # type: ignore[misc]
    assert cfg.replace(max_steps=3).max_steps == 3 and cfg.max_steps == 500
    assert PixelCounterfactualConfig().to_dict()["step_size"] == 1 / 255


@pytest.mark.parametrize("cls, kwargs, exc, match", [
    (LatentAttackConfig, {"max_steps": -1}, ValueError, r"`max_steps` must be >= 0; got -1"),
    (LatentAttackConfig, {"max_steps": 2.5}, TypeError, "`max_steps` must be an int; got float 2.5"),
    (LatentAttackConfig, {"lr": float("nan")}, ValueError, "`lr` must be a finite number"),
    (LatentAttackConfig, {"radius": 0}, ValueError, r"`radius` must be > 0"),
    (LatentAttackConfig, {"optimizer": "rmsprop"}, ValueError, "`optimizer` must be 'adam', 'l2' or 'sign'"),
    (LatentAttackConfig, {"skip_zero_grad": 1}, TypeError, "`skip_zero_grad` must be a bool"),
    (PixelCounterfactualConfig, {"noise_level": 1.5}, ValueError, r"`noise_level` must be in \(0, 1\]; got 1.5"),
    (PixelCounterfactualConfig, {"dilation": 4}, ValueError, "`dilation` must be an odd positive int"),
    (PixelCounterfactualConfig, {"stop_on": "never"}, ValueError, "`stop_on` must be 'counterfactual' or"),
    (GANInversionConfig, {"patience": 0}, ValueError, "`patience` must be > 0"),
    (GANInversionConfig, {"error_threshold": -1.0}, ValueError, "`error_threshold` must be > 0"),
    (GANInversionConfig, {"fuse": "yes"}, TypeError, "`fuse` must be a bool; got str"),
])
def test_declared_constraints_name_the_argument(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)
    with pytest.raises(exc, match=match):
        cls().replace(**kwargs)


def test_settings_cannot_be_passed_positionally(tiny):
    _, clf, gen, x = tiny
    with pytest.raises(TypeError, match="positional"):
        LatentCounterfactualAttack(clf, gen).generate(x, 1, None, "margin")  # type: ignore[misc]
    out = LatentCounterfactualAttack(clf, gen).generate(x, 1, None, max_steps=2)
    assert out.n_steps.max() <= 2 and torch.equal(out.goals, torch.ones(len(x), dtype=torch.long))
