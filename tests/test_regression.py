"""Regression counterfactuals: the pixel-space diffusion method (ACE / AC-RE), the regression target, and
the latent method with a regression objective, on tiny models whose answers can be computed by hand."""

import warnings

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from captum_cfx import (
    DDIMGenerator,
    DiffusionPixelCounterfactual,
    LatentCounterfactualAttack,
    RegressionTarget,
    TargetClass,
)
from captum_cfx.attr import PixelCounterfactualOutput

from .conftest import TinyClassifier, linear_world

STEP = 0.02


def _unet(zero: bool = False, size: int = 8) -> UNet2DModel:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    if zero:  # predicts eps = 0: the filter is x + sqrt((1 - a) / a) * eps, linear in x
        for p in unet.parameters():
            torch.nn.init.zeros_(p)
    return unet


def _gen(zero: bool = False, size: int = 8) -> DDIMGenerator:
    return DDIMGenerator(_unet(zero, size), DDIMScheduler(num_train_timesteps=100), num_inference_steps=2).eval()


def brightness(x: torch.Tensor) -> torch.Tensor:
    """A regressor whose gradient sign is + everywhere: each sign step adds STEP to its output."""
    return x.mean((1, 2, 3))


def centre(x: torch.Tensor) -> torch.Tensor:
    """A regressor that reads only the central quarter of the pixels (the 'inner square')."""
    s = x.shape[-1]
    return x[:, :, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].mean((1, 2, 3)).unsqueeze(1)


def _x(n: int = 4, seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 0.2 + 0.3


# ----------------------------------------------------------------- pixel method
def test_per_sample_freezing_is_exact():
    # near-identity filter (tiny noise level, zero UNet): sample i moves by exactly n_steps[i] * STEP
    x = _x(3)
    method = DiffusionPixelCounterfactual(brightness, _gen(zero=True))
    change = torch.tensor([0.1, 0.3, 0.2])
    out = method.generate(x, target=change, objective=RegressionTarget(0.05, mode="relative"), step_size=STEP,
                          max_steps=50, noise_level=0.01, filter_steps=1, stop_on="filtered",
                          generator=torch.Generator().manual_seed(0))
    assert isinstance(out, PixelCounterfactualOutput)
    assert out.attack_success.all()
    steps = out.n_steps.tolist()
    assert steps[0] < steps[2] < steps[1]  # larger changes take more steps
    # frozen: each stopped exactly where it first succeeded, no step further
    assert torch.allclose(out.adversarials, x + STEP * out.n_steps.view(-1, 1, 1, 1), atol=1e-5)
    reached = brightness(out.filtered) - brightness(x)
    assert ((reached - change).abs() <= 0.05).all() and ((reached - STEP - change).abs() > 0.05).all()
    # the batch shrank as samples finished
    sizes = [s for s, _ in out.active_batch_sizes]
    assert sizes[0] == 3 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True)
    # one at a time gives the same number of steps (also with ACE's fresh noise at every step: it is tiny here)
    single = method.generate(x[1:2], target=0.3, objective=RegressionTarget(0.05, mode="relative"), step_size=STEP,
                             max_steps=50, noise_level=0.01, filter_steps=1, noise="fresh", stop_on="filtered",
                             generator=torch.Generator().manual_seed(1))
    assert int(single.n_steps[0]) == steps[1]


@pytest.mark.parametrize("dilation, mask_from, stop_on", [(1, "filtered", "counterfactual"),
                                                          (3, "filtered", "counterfactual"),
                                                          (1, "adversarial", "filtered")])
def test_outside_the_mask_is_bit_identical(dilation, mask_from, stop_on):
    x = _x(4, seed=1, size=16)
    # a random UNet: the inpainting changes what it touches
    method = DiffusionPixelCounterfactual(centre, _gen(size=16))
    out = method.generate(x, target=[0.9, 0.1, 0.8, 0.2], objective=RegressionTarget(0.05), step_size=0.05,
                          max_steps=30, noise_level=0.3, filter_steps=2, dilation=dilation, mask_threshold=0.2,
                          mask_from=mask_from, stop_on=stop_on, generator=torch.Generator().manual_seed(0))
    m = out.masks
    assert m.dtype == torch.bool and m.shape == (4, 1, 16, 16)
    assert m.any() and not m.flatten(1).all(1).any()
    mc = m.expand_as(x)
    assert torch.equal(out.counterfactuals[~mc], x[~mc])  # bit for bit
    assert not torch.equal(out.counterfactuals[mc], x[mc])  # and the inside was regenerated
    pre = out.filtered if mask_from == "filtered" else out.adversarials
    changed = (x - pre).abs().amax(1, keepdim=True) > 0.2
    if dilation == 1:
        assert torch.equal(m, changed)
    else:
        assert (m | ~changed).all() and m.sum() > changed.sum()
    # the prediction and success flags describe the returned images
    assert torch.allclose(out.predictions, centre(out.counterfactuals))
    assert torch.equal(out.success, ((centre(out.counterfactuals)[:, 0] - out.goals).abs() <= 0.05))
    maps = method.attribute(x, target=[0.9, 0.1, 0.8, 0.2], objective=RegressionTarget(0.05), step_size=0.05,
                            max_steps=30, noise_level=0.3, filter_steps=2, dilation=dilation, mask_threshold=0.2,
                            mask_from=mask_from, stop_on=stop_on, generator=torch.Generator().manual_seed(0))
    assert maps.shape == x.shape and torch.equal(maps, out.counterfactuals - x)


def test_scaled_steps_and_stopping_on_the_counterfactual():
    w = torch.full((1, 1, 8, 8), 0.1)
    w[..., 2:6, 2:6] = 1.0

    def weighted(x):  # looks mostly at the centre; its gradient is w / w.sum() everywhere
        return (x * w).sum((1, 2, 3)) / w.sum()

    x = _x(3, seed=5)
    method = DiffusionPixelCounterfactual(weighted, _gen(zero=True))
    kw = {"target": 0.15, "objective": RegressionTarget(0.02, mode="relative"), "step_size": STEP, "max_steps": 60,
          "noise_level": 0.01, "filter_steps": 1, "mask_threshold": 0.05, "dilation": 1}
    sign = method.generate(x, stop_on="filtered", generator=torch.Generator().manual_seed(0), **kw)
    scaled = method.generate(x, step_rule="scaled", generator=torch.Generator().manual_seed(0), **kw)
    d_sign, d_scaled = sign.adversarials - x, scaled.adversarials - x
    assert torch.allclose(d_sign, STEP * sign.n_steps.view(-1, 1, 1, 1) * torch.ones_like(x), atol=1e-5)
    assert torch.allclose(d_scaled, STEP * scaled.n_steps.view(-1, 1, 1, 1) * w, atol=1e-5)  # in proportion
    # judged on the returned image: only the centre is regenerated, and the model accepts it
    assert torch.equal(scaled.masks[0, 0], w[0, 0] == 1.0)
    assert scaled.success.all() and torch.allclose(scaled.predictions, weighted(scaled.counterfactuals))


def test_inpainting_trials_only_redo_rejected_samples():
    x = _x(4, seed=2)
    method = DiffusionPixelCounterfactual(centre, _gen())
    kw = {"target": [0.9, 0.1, 0.8, 0.2], "objective": RegressionTarget(0.05), "step_size": 0.05, "max_steps": 30,
          "noise_level": 0.3, "filter_steps": 2, "stop_on": "filtered"}
    one = method.generate(x, generator=torch.Generator().manual_seed(0), **kw)
    more = method.generate(x, generator=torch.Generator().manual_seed(0), inpaint_trials=4, **kw)
    assert torch.equal(one.adversarials, more.adversarials) and torch.equal(one.masks, more.masks)
    assert (more.success | ~one.success).all()  # never loses a success
    kept = one.success
    assert torch.equal(more.counterfactuals[kept], one.counterfactuals[kept])
    mc = more.masks.expand_as(x)
    assert torch.equal(more.counterfactuals[~mc], x[~mc])


def test_classification_objective_is_ace():
    torch.manual_seed(0)
    clf = TinyClassifier()
    x = _x(4, seed=3)
    target = (clf(x).argmax(1) + 1) % 3
    method = DiffusionPixelCounterfactual(clf, _gen(zero=True))
    kw = {"target": target, "step_size": 0.05, "max_steps": 40, "noise_level": 0.01, "filter_steps": 1,
          "mask_threshold": 0.0, "dilation": 1}
    with torch.no_grad():  # Captum's NoiseTunnel calls attribute under no_grad
        out = method.generate(x, generator=torch.Generator().manual_seed(0), **kw)
        maps = method.attribute(x, generator=torch.Generator().manual_seed(0), **kw)
    assert out.success.all()  # default objective: the target class becomes the prediction
    assert torch.equal(out.predictions.argmax(1), target)
    assert torch.equal(out.predictions, clf(out.counterfactuals).detach())
    assert torch.equal(maps, out.counterfactuals - x)
    strict = method.generate(x, objective=TargetClass(0.6), generator=torch.Generator().manual_seed(0), **kw)
    assert (strict.n_steps >= out.n_steps).all() and (strict.n_steps > out.n_steps).any()


def test_tuple_inputs_extra_args_and_internal_batches():
    def reg(x, w, scale=1.0):
        return centre(x) * w * scale

    x = _x(4, seed=4)
    method = DiffusionPixelCounterfactual(reg, _gen(zero=True))
    kw = {"objective": RegressionTarget(0.05, mode="relative"), "step_size": STEP, "max_steps": 40,
          "noise_level": 0.01, "filter_steps": 1}
    maps = method.attribute((x, torch.ones(4, 1)), target=0.2, additional_forward_args=(1.0,), **kw)
    assert isinstance(maps, tuple) and maps[0].shape == x.shape and torch.equal(maps[1], torch.zeros(4, 1))
    out = method.generate(x, target=0.2, additional_forward_args=(torch.ones(4, 1),), internal_batch_size=3,
                          generator=torch.Generator().manual_seed(0), **kw)
    assert len(out) == 4 and out.masks.shape == (4, 1, 8, 8) and out.success.all()
    assert method.perturb(x, target=0.2, additional_forward_args=(1.0,), **kw).shape == x.shape


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"noise_level": 0.0}, ValueError, "`noise_level`"),
    ({"noise_level": 1.5}, ValueError, "`noise_level`"),
    ({"dilation": 2}, ValueError, "`dilation`"),
    ({"noise": "gaussian"}, ValueError, "`noise`"),
    ({"step_size": 0}, ValueError, "`step_size`"),
    ({"max_steps": 1.5}, TypeError, "`max_steps`"),
    ({"filter_steps": 0}, ValueError, "`filter_steps`"),
    ({"inpaint_trials": 0}, ValueError, "`inpaint_trials`"),
    ({"mask_threshold": -0.1}, ValueError, "`mask_threshold`"),
    ({"step_rule": "adam"}, ValueError, "`step_rule`"),
    ({"mask_from": "input"}, ValueError, "`mask_from`"),
    ({"stop_on": "never"}, ValueError, "`stop_on`"),
])
def test_pixel_method_bad_settings(kwargs, exc, match):
    method = DiffusionPixelCounterfactual(brightness, _gen())
    with pytest.raises(exc, match=match):
        method.generate(_x(2), target=0.5, objective=RegressionTarget(), **kwargs)


def test_pixel_method_bad_construction_and_inputs():
    A, W, lin_gen, model = linear_world()
    with pytest.raises(TypeError, match="`generator` must be a captum_cfx.generators.DDIMGenerator"):
        DiffusionPixelCounterfactual(model, lin_gen)
    with pytest.raises(TypeError, match="`forward_func` must be callable"):
        DiffusionPixelCounterfactual("model", _gen())
    method = DiffusionPixelCounterfactual(brightness, _gen())
    with pytest.raises(ValueError, match="`target` is required"):
        method.generate(_x(2), objective=RegressionTarget())
    with pytest.raises(ValueError, match=r"`inputs` must be \(N, 1, 8, 8\)"):
        method.generate(torch.rand(2, 1, 6, 6), target=0.5, objective=RegressionTarget())
    with pytest.raises(TypeError, match="`forward_func` is not differentiable"):
        DiffusionPixelCounterfactual(lambda x: brightness(x).detach(), _gen()).generate(
            _x(2), target=0.9, objective=RegressionTarget(), max_steps=2)


# ----------------------------------------------------------------- targets
def test_targets_as_users_think_of_them():
    y = torch.tensor([0.2, 0.7, 0.5])
    assert torch.allclose(RegressionTarget().prepare(y, 0.4), torch.full((3,), 0.4))
    assert torch.allclose(RegressionTarget().prepare(y.unsqueeze(1), [0.1, 0.2, 0.3]), torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(RegressionTarget(mode="relative").prepare(y, -0.1), y - 0.1)
    assert torch.allclose(RegressionTarget(mode="mirror").prepare(y, None), torch.tensor([0.7, 0.2, 0.0]))
    # mirror follows the known range: y +/- half of it around the midpoint
    g = RegressionTarget(mode="mirror", value_range=(0, 10)).prepare(torch.tensor([1.0, 9.0]), None)
    assert torch.allclose(g, torch.tensor([6.0, 4.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning inside the range
        RegressionTarget(value_range=(0, 10)).prepare(y, 5.0)
        RegressionTarget(value_range=None).prepare(y, 50.0)


@pytest.mark.parametrize("target, mode, exc, match", [
    (float("nan"), "absolute", ValueError, r"`target` contains NaN or Inf values \(examples \[0, 1, 2\]\)"),
    ([0.1, float("nan"), 0.3], "absolute", ValueError, r"`target` contains NaN .*examples \[1\]"),
    (torch.tensor([float("inf")]), "relative", ValueError, "`target` contains NaN or Inf"),
    (None, "absolute", ValueError, "`target` is required: the target value"),
    (None, "relative", ValueError, "`target` is required: the target change"),
    ([0.1, 0.2], "absolute", ValueError, r"`target` must have one value per example \(3\)"),
    (True, "absolute", TypeError, "`target` must hold numbers"),
    ("0.5", "absolute", TypeError, "`target` must be a number, a list or a tensor"),
    (torch.tensor([True, False, True]), "absolute", TypeError, "`target` must be a real-valued tensor"),
])
def test_bad_targets(target, mode, exc, match):
    with pytest.raises(exc, match=match):
        RegressionTarget(mode=mode).prepare(torch.tensor([0.2, 0.7, 0.5]), target)


def test_targets_outside_the_known_range_warn():
    with pytest.warns(UserWarning, match=r"`target`: 1 goal value.*outside the regressor's known range \[0, 1\]"):
        RegressionTarget().prepare(torch.tensor([0.2, 0.7]), [0.5, 1.3])
    with pytest.warns(UserWarning, match=r"2 goal value"):
        RegressionTarget(mode="relative").prepare(torch.tensor([0.2, 0.7]), 0.5 + 0.4)
    # the warning reaches users through the methods too
    with pytest.warns(UserWarning, match="known range"):
        DiffusionPixelCounterfactual(brightness, _gen(zero=True)).generate(
            _x(2), target=-0.5, objective=RegressionTarget(), max_steps=0, filter_steps=1)


@pytest.mark.parametrize("kwargs, match", [
    ({"tolerance": float("nan")}, "`tolerance`"),
    ({"tolerance": -1}, "`tolerance`"),
    ({"mode": "mirrored"}, "`mode`"),
    ({"value_range": (1, 0)}, "`value_range`"),
    ({"value_range": (0, 1, 2)}, "`value_range`"),
])
def test_bad_regression_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegressionTarget(**kwargs)


def test_nan_predictions_are_reported():
    with pytest.raises(ValueError, match="regressor's output on the inputs contains NaN"):
        RegressionTarget(mode="mirror").prepare(torch.tensor([0.2, float("nan")]), None)


# ----------------------------------------------------------------- latent method, regression objective
def test_latent_method_freezes_and_larger_changes_take_more_steps():
    A, _, gen, _ = linear_world()
    reg = lambda x: x.flatten(1).sum(1)  # noqa: E731
    x = gen.decode(torch.tensor([[0.1, 0.1], [0.1, 0.1], [0.1, 0.1]]))
    change = torch.tensor([0.5, 1.5, 1.0])
    lr = 0.005
    out = LatentCounterfactualAttack(reg, gen).generate(
        x, target=change, objective=RegressionTarget(0.05, mode="relative", value_range=None), optimizer="l2",
        lr=lr, max_steps=2000)
    assert torch.allclose(out.goals, reg(x) + change)
    err = (out.predictions - out.goals).abs()
    assert out.success.all() and (err <= 0.05).all()
    # stopped the first step it was within tolerance: one step (which moves r by lr * |dr/dz|) earlier it was not
    per_step = lr * float(A.sum(0).norm())
    assert (err > 0.05 - per_step - 1e-6).all()
    s = out.n_steps.tolist()
    assert s[0] < s[2] < s[1]
