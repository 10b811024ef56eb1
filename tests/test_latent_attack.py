import math

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.attr._utils.visualization import visualize_image_attr
from captum.metrics import infidelity, sensitivity_max
from captum.robust import PGD, AttackComparator, MinParamPerturbation

from captum_cfx import (
    Flip,
    LatentCounterfactualAttack,
    LogitMargin,
    NormalizedGradient,
    ProbabilityThreshold,
    RegressionTarget,
    TargetClass,
)
from captum_cfx.optim import LatentOptimizer

from .conftest import linear_world


# ----------------------------------------------------------------- exact, by hand
def test_linear_world_steps_and_counterfactual_by_hand():
    A, W, gen, model = linear_world()
    x = gen.decode(torch.tensor([[0.3, -0.2], [-1.0, 0.4], [2.0, 2.0]]))
    z0 = gen.encode(x).free
    c = (W[1] - W[0]) @ A  # d(logit_1 - logit_0)/dz
    eta, m = 0.1, 2.0
    atk = LatentCounterfactualAttack(model, gen)
    out = atk.generate(x, target=1, objective=LogitMargin(m), optimizer=NormalizedGradient(eta), max_steps=1000)
    gap0 = z0 @ c
    k = torch.clamp(torch.ceil((m - gap0) / (eta * c.norm()) - 1e-6), min=0).long()
    assert out.success.all()
    assert torch.equal(out.n_steps, k)
    expected = z0 + k.unsqueeze(1).float() * eta * c / c.norm()
    assert torch.allclose(out.latents.free, expected, atol=1e-5)
    assert torch.allclose(out.counterfactuals, gen.decode(expected), atol=1e-5)
    # attribution = counterfactual - reconstruction, shaped like the input
    maps = atk.attribute(x, target=1, objective=LogitMargin(m), optimizer=NormalizedGradient(eta), max_steps=1000)
    assert maps.shape == x.shape
    assert torch.allclose(maps, gen.decode(expected) - gen.decode(z0), atol=1e-5)


def test_linear_world_adam_moves_by_lr_times_sign():
    A, W, gen, model = linear_world()
    x = gen.decode(torch.tensor([[0.0, 0.0]]))
    c = (W[1] - W[0]) @ A
    out = LatentCounterfactualAttack(model, gen).generate(x, target=1, margin=1.0, lr=0.05, max_steps=500)
    # constant gradient => Adam's step is exactly lr * sign(-grad) each step
    k = int(out.n_steps[0])
    assert torch.allclose(out.latents.free[0], k * 0.05 * c.sign(), atol=1e-4)
    assert float(out.latents.free[0] @ c) >= 1.0 > float((k - 1) * 0.05 * c.sign() @ c)


def test_max_steps_zero_and_already_done():
    _, _, gen, model = linear_world()
    x = gen.decode(torch.tensor([[0.0, 0.0]]))
    out = LatentCounterfactualAttack(model, gen).generate(x, target=1, margin=1.0, max_steps=0)
    assert not out.success.any() and out.n_steps.tolist() == [0]
    assert torch.equal(out.counterfactuals, out.reconstructions)
    out = LatentCounterfactualAttack(model, gen).generate(x, target=1, margin=0.0, max_steps=5)
    # margin 0 needs a strict lead; at z = 0 the two logits tie
    assert out.n_steps.item() >= 1


# ----------------------------------------------------------------- batching
def test_batched_equals_per_sample(shipped, mnist_test):
    clf, _, gen = shipped
    x, y = mnist_test
    x, tgt = x[:6], (y[:6] + 3) % 10
    atk = LatentCounterfactualAttack(clf, gen)
    batched = atk.generate(x, target=tgt, max_steps=60)
    singles = [atk.generate(x[i : i + 1], target=int(tgt[i]), max_steps=60) for i in range(6)]
    assert batched.n_steps.tolist() == [int(s.n_steps) for s in singles]
    assert batched.success.tolist() == [bool(s.success) for s in singles]
    # conv kernels round differently at different batch sizes; 1e-3 on latents of norm ~10 still catches
    # any mixing between samples
    assert torch.allclose(batched.latents.free, torch.cat([s.latents.free for s in singles]), atol=1e-3)
    chunked = atk.generate(x, target=tgt, max_steps=60, internal_batch_size=4)
    assert chunked.n_steps.tolist() == batched.n_steps.tolist()
    assert torch.allclose(chunked.counterfactuals, batched.counterfactuals, atol=1e-3)


def test_compaction_freezes_finished_samples(shipped, mnist_test):
    clf, _, gen = shipped
    x, y = mnist_test
    out = LatentCounterfactualAttack(clf, gen).generate(x[:16], target=(y[:16] + 1) % 10, max_steps=80)
    sizes = [s for s, _ in out.active_batch_sizes]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 16
    # every forward computed exactly the samples that had not stopped before it
    for t, s in enumerate(sizes):
        assert s == int((out.n_steps >= t).sum())
    # a finished sample's latent is exactly where it stopped: the decoded image is the returned one
    with torch.no_grad():
        assert torch.allclose(gen.decode(out.latents), out.counterfactuals, atol=1e-5)
        assert torch.equal(clf(out.counterfactuals).argmax(1)[out.success], out.goals[out.success])


def test_same_generator_seed_same_output(tiny):
    _, clf, gen, x = tiny
    atk = LatentCounterfactualAttack(clf, gen)
    kw = dict(target=2, start="sample", max_steps=5)
    a = atk.generate(x, generator=torch.Generator().manual_seed(3), **kw)
    b = atk.generate(x, generator=torch.Generator().manual_seed(3), **kw)
    c = atk.generate(x, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a.latents.free, b.latents.free) and not torch.equal(a.latents.free, c.latents.free)


def test_no_gradient_leaks_and_training_mode_restored(tiny):
    vae, clf, gen, x = tiny
    clf.train()
    vae.train()
    x = x.clone().requires_grad_()
    LatentCounterfactualAttack(clf, gen).attribute(x, target=1, max_steps=3)
    assert x.grad is None
    assert all(p.grad is None for p in list(clf.parameters()) + list(vae.parameters()))
    assert all(m.training for m in clf.modules()) and all(m.training for m in vae.modules())


def test_training_mode_restored_on_error(tiny):
    vae, clf, gen, x = tiny
    clf.train()

    def broken(inp):
        out = clf(inp)
        if torch.is_grad_enabled():
            raise RuntimeError("boom")
        return out

    with pytest.raises(RuntimeError, match="boom"):
        LatentCounterfactualAttack(broken, gen).generate(x, target=1, max_steps=3)
    assert clf.training
    with pytest.raises(ValueError, match="`target`"):
        LatentCounterfactualAttack(clf, gen).generate(x, target=7)
    assert clf.training


def test_nonfinite_sample_is_reported_and_batch_completes(tiny):
    _, clf, gen, x = tiny

    def model(inp, poison, first):
        out = clf(inp)
        # a poisoned sample turns NaN as soon as its image moves away from its reconstruction;
        # the per-sample arguments are compacted with the batch
        moved = (inp[:, 0, 0, 0] - first).abs() > 1e-6
        return torch.where((moved & poison).unsqueeze(1), torch.full_like(out, float("nan")), out)

    with torch.no_grad():
        first = gen.reconstruct(x)[:, 0, 0, 0]
    poison = torch.tensor([True] + [False] * 5)
    out = LatentCounterfactualAttack(model, gen).generate(x, target=2, margin=0.5, max_steps=50,
                                                          additional_forward_args=(poison, first))
    assert out.nonfinite.tolist() == [True] + [False] * 5
    assert not out.success[0]
    assert torch.isfinite(out.counterfactuals).all()
    assert out.n_steps[1:].max() > 1  # the others kept searching


def test_empty_batch_returns_empty_results(tiny):
    _, clf, gen, _ = tiny
    atk = LatentCounterfactualAttack(clf, gen)
    out = atk.generate(torch.zeros(0, 1, 8, 8), target=1)
    assert len(out) == 0 and out.counterfactuals.shape == (0, 1, 8, 8) and out.success.shape == (0,)
    assert atk.attribute(torch.zeros(0, 1, 8, 8), target=[]).shape == (0, 1, 8, 8)


# ----------------------------------------------------------------- objectives and options
def test_flip_and_source_choice(tiny):
    _, clf, gen, x = tiny
    atk = LatentCounterfactualAttack(clf, gen)
    out = atk.generate(x, objective=Flip(margin=0.2), max_steps=200)
    with torch.no_grad():
        assert torch.equal(out.goals, clf(x).argmax(1))
        assert (clf(out.counterfactuals).argmax(1) != out.goals)[out.success].all()
    rec = atk.generate(x, objective=Flip(), source="reconstruction", max_steps=0)
    with torch.no_grad():
        assert torch.equal(rec.goals, clf(gen.reconstruct(x)).argmax(1))
        assert torch.allclose(rec.original_predictions, clf(gen.reconstruct(x)))


def test_probability_threshold_binary_direction():
    _, _, gen, model = linear_world()
    one_logit = lambda x: model(x)[:, 1:] - model(x)[:, :1]  # noqa: E731
    x = gen.decode(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    atk = LatentCounterfactualAttack(one_logit, gen)
    out = atk.generate(x, objective=ProbabilityThreshold(), optimizer="l2", lr=0.05, max_steps=500)
    p0 = torch.sigmoid(out.original_predictions[:, 0])
    p1 = torch.sigmoid(out.predictions[:, 0])
    assert out.success.all()
    for a, b in zip(p0.tolist(), p1.tolist()):
        assert (b >= 0.75) if a < 0.5 else (b <= 0.25)


def test_regression_objective_freezes_on_success():
    A, _, gen, _ = linear_world()
    reg = lambda x: x.flatten(1).sum(1)  # noqa: E731
    x = gen.decode(torch.tensor([[0.1, 0.1], [0.2, -0.3]]))
    out = LatentCounterfactualAttack(reg, gen).generate(
        x, target=torch.tensor([0.9, 0.6]), objective=RegressionTarget(0.05), optimizer="l2", lr=0.01, max_steps=2000
    )
    assert out.success.all()
    assert ((out.predictions - out.goals).abs() <= 0.05).all()
    # frozen the first step it was within tolerance: one step earlier it was not
    assert ((out.predictions - out.goals).abs() > 0.04).all()


def test_radius_keeps_latents_in_the_ball(shipped, mnist_test):
    clf, _, gen = shipped
    x, y = mnist_test
    atk = LatentCounterfactualAttack(clf, gen)
    out = atk.generate(x[:8], target=(y[:8] + 1) % 10, radius=1.0, max_steps=30)
    d = (out.latents.free - out.original_latents.free).norm(dim=1)
    assert (d <= 1.0 + 1e-4).all()


class _GradientDescent(LatentOptimizer):
    def step(self, z, grad, state, t):
        return z - self.lr * grad


def test_distance_penalty_gives_the_ridge_solution():
    """Regressor r(D(z)) = a . z on a linear decoder: with the penalty, plain gradient descent on
    (a . z - y)^2 + lam ||z - z0||^2 settles at z0 + a (y - a . z0) / (||a||^2 + lam), short of the target."""
    A, _, gen, _ = linear_world()
    w = torch.tensor([1.0, -0.5, 0.25, 0.0])
    a = A.T @ w
    x = gen.decode(torch.tensor([[0.5, -0.2], [-0.3, 0.4]]))
    z0 = gen.encode(x).free
    atk = LatentCounterfactualAttack(lambda img: img.flatten(1) @ w[:, None], gen)
    kw = dict(target=0.9, objective=RegressionTarget(tolerance=1e-3), optimizer=_GradientDescent(0.2), max_steps=300)
    lam = 0.5
    pen = atk.generate(x, distance_penalty=lam, **kw)
    want = z0 + (0.9 - z0 @ a)[:, None] * a / (a @ a + lam)
    assert torch.allclose(pen.latents.free, want, atol=1e-5)
    assert not pen.success.any() and (pen.n_steps == 300).all()
    free = atk.generate(x, **kw)  # without it the same search reaches the target
    assert free.success.all() and (free.predictions[:, 0] - 0.9).abs().max() <= 1e-3


def test_skip_zero_grad():
    _, _, gen, _ = linear_world()
    flat = lambda x: torch.zeros(x.shape[0], 2) + x.sum() * 0  # noqa: E731  gradient exactly zero
    out = LatentCounterfactualAttack(flat, gen).generate(gen.decode(torch.zeros(2, 2)), target=1,
                                                       skip_zero_grad=True, max_steps=50)
    assert out.n_steps.tolist() == [0, 0] and not out.success.any()


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(target=3), ValueError, r"`target` must be class indices in \[0, 2\]"),
        (dict(target=[0, 1]), ValueError, "one entry per example"),
        (dict(target=torch.zeros(6)), TypeError, "integer class indices"),
        (dict(target=None), ValueError, "`target` is required"),
        (dict(target=1, max_steps=-1), ValueError, "`max_steps`"),
        (dict(target=1, max_steps=2.5), TypeError, "`max_steps`"),
        (dict(target=1, lr=-1.0), ValueError, "`lr`"),
        (dict(target=1, optimizer="rmsprop"), ValueError, "`optimizer`"),
        (dict(target=1, objective="hinge"), ValueError, "`objective`"),
        (dict(target=1, source="x"), ValueError, "`source`"),
        (dict(target=1, start="zeros"), ValueError, "`start`"),
        (dict(target=1, internal_batch_size=0), ValueError, "`internal_batch_size`"),
    ],
)
def test_bad_arguments(tiny, kwargs, exc, match):
    _, clf, gen, x = tiny
    with pytest.raises(exc, match=match):
        LatentCounterfactualAttack(clf, gen).generate(x, **kwargs)


@pytest.mark.parametrize(
    "images, exc, match",
    [
        (torch.rand(6, 8, 8), ValueError, r"\(N, C, H, W\)"),
        (torch.rand(6, 3, 8, 8), ValueError, "C == 1"),
        (torch.rand(6, 1, 8, 8).double().long(), TypeError, "floating-point"),
        (torch.full((6, 1, 8, 8), float("nan")), ValueError, "NaN"),
        ("images", TypeError, "`inputs` must be a torch.Tensor"),
    ],
)
def test_bad_images(tiny, images, exc, match):
    _, clf, gen, _ = tiny
    with pytest.raises(exc, match=match):
        LatentCounterfactualAttack(clf, gen).attribute(images, target=1)


def test_bad_constructor():
    _, _, gen, model = linear_world()
    with pytest.raises(TypeError, match="`generator` must be a captum_cfx"):
        LatentCounterfactualAttack(model, torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="`forward_func` must be callable"):
        LatentCounterfactualAttack("model", gen)


def test_objective_bad_settings():
    with pytest.raises(ValueError, match="`threshold`"):
        TargetClass(1.5)
    with pytest.raises(ValueError, match="`margin`"):
        LogitMargin(-1)
    with pytest.raises(ValueError, match=r"`up` must be in \(0.5, 1\); got 0.4"):
        ProbabilityThreshold(up=0.4)
    with pytest.raises(ValueError, match="`tolerance`"):
        RegressionTarget(0)
    with pytest.raises(ValueError, match="NaN"):
        RegressionTarget().prepare(torch.zeros(2), torch.tensor([0.5, float("nan")]))
    with pytest.warns(UserWarning, match="outside"):
        RegressionTarget().prepare(torch.zeros(2), 1.5)
    g = RegressionTarget(mode="mirror").prepare(torch.tensor([0.2, 0.7]), None)
    assert torch.allclose(g, torch.tensor([0.7, 0.2]))
    g = RegressionTarget(mode="relative").prepare(torch.tensor([0.2, 0.5]), 0.3)
    assert torch.allclose(g, torch.tensor([0.5, 0.8]))


# ----------------------------------------------------------------- Captum drop-in
def test_tuple_inputs_and_additional_args(tiny):
    _, clf, gen, x = tiny
    scale = torch.ones(6, 1)

    def model(img, extra, s):
        return clf(img) * s + extra.sum() * 0

    atk = LatentCounterfactualAttack(model, gen)
    other = torch.rand(6, 2)
    maps = atk.attribute((x, other), target=[0, 1, 2, 0, 1, 2], additional_forward_args=(scale,), max_steps=5)
    assert isinstance(maps, tuple) and maps[0].shape == x.shape and torch.equal(maps[1], torch.zeros_like(other))
    pert = atk.perturb((x, other), target=1, additional_forward_args=(scale,), max_steps=5)
    assert pert[0].shape == x.shape and pert[1] is other


def test_noise_tunnel_and_visualization(shipped, mnist_test):
    clf, _, gen = shipped
    x, y = mnist_test
    atk = LatentCounterfactualAttack(clf, gen)
    tgt = (y[:3] + 1) % 10
    with torch.no_grad():
        nt = NoiseTunnel(atk).attribute(x[:3], nt_type="smoothgrad", nt_samples=2, stdevs=0.02, target=tgt,
                                        max_steps=40)
    assert nt.shape == x[:3].shape and torch.isfinite(nt).all() and nt.abs().sum() > 0
    maps = atk.attribute(x[:1], target=tgt[:1], max_steps=40)
    fig, _ = visualize_image_attr(maps[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy(),
                                  method="heat_map", sign="all", use_pyplot=False)
    assert fig is not None
    # an all-zero map (no step needed) must not crash our plotting helper
    from captum_cfx.visualization import plot_attribution

    fig = plot_attribution(torch.zeros(1, 28, 28), x[0])
    assert fig is not None


def test_sensitivity_and_infidelity(shipped, mnist_test):
    """Captum's metrics on our maps give the figures computed by hand, one example at a time: Captum expands the
    batch (each example repeated per perturbation, targets with it), and each example's search is its own."""
    clf, _, gen = shipped
    x, y = mnist_test
    x, tgt = x[:2], (y[:2] + 1) % 10
    atk = LatentCounterfactualAttack(clf, gen)
    n = 2
    ramp = torch.linspace(-0.01, 0.01, x[0].numel()).view(x.shape[1:])

    def nudge(inputs):  # row j of Captum's expanded batch is example j // n, perturbation j % n
        k = torch.arange(len(inputs)) % n
        return inputs + torch.where(k == 0, 1.0, -0.5).view(-1, 1, 1, 1) * ramp

    sens = sensitivity_max(atk.attribute, x, perturb_func=nudge, target=tgt, n_perturb_samples=n, max_steps=30)
    want = []
    for i in range(2):
        a = atk.attribute(x[i : i + 1], target=tgt[i : i + 1], max_steps=30)
        moved = [atk.attribute(x[i : i + 1] + c * ramp, target=tgt[i : i + 1], max_steps=30) for c in (1.0, -0.5)]
        want.append(max(float((m - a).norm() / a.norm()) for m in moved))
    assert sens.tolist() == pytest.approx(want, rel=1e-4) and min(want) > 0

    maps = atk.attribute(x, target=tgt, max_steps=30)
    gen_ = torch.Generator().manual_seed(0)
    noises = []

    def perturb_fn(inputs):
        noise = torch.randn(inputs.shape, generator=gen_) * 0.01
        noises.append(noise)
        return noise, inputs - noise

    inf = infidelity(clf, perturb_fn, x, maps, target=tgt, n_perturb_samples=4)
    noise = noises[0].view(2, 4, *x.shape[1:])  # rows: example-major, as Captum expands them
    with torch.no_grad():
        fx = clf(x).gather(1, tgt[:, None])
        f_moved = clf((x[:, None] - noise).flatten(0, 1)).view(2, 4, -1).gather(2, tgt[:, None, None].expand(2, 4, 1))
    dot = (noise * maps[:, None]).flatten(2).sum(2)
    assert inf.tolist() == pytest.approx(((dot - (fx - f_moved[..., 0])) ** 2).mean(1).tolist(), rel=1e-3)


def test_attack_comparator_and_min_param(shipped, mnist_test):
    clf, _, gen = shipped
    x, y = mnist_test
    atk = LatentCounterfactualAttack(clf, gen)

    def accuracy(out, target):
        return (out.argmax(1) == target).float().mean()

    comp = AttackComparator(forward_func=clf, metric=accuracy)
    comp.add_attack(atk, "latent attack", attack_kwargs={"target": (y[:4] + 1) % 10, "max_steps": 100})
    comp.add_attack(PGD(clf, lower_bound=0, upper_bound=1), "PGD",
                    attack_kwargs={"radius": 0.01, "step_num": 2, "step_size": 0.005},
                    additional_attack_arg_names=["target"])
    res = comp.evaluate(x[:4], target=y[:4])
    assert res["latent attack"]["mean"].item() < res["Original"].item()
    # the smallest number of steps that makes the model wrong on this digit
    mpp = MinParamPerturbation(forward_func=clf, attack=atk, arg_name="max_steps", arg_min=0, arg_max=64,
                               arg_step=1, mode="binary")
    _, steps = mpp.evaluate(x[:1], target=y[:1], attack_kwargs={"target": (y[:1] + 1) % 10, "margin": 0.0})
    out = atk.generate(x[:1], target=(y[:1] + 1) % 10, margin=0.0, max_steps=64)
    assert steps is not None and 0 < steps <= int(out.n_steps[0])
    assert not math.isnan(float(steps))
