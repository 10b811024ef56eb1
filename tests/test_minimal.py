"""The latent attack's minimality options (issue R): line search, L1 proximal step, ACE-style masking.

Linear worlds, answers computed by hand.
"""

import pytest
import torch

from captum_cfx import LatentCounterfactualAttack, LogitMargin, NormalizedGradient
from captum_cfx.generators import AutoencoderGenerator

from .conftest import linear_world


def _margin(model, x):
    out = model(x)
    return out[:, 1] - out[:, 0]


def test_line_search_returns_the_smallest_alpha_that_keeps_the_target():
    A, W, gen, model = linear_world()
    x = gen.decode(torch.tensor([[0.3, -0.2], [-1.0, 0.4], [0.5, 0.1]]))
    z0 = gen.encode(x).free
    c = (W[1] - W[0]) @ A
    m, n_bisect = 2.0, 12
    atk = LatentCounterfactualAttack(model, gen)
    kw = {"target": 1, "objective": LogitMargin(m), "optimizer": NormalizedGradient(0.7), "max_steps": 100}
    plain = atk.generate(x, **kw)
    out = atk.generate(x, line_search=n_bisect, **kw)
    assert plain.success.all() and out.success.all()
    d = plain.latents.free - z0
    # the margin is linear in alpha: alpha* = (m - gap(z0)) / (gap(z_cf) - gap(z0))
    alpha_star = (m - z0 @ c) / (d @ c)
    alpha = ((out.latents.free - z0) / d)[:, 0]
    assert torch.allclose(out.latents.free, z0 + alpha[:, None] * d, atol=1e-5)  # on the segment
    assert (alpha >= alpha_star - 1e-5).all() and (alpha <= alpha_star + 2.0 ** -n_bisect + 1e-5).all()
    assert (alpha < 1).all()  # the Adam overshoot is gone
    assert (_margin(model, out.counterfactuals) >= m - 1e-4).all()  # still valid
    assert torch.allclose(out.counterfactuals, gen.decode(out.latents.free), atol=1e-6)
    assert torch.allclose(out.predictions, model(out.counterfactuals), atol=1e-5)


def test_line_search_leaves_unsuccessful_samples_alone():
    _, _, gen, model = linear_world()
    x = gen.decode(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
    kw = {"target": 1, "margin": 5.0, "max_steps": 1}
    plain = LatentCounterfactualAttack(model, gen).generate(x, **kw)
    out = LatentCounterfactualAttack(model, gen).generate(x, line_search=6, **kw)
    assert not out.success.any()
    assert torch.equal(out.latents.free, plain.latents.free)
    assert torch.equal(out.counterfactuals, plain.counterfactuals)


def _skewed_world():
    """Decoder = identity on 2 latents; the model's margin is 1.0 z_0 + 0.1 z_1."""
    gen = AutoencoderGenerator(lambda x: x.flatten(1), lambda z: z.view(-1, 1, 1, 2), input_range=None,
                               image_shape=(1, 1, 2))
    W = torch.tensor([[0.0, 0.0], [1.0, 0.1]])
    return gen, (lambda x: x.flatten(1) @ W.T)


def test_sparsity_is_a_proximal_l1_step_that_keeps_weak_dimensions_at_z0():
    gen, model = _skewed_world()
    x = torch.tensor([[[[0.2, -0.3]]]])
    eta, lam, m = 0.1, 0.2, 1.0
    cn = torch.tensor([1.0, 0.1]) / torch.tensor([1.0, 0.1]).norm()  # normalised gradient direction
    atk = LatentCounterfactualAttack(model, gen)
    plain = atk.generate(x, target=1, objective=LogitMargin(m), optimizer=NormalizedGradient(eta), max_steps=100)
    out = atk.generate(x, target=1, objective=LogitMargin(m), optimizer=NormalizedGradient(eta), max_steps=100,
                       sparsity=lam)
    assert plain.success.all() and out.success.all()
    assert plain.latents.free[0, 1] != x.flatten()[1]  # without the penalty, z_1 moves ...
    assert out.latents.free[0, 1] == x.flatten()[1]  # ... with it, exactly not (its step 0.00995 < 0.02)
    # z_0 moves by eta * (cn_0 - lam) per step until the margin 1.0 z_0 + 0.1 z_1 reaches m
    per_step = eta * (cn[0] - lam)
    gap0 = float(x.flatten() @ torch.tensor([1.0, 0.1]))
    k = int(torch.ceil((m - gap0) / per_step))
    assert int(out.n_steps[0]) == k
    assert torch.allclose(out.latents.free[0, 0], x.flatten()[0] + k * per_step, atol=1e-5)


def _blurry_world():
    """Decoder spreads the latent over 4 pixels: (z, 0.05 z, 0.05 z, 0.05 z); the model reads pixel 0 only."""
    spread = torch.tensor([1.0, 0.05, 0.05, 0.05])
    gen = AutoencoderGenerator(lambda x: x.flatten(1)[:, :1], lambda z: (z * spread).view(-1, 1, 2, 2),
                               input_range=None, image_shape=(1, 2, 2))
    W = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    return gen, (lambda x: x.flatten(1) @ W.T)


def test_mask_keeps_the_reconstruction_where_the_change_is_small():
    gen, model = _blurry_world()
    x = gen.decode(torch.tensor([[0.0], [0.2]]))
    atk = LatentCounterfactualAttack(model, gen)
    kw = {"target": 1, "margin": 1.0, "lr": 0.1, "max_steps": 100}
    plain = atk.generate(x, **kw)
    out = atk.generate(x, mask_threshold=0.2, mask_dilation=0, **kw)
    assert plain.success.all() and out.success.all()
    diff = plain.counterfactuals - plain.reconstructions
    assert (diff.flatten(1)[:, 1:].abs() > 0).all()  # the decoder moved every pixel
    expected = plain.reconstructions.clone()
    expected.view(2, 4)[:, 0] = plain.counterfactuals.view(2, 4)[:, 0]  # only pixel 0 moved by > 0.2
    assert torch.equal(out.counterfactuals, expected)
    assert torch.equal(out.latents.free, plain.latents.free)
    assert torch.allclose(out.predictions, model(expected))
    # dilation 1 on a 2x2 image covers every pixel: the plain counterfactual comes back
    dil = atk.generate(x, mask_threshold=0.2, mask_dilation=1, **kw)
    assert torch.equal(dil.counterfactuals, plain.counterfactuals)


def test_mask_falls_back_when_the_masked_image_misses_the_objective():
    gen, model = _blurry_world()
    x = gen.decode(torch.tensor([[0.0]]))
    atk = LatentCounterfactualAttack(model, gen)
    kw = {"target": 1, "margin": 1.0, "lr": 0.1, "max_steps": 100}
    plain = atk.generate(x, **kw)
    out = atk.generate(x, mask_threshold=100.0, mask_dilation=0, **kw)  # nothing passes: masked = reconstruction
    assert out.success.all()
    assert torch.equal(out.counterfactuals, plain.counterfactuals)
    assert torch.equal(out.predictions, plain.predictions)


@pytest.mark.parametrize(("kw", "match"), [
    ({"sparsity": -0.1}, "sparsity"), ({"line_search": 1.5}, "line_search"), ({"line_search": -1}, "line_search"),
    ({"mask_threshold": 0.0}, "mask_threshold"), ({"mask_dilation": -1}, "mask_dilation"),
])
def test_minimality_options_refuse_bad_values(kw, match):
    _, _, gen, model = linear_world()
    x = gen.decode(torch.zeros(1, 2))
    with pytest.raises((ValueError, TypeError), match=match):
        LatentCounterfactualAttack(model, gen).generate(x, target=1, **kw)


def test_minimal_preset_is_steepest_descent_and_the_default_is_the_paper():
    from captum_cfx import LatentAttackConfig

    assert LatentAttackConfig.preset("paper") == LatentAttackConfig()
    cfg = LatentAttackConfig.preset("minimal", max_steps=7)
    assert (cfg.optimizer, cfg.lr, cfg.max_steps, cfg.line_search, cfg.sparsity) == ("l2", 0.5, 7, 0, 0.0)
    with pytest.raises(ValueError, match="name"):
        LatentAttackConfig.preset("smallest")
    # on the linear world the preset's steps follow the normalised gradient: z0 + k * 0.5 * c / |c|
    A, W, gen, model = linear_world()
    x = gen.decode(torch.tensor([[0.3, -0.2]]))
    z0 = gen.encode(x).free
    c = (W[1] - W[0]) @ A
    out = LatentCounterfactualAttack(model, gen).generate(x, target=1, **LatentAttackConfig.preset("minimal").to_dict())
    k = int(torch.ceil((6.25 - z0 @ c) / (0.5 * c.norm())))
    assert out.success.all() and int(out.n_steps[0]) == k
    assert torch.allclose(out.latents.free, z0 + k * 0.5 * c / c.norm(), atol=1e-5)
