"""GlobalCounterfactualDirections: exact answers in a linear world, render accounting, transfer, persistence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_cfx import GlobalCounterfactualDirections
from captum_cfx.attr import GlobalityResult, OracleFeatureDistance, TransferOutput
from captum_cfx.descriptors import NotFittedError
from captum_cfx.generators import Latent, LatentGenerator
from captum_cfx.zoo import mnist_distance
from tests.conftest import linear_world


def pixel_distance(images, reference):
    return (images - reference).pow(2).flatten(1).mean(1)


def _linear_gcd(**kw):
    A, W, gen, model = linear_world()
    gcd = GlobalCounterfactualDirections(model, gen, classes=(0, 1), distance=pixel_distance, **kw)
    return A, W, gen, model, gcd


def test_white_box_g_direction_is_the_exact_gradient_in_a_linear_world():
    A, W, gen, model, gcd = _linear_gcd(n_hessian=0, alpha_max=4.0, n_alphas=8)
    z0 = torch.tensor([[0.7, -0.2]])
    x0 = (z0 @ A.T).view(1, 1, 2, 2)
    gcd.fit(x0)
    w = (W[1] - W[0]) @ A  # d score / d z
    s = 1.0 if float(z0 @ w) > 0 else -1.0
    expected = -s * w / w.norm()
    assert gcd.source_sign_ == s
    assert gcd.direction_kinds_ == ["g(1,0)", "g(0.05,1)"]
    # x0 lies on the decoder's range, so the distance term has zero gradient: both g-directions agree
    torch.testing.assert_close(gcd.directions_[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(gcd.directions_[1], expected, atol=1e-5, rtol=0)
    # the line search flips exactly where the score changes sign: |score(z0)| / ||w||
    flip_at = abs(float(z0 @ w)) / float(w.norm())
    sc = gcd.scores_[gcd.best_index_]
    assert sc["flipped"] and flip_at <= sc["alpha"] < flip_at + 0.5 + 1e-6


def test_render_count_of_white_box_fit(tiny):
    _, clf, gen, x = tiny
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=2, n_alphas=5)
    gcd.fit(x[:1])
    k = 2 * (1 + 2)
    assert gcd.directions_.shape == (k, 3)
    torch.testing.assert_close(gcd.directions_.norm(dim=1), torch.ones(k))
    # source decode + (1 decode + 2 gradient passes) + (d decodes + 2 x d HVPs) + K line searches of n_alphas
    assert gcd.renders_ == 1 + (1 + 2) + (3 + 2 * 3) + k * 5
    assert len(gcd.scores_) == k and 0 <= gcd.best_index_ < k


def test_h_directions_descend_the_loss(tiny):
    _, clf, gen, x = tiny
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=3,
                                         loss_weights=[(1.0, 0.0)]).fit(x[:1])
    z = gcd.z0_.clone().requires_grad_(True)
    logits = clf(gen.decode(z))
    score = gcd.source_sign_ * (logits[:, 2] - logits[:, 0])
    (g,) = torch.autograd.grad(score.sum(), z)
    for k, d in zip(gcd.direction_kinds_, gcd.directions_):
        assert float(g[0] @ d) <= 1e-6, k
    h = gcd.directions_[1:]
    torch.testing.assert_close(h @ h.T, torch.eye(3), atol=1e-4, rtol=0)  # eigenvectors are orthonormal


def test_proxy_mode_spends_exactly_the_budget_and_is_reproducible(tiny):
    _, clf, gen, x = tiny
    kw = dict(classes=(0, 2), distance=pixel_distance, mode="proxy", render_budget=300, n_rounds=2,
              n_hessian=1, n_alphas=10, proxy_hidden=16, proxy_epochs=20)
    a = GlobalCounterfactualDirections(clf, gen, **kw).fit(x[:1], generator=torch.Generator().manual_seed(3))
    b = GlobalCounterfactualDirections(clf, gen, **kw).fit(x[:1], generator=torch.Generator().manual_seed(3))
    assert a.renders_ == 300
    torch.testing.assert_close(a.directions_, b.directions_)
    assert a.direction_kinds_ == ["g(1,0)", "h1(1,0)", "g(0.05,1)", "h1(0.05,1)"]


def test_transfer_flips_sign_for_the_other_class_in_a_linear_world():
    A, W, gen, model, gcd = _linear_gcd(n_hessian=0, alpha_max=6.0, n_alphas=24)
    w = (W[1] - W[0]) @ A
    z0 = 0.5 * w / w.norm()  # positive side
    gcd.fit((z0 @ A.T).view(1, 1, 2, 2))
    zs = torch.stack([0.8 * w / w.norm(), -0.9 * w / w.norm(), 1.5 * w / w.norm()])
    imgs = (zs @ A.T).view(3, 1, 2, 2)
    out = gcd.transfer(imgs)
    assert isinstance(out, TransferOutput)
    assert out.signs.tolist() == [1.0, -1.0, 1.0]
    assert out.success.all()
    assert out.original_classes.tolist() == [1, 0, 1] and out.classes.tolist() == [0, 1, 0]
    # the smallest flipping alpha on the grid is just past each image's distance to the boundary
    for i, r in enumerate([0.8, 0.9, 1.5]):
        assert r <= float(out.alphas[i]) < r + 0.25 + 1e-6
    res = gcd.globality(imgs)
    assert isinstance(res, GlobalityResult)
    assert float(res.flip_rate[0]) == 0.0 and float(res.flip_rate[-1]) == 1.0
    assert res.plot() is not None


def test_attribute_is_counterfactual_minus_reconstruction(tiny):
    _, clf, gen, x = tiny
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=0).fit(x[:1])
    maps = gcd.attribute(x, alpha=1.0)
    assert maps.shape == x.shape
    out = gcd.transfer(x, [1.0])
    torch.testing.assert_close(maps, out.counterfactuals - out.reconstructions)
    # a later tuple member is a model input: it decides each image's side, so the direction's sign
    shifted = GlobalCounterfactualDirections(lambda im, s: clf(im) + s, gen, classes=(0, 2), distance=pixel_distance,
                                             n_hessian=0).fit(x[:1], additional_forward_args=torch.zeros(1, 3))
    side = torch.tensor([[0.0, 0.0, 50.0]]).repeat(6, 1)
    tup = shifted.attribute((x, side), alpha=1.0)
    assert isinstance(tup, tuple) and tup[0].shape == x.shape and tup[1].shape == side.shape and tup[1].abs().sum() == 0
    torch.testing.assert_close(tup[0], shifted.attribute(x, additional_forward_args=side, alpha=1.0))
    assert not torch.allclose(tup[0], shifted.attribute((x, -side), alpha=1.0)[0])


def test_save_and_load_round_trip(tiny, tmp_path):
    _, clf, gen, x = tiny
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=1).fit(x[:1])
    gcd.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    back = GlobalCounterfactualDirections.from_pretrained(tmp_path, clf, gen, distance=pixel_distance)
    torch.testing.assert_close(back.directions_, gcd.directions_)
    assert back.direction_kinds_ == gcd.direction_kinds_ and back.best_index_ == gcd.best_index_
    assert back.renders_ == gcd.renders_
    torch.testing.assert_close(back.attribute(x), gcd.attribute(x))


def test_diversity_matrix(tiny):
    _, clf, gen, x = tiny
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=2).fit(x[:1])
    d = gcd.diversity(feature_fn=lambda im: im.flatten(1))
    assert d.shape == (4, 4)
    torch.testing.assert_close(d, d.T)
    assert float(d.diagonal().abs().max()) < 1e-4


def test_errors(tiny):
    _, clf, gen, x = tiny
    with pytest.raises(ValueError, match="`classes` must be"):
        GlobalCounterfactualDirections(clf, gen, classes=(1, 1))
    with pytest.raises(ValueError, match="`mode` must be"):
        GlobalCounterfactualDirections(clf, gen, classes=(0, 1), mode="grey-box")
    with pytest.raises(TypeError, match="`distance` must be callable"):
        GlobalCounterfactualDirections(clf, gen, classes=(0, 1), distance=3)
    with pytest.raises(TypeError, match="`generator` must be"):
        GlobalCounterfactualDirections(clf, clf, classes=(0, 1))
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 1), distance=pixel_distance, n_hessian=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        gcd.transfer(x)
    with pytest.raises(ValueError, match="`source` must hold exactly one image"):
        gcd.fit(x[:2])
    # no shipped network by default: the generic default distance is the mean squared pixel difference
    default = GlobalCounterfactualDirections(clf, gen, classes=(0, 1), n_hessian=0).fit(x[:1])
    explicit = GlobalCounterfactualDirections(clf, gen, classes=(0, 1), n_hessian=0,
                                              distance=lambda a, b: (a - b).pow(2).flatten(1).mean(1)).fit(x[:1])
    assert [s["distance"] for s in default.scores_] == [s["distance"] for s in explicit.scores_]
    assert default.scores_[0]["distance"] > 0
    with pytest.raises(TypeError, match="`features` must be callable"):
        OracleFeatureDistance(None)
    with pytest.raises(ValueError, match="K > 5"):
        GlobalCounterfactualDirections(clf, gen, classes=(0, 5), distance=pixel_distance).fit(x[:1])
    gcd.fit(x[:1])
    with pytest.raises(ValueError, match="`direction` must be 'best'"):
        gcd.transfer(x, direction=7)
    with pytest.raises(ValueError, match="`alphas` must be"):
        gcd.transfer(x, alphas=[-1.0])
    with pytest.raises(ValueError, match="`target` must hold classes"):
        gcd.transfer(x, target=2)
    with pytest.raises(TypeError, match="`oracle` must be callable"):
        gcd.globality(x, oracle="mnist-oracle")
    with pytest.raises(ValueError, match="`internal_batch_size`"):
        gcd.globality(x, internal_batch_size=0)
    with pytest.raises(ValueError, match="must be a folder"):
        GlobalCounterfactualDirections.from_pretrained("/nonexistent", clf, gen)


def test_shipped_mnist_direction_is_global(shipped, mnist_test):
    """One 8 (the second test 8) gives a direction that turns most other test 8s into 3s; random ones do not."""
    clf, oracle, gen = shipped
    x, y = mnist_test
    eights = x[y == 8]
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(3, 8), n_hessian=0,
                                         distance=mnist_distance()).fit(eights[1:2])
    assert gcd.renders_ <= 500
    alpha = 4.74  # median ||z0|| of the shipped VAE's MNIST codes
    res = gcd.globality(torch.cat([eights[:1], eights[2:]]), alphas=[alpha], oracle=oracle)
    assert float(res.flip_rate[0]) >= 0.8
    assert float(res.oracle_agreement[0]) >= 0.7
    rnd = torch.randn(32, generator=torch.Generator().manual_seed(0))
    ctrl = gcd.globality(eights[2:], alphas=[alpha], direction=rnd)
    assert float(ctrl.flip_rate[0]) <= 0.2


class NoisyGenerator(LatentGenerator):
    """A generator with a fixed latent part (like a diffusion autoencoder's x_T): image = sigmoid(A z + noise)."""

    def __init__(self) -> None:
        super().__init__(input_range=(0.0, 1.0), image_shape=(1, 8, 8))
        torch.manual_seed(5)
        self.dec = nn.Linear(3, 64)

    def encode(self, x):
        return Latent(x.flatten(1)[:, :3] - 0.5, {"noise": 0.1 * (x.flatten(1) - 0.5)})

    def decode(self, latent):
        latent = self._as_latent(latent)
        noise = latent.fixed.get("noise", torch.zeros(latent.free.shape[0], 64))
        return torch.sigmoid(self.dec(latent.free) + noise).view(-1, 1, 8, 8)


def test_fixed_latent_parts_travel_with_each_image(tiny):
    _, clf, _, x = tiny
    gen = NoisyGenerator()
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=1).fit(x[:1])
    out = gcd.transfer(x, [0.0])
    torch.testing.assert_close(out.counterfactuals, gen.decode(gen.encode(x)))  # alpha 0 = each own reconstruction
    maps = gcd.attribute(x, alpha=0.5)
    assert maps.abs().sum() > 0
    for i in (0, 3):  # each image moves with its own fixed part, whatever the batch around it
        torch.testing.assert_close(maps[i : i + 1], gcd.attribute(x[i : i + 1], alpha=0.5))


def test_finite_difference_hessians_match_exact_ones(tiny):
    _, clf, gen, x = tiny
    kw = dict(classes=(0, 2), distance=pixel_distance, n_hessian=2)
    exact = GlobalCounterfactualDirections(clf, gen, hvp="exact", **kw).fit(x[:1])
    fd = GlobalCounterfactualDirections(clf, gen, hvp="finite-difference", **kw).fit(x[:1])
    assert exact.direction_kinds_ == fd.direction_kinds_
    cos = (exact.directions_ * fd.directions_).sum(1)
    assert float(cos.min()) > 0.99
    with pytest.raises(ValueError, match="`hvp` must be"):
        GlobalCounterfactualDirections(clf, gen, hvp="newton", **kw)


def test_runs_on_a_tiny_diffusion_autoencoder():
    """z_sem is free and x_T fixed; diffusers' CPU attention has no double backward, so HVPs use differences."""
    from diffusers import DDIMScheduler, UNet2DModel

    from captum_cfx import LatentIntegratedGradients
    from captum_cfx.generators import DiffusionAutoencoder, SemanticEncoder
    from tests.conftest import TinyClassifier

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), class_embed_type="identity")
    gen = DiffusionAutoencoder(SemanticEncoder(1, 4, 8), unet, DDIMScheduler(num_train_timesteps=100), z_dim=4,
                               num_inference_steps=2).eval()
    clf = TinyClassifier().eval()
    x = torch.rand(3, 1, 8, 8)
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=1,
                                         hvp="finite-difference", n_alphas=4).fit(x[:1])
    assert gcd.directions_.shape == (4, 4)
    out = gcd.transfer(x, [0.0, 1.0])
    torch.testing.assert_close(gcd.transfer(x, [0.0]).counterfactuals, out.reconstructions, atol=1e-5, rtol=0)
    lig = LatentIntegratedGradients(clf, gen).explain(x, target=1, baseline=torch.zeros(4), n_steps=8)
    assert float(lig.relative_error.max()) < 0.01
