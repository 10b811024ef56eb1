"""LatentIntegratedGradients: exact answers in a linear world, completeness, Captum interoperability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import NoiseTunnel
from captum.attr._utils.visualization import visualize_image_attr
from captum.metrics import sensitivity_max

from captum_cfx import GlobalCounterfactualDirections, LatentIntegratedGradients
from captum_cfx.attr import LatentIGOutput
from captum_cfx.zoo import mnist_distance
from tests.conftest import linear_world


def test_linear_world_attributions_are_exact():
    """Linear decoder + linear model: the decoded path is straight, every method gives W_t * (x - x_b)."""
    A, W, gen, model = linear_world()
    z = torch.tensor([[0.4, -0.3], [1.0, 0.5]])
    zb = torch.tensor([[-0.2, 0.6], [0.0, 0.0]])
    x = (z @ A.T).view(2, 1, 2, 2)
    lig = LatentIntegratedGradients(model, gen)
    expected = W[0].view(1, 1, 2, 2) * ((z - zb) @ A.T).view(2, 1, 2, 2)
    for method in ("path", "straight"):
        for rule in ("trapezoid", "left"):
            attr, delta = lig.attribute(x, target=0, baseline=zb, n_steps=4, method=method, rule=rule,
                                        return_convergence_delta=True)
            torch.testing.assert_close(attr, expected, atol=1e-5, rtol=0)
            assert float(delta.abs().max()) < 1e-5
    fd = lig.explain(x, target=0, baseline=zb, n_steps=4, method="finite-difference")
    assert float(fd.convergence_delta.abs().max()) < 1e-5
    torch.testing.assert_close(fd.attributions.flatten(1).sum(1), expected.flatten(1).sum(1), atol=1e-5, rtol=0)


def test_user_path_is_used_as_given():
    A, W, gen, model = linear_world()
    t = torch.linspace(0, 1, 5).view(1, 5, 1)
    path = torch.tensor([[0.0, 1.0]]) + t * torch.tensor([[1.0, -1.0]])  # (1, 5, 2)
    x = (path[:, -1] @ A.T).view(1, 1, 2, 2)
    out = LatentIntegratedGradients(model, gen).explain(x, target=1, path=path)
    torch.testing.assert_close(out.baseline_latents, path[:, 0])
    assert float(out.convergence_delta.abs().max()) < 1e-5


@pytest.fixture(scope="module")
def shipped_lig(shipped, mnist_test):
    clf, _, gen = shipped
    x, y = mnist_test
    return LatentIntegratedGradients(clf, gen), x[:400:100], y[:400:100]


def test_completeness_error_shrinks_with_steps(shipped_lig):
    lig, x, y = shipped_lig
    errs = {}
    for n in (16, 64, 256):
        out = lig.explain(x, target=y, n_steps=n)
        assert isinstance(out, LatentIGOutput)
        errs[n] = float(out.relative_error.mean())
    assert errs[16] > errs[64] > errs[256]
    assert errs[64] <= 0.01
    straight = float(lig.explain(x, target=y, n_steps=64, method="straight").relative_error.mean())
    assert straight > errs[64]  # the reference's straight-line multiplier is not complete on a curved path


def test_walk_reaches_threshold_and_output_fields(shipped_lig):
    lig, x, y = shipped_lig
    out = lig.explain(x, target=y, n_steps=8, walk_steps=32)
    assert out.attributions.shape == x.shape
    assert out.baseline_images.shape == x.shape and out.reconstructions.shape == x.shape
    probs = torch.softmax(lig.forward_func(out.baseline_images), 1).gather(1, y.view(-1, 1))[:, 0]
    assert bool((probs[out.baseline_found] < 0.01).all())
    assert out.n_renders == 4 + 4 * 32 + 4 * 9


def test_internal_batch_size_and_tuple_inputs(shipped_lig):
    lig, x, y = shipped_lig
    a = lig.attribute(x, target=y, n_steps=8)
    b = lig.attribute(x, target=y, n_steps=8, internal_batch_size=5)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    tup = lig.attribute((x,), target=y, n_steps=8)
    assert isinstance(tup, tuple) and len(tup) == 1
    torch.testing.assert_close(tup[0], a)


def test_gcd_direction_drives_the_walk(shipped, mnist_test):
    clf, _, gen = shipped
    x, y = mnist_test
    eights = x[y == 8]
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), n_hessian=0,
                                         distance=mnist_distance()).fit(eights[1:2])
    lig = LatentIntegratedGradients(clf, gen)
    out = lig.explain(eights[2:5], target=8, direction=gcd, n_steps=32)
    assert out.attributions.shape == (3, 1, 28, 28)
    assert float(out.relative_error.max()) < 0.05


@pytest.mark.filterwarnings("ignore:.*walks did not reach")
def test_captum_visualization_noise_tunnel_and_sensitivity(shipped_lig):
    lig, x, y = shipped_lig
    d = torch.randn(32, generator=torch.Generator().manual_seed(0))
    attr = lig.attribute(x[:2], target=y[:2], n_steps=8, baseline=torch.zeros(32))
    fig, _ = visualize_image_attr(attr[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy(),
                                  method="blended_heat_map", sign="all", use_pyplot=False)
    assert fig is not None
    nt = NoiseTunnel(lig)
    with pytest.raises(ValueError, match="range_tolerance"), torch.no_grad():  # noise leaves [0, 1]: refused...
        nt.attribute(x[:2], nt_type="smoothgrad", nt_samples=2, stdevs=0.05, target=y[:2], n_steps=8, direction=d)
    lig.generator.range_tolerance = 0.5  # ... unless allowed explicitly
    try:
        with torch.no_grad():
            smooth = nt.attribute(x[:2], nt_type="smoothgrad", nt_samples=2, stdevs=0.05, target=y[:2], n_steps=8,
                                  direction=d)
    finally:
        del lig.generator.range_tolerance
    assert smooth.shape == x[:2].shape and np.isfinite(smooth.numpy()).all()
    with torch.no_grad():
        sens = sensitivity_max(lig.attribute, x[:2], target=y[:2], n_steps=8, baseline=torch.zeros(32),
                               n_perturb_samples=2, perturb_radius=0.02)
    assert sens.shape == (2,) and bool(torch.isfinite(sens).all())


def test_errors(shipped_lig, tiny):
    lig, x, y = shipped_lig
    with pytest.raises(ValueError, match="`method` must be"):
        lig.attribute(x, target=y, method="riemann")
    with pytest.raises(ValueError, match="`rule` must be"):
        lig.attribute(x, target=y, rule="simpson")
    with pytest.raises(ValueError, match="`threshold` must be"):
        lig.attribute(x, target=y, threshold=1.5)
    with pytest.raises(ValueError, match="at most one of"):
        lig.attribute(x, target=y, direction=torch.ones(32), baseline=torch.zeros(32))
    with pytest.raises(ValueError, match="`baseline` must be a latent of shape"):
        lig.attribute(x, target=y, baseline=torch.zeros(5))
    with pytest.raises(ValueError, match="`path` must have shape"):
        lig.attribute(x, target=y, path=torch.zeros(4, 1, 32))
    with pytest.raises(ValueError, match="`direction` must have shape"):
        lig.attribute(x, target=y, direction=torch.ones(7))
    with pytest.raises(TypeError, match="`direction` must be a tensor"):
        lig.attribute(x, target=y, direction="best")
    with pytest.raises(ValueError, match="`target` is required"):
        lig.attribute(x)
    with pytest.raises(ValueError, match="`n_steps` must be > 0"):
        lig.attribute(x, target=y, n_steps=0)
    with pytest.raises(TypeError, match="`generator` must be"):
        LatentIntegratedGradients(tiny[1], tiny[1])


def test_fixed_latent_parts_are_kept_along_the_path(tiny):
    from tests.test_global_directions import NoisyGenerator

    _, clf, _, x = tiny
    gen = NoisyGenerator()
    lig = LatentIntegratedGradients(clf, gen)
    out = lig.explain(x, target=1, baseline=torch.zeros(3), n_steps=64)
    torch.testing.assert_close(out.reconstructions, gen.decode(gen.encode(x)))
    assert float(out.relative_error.max()) < 0.01
