"""GANGenerator: batched optimisation-based inversion, W space, noise inputs, the shipped MNIST GAN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_cfx import GANGenerator, LatentCounterfactualAttack
from captum_cfx.generators import Latent, ProjectionOutput


class TinyMapping(nn.Module):
    def __init__(self, z_dim: int = 4, w_dim: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, w_dim), nn.LeakyReLU(0.2))

    def forward(self, z):
        return self.net(z)


class TinySynthesis(nn.Module):
    """w -> 8x8 images in [0, 1]; with ``noisy`` it takes a per-image noise input ``noise0`` (1, 8, 8)."""

    def __init__(self, w_dim: int = 6, noisy: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(w_dim, 64)
        self.noisy = noisy
        self.noise_strength = nn.Parameter(torch.tensor(0.5))

    def forward(self, w, noise0=None):
        h = self.fc(w).view(-1, 1, 8, 8)
        if self.noisy:
            h = h + self.noise_strength * noise0
        return torch.sigmoid(h)


class TinyStyleGAN(nn.Module):
    """StyleGAN convention: ``mapping``, ``synthesis`` and ``z_dim`` attributes."""

    def __init__(self, noisy: bool = False) -> None:
        super().__init__()
        self.z_dim = 4
        self.mapping = TinyMapping()
        self.synthesis = TinySynthesis(noisy=noisy)

    def forward(self, z):
        return self.synthesis(self.mapping(z))


def make(noisy: bool = False, **kw) -> GANGenerator:
    torch.manual_seed(0)
    opts = dict(image_shape=(1, 8, 8), feature_network=None, steps=150, lr=0.2, num_starts=8)
    if noisy:
        opts["noise_shapes"] = {"noise0": (1, 8, 8)}
    opts.update(kw)
    return GANGenerator(TinyStyleGAN(noisy), **opts).eval()


@pytest.fixture
def gan():
    return make()


def test_batched_inversion_shapes(gan):
    x = gan.decode(gan.sample(5, torch.Generator().manual_seed(1))).detach()
    out = gan.project(x)
    assert isinstance(out, ProjectionOutput) and len(out) == 5
    assert gan.latent_space == "w" and out.latent.free.shape == (5, 6)
    assert out.projections.shape == x.shape and out.error.shape == (5,) and out.n_steps.shape == (5,)
    assert set(out.latent.fixed) == {"projection_error", "projection_ok"}
    assert torch.equal(out.kept, torch.arange(5))
    # optimisation improves on the best start, and the reported error is that of the returned latent
    assert (out.error <= out.start_error + 1e-7).all() and out.error.mean() < out.start_error.mean()
    recon = gan.decode(out.latent)
    assert torch.allclose((recon - x).flatten(1).pow(2).mean(1), out.error, atol=1e-6)
    # encode is project's latent, and runs under no_grad (as the attack calls it)
    with torch.no_grad():
        lat = gan.encode(x)
    assert isinstance(lat, Latent) and torch.equal(lat.free, out.latent.free)


def test_determinism_under_generator(gan):
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    a = gan.project(x, generator=torch.Generator().manual_seed(7))
    b = gan.project(x, generator=torch.Generator().manual_seed(7))
    c = gan.project(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.latent.free, b.latent.free) and torch.equal(a.error, b.error)
    assert not torch.equal(a.latent.free, c.latent.free)
    # without a generator, encoding is seeded by `seed`: repeated calls agree, and no global RNG is used
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(gan.encode(x).free, gan.encode(x).free)
    assert torch.equal(torch.get_rng_state(), state)


def test_per_sample_early_stop():
    g = make(tol=0.5, patience=3, steps=200)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = g.project(x)
    assert (out.n_steps < 200).all() and (out.n_steps >= 3).all()
    assert (make(tol=0.0, steps=20).project(x).n_steps == 20).all()


def test_projection_error_flag_and_drop():
    g = make(error_threshold=0.01)
    on = g.decode(g.sample(3, torch.Generator().manual_seed(2))).detach()  # on the generator's manifold
    off = torch.zeros(2, 1, 8, 8)
    off[:, :, ::2] = 1.0  # stripes the tiny GAN cannot make
    out = g.project(torch.cat([on, off]))
    assert out.ok.tolist() == [True, True, True, False, False]
    assert (out.error[:3] < 0.01).all() and (out.error[3:] > 0.01).all()
    assert torch.equal(out.latent.fixed["projection_ok"], out.ok)
    dropped = g.project(torch.cat([on, off]), drop=True)
    assert dropped.kept.tolist() == [0, 1, 2] and len(dropped.latent) == 3 and dropped.ok.all()
    assert torch.allclose(dropped.latent.free, out.latent.free[:3])
    # without a threshold nothing is flagged
    assert make().project(off).ok.all()


@pytest.mark.parametrize("space", ["w", "z"])
def test_round_trip(space):
    g = make(latent_space=space, steps=300)
    lat = g.sample(4, torch.Generator().manual_seed(5))
    assert lat.free.shape == (4, 6 if space == "w" else 4)
    x = g.decode(lat).detach()
    back = g.encode(x)
    assert back.fixed["projection_error"].max() < 1e-3
    assert torch.allclose(g.decode(back), x, atol=0.05)


def test_w_start_is_around_the_mean_w():
    g = make(truncation=0.0)
    assert torch.equal(g.sample(3).free, torch.zeros(3, 6))  # standardised W: the mean is 0
    w = g.generator.mapping(torch.randn(4096, 4, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(g.w_mean, w.mean(0), atol=1e-5) and torch.allclose(g.w_std, w.std(0), atol=1e-5)
    raw = make(truncation=0.0, normalize=False)
    assert torch.allclose(raw.sample(3).free, g.w_mean.expand(3, -1))
    # both parametrisations render the same images; to_w maps one to the other
    lat = g.sample(2, torch.Generator().manual_seed(0))
    assert torch.allclose(g.decode(lat), raw.decode(g.to_w(lat)), atol=1e-6)


def test_noise_inputs_live_in_the_fixed_part():
    g = make(noisy=True)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    lat = g.encode(x, generator=torch.Generator().manual_seed(1))
    assert lat.fixed["noise0"].shape == (3, 1, 8, 8) and lat.fixed["noise0"].abs().sum() > 0
    assert not torch.allclose(g.decode(lat), g.decode(lat.free))  # a bare tensor decodes with zero noise
    assert torch.equal(g.decode(lat[1]), g.decode(lat)[1:2])
    assert torch.allclose(lat.fixed["projection_error"], (g.decode(lat) - x).flatten(1).pow(2).mean(1), atol=1e-6)


def test_separate_mapping_and_plain_generator():
    torch.manual_seed(0)
    mapping, synthesis = TinyMapping(), TinySynthesis()
    g = GANGenerator(synthesis, mapping=mapping, z_dim=4, image_shape=(1, 8, 8), feature_network=None, steps=5)
    assert g.latent_space == "w" and g.encode(torch.rand(2, 1, 8, 8)).free.shape == (2, 6)
    plain = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    gz = GANGenerator(plain, z_dim=3, image_shape=(1, 8, 8), feature_network=None, steps=5)
    assert gz.latent_space == "z" and gz.encode(torch.rand(2, 1, 8, 8)).free.shape == (2, 3)


def test_feature_network_term():
    feats = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    g = make(feature_network=feats, feature_weight=1.0, steps=30)
    out = g.project(torch.rand(2, 1, 8, 8))
    assert out.error.shape == (2,) and torch.isfinite(out.error).all()
    assert make().feature_network is None  # "auto" is off for non-MNIST shapes


def test_clear_errors():
    plain = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    with pytest.raises(ValueError, match="does not accept latents of the declared size"):
        GANGenerator(plain, z_dim=5, feature_network=None)
    with pytest.raises(ValueError, match="`z_dim` must be a positive int"):
        GANGenerator(plain, feature_network=None)
    with pytest.raises(ValueError, match="image_shape"):
        GANGenerator(plain, z_dim=3, image_shape=(1, 4, 4), feature_network=None)
    with pytest.raises(ValueError, match="needs a mapping network"):
        GANGenerator(plain, z_dim=3, latent_space="w", feature_network=None)
    with pytest.raises(ValueError, match="`latent_space` must be 'z' or 'w'"):
        GANGenerator(TinyStyleGAN(), latent_space="x", feature_network=None)
    with pytest.raises(ValueError, match="`optimizer` must be 'adam' or 'adamw'"):
        GANGenerator(TinyStyleGAN(), optimizer="sgd", feature_network=None)
    with pytest.raises(ValueError, match="`lr_schedule` must be 'cosine' or 'constant'"):
        GANGenerator(TinyStyleGAN(), lr_schedule="step", feature_network=None)
    with pytest.raises(ValueError, match="`num_starts` must be"):
        GANGenerator(TinyStyleGAN(), num_starts=0, feature_network=None)
    with pytest.raises(TypeError, match="`feature_network` must be callable"):
        GANGenerator(TinyStyleGAN(), feature_network=3)
    with pytest.raises(TypeError, match="`generator` must be a callable"):
        GANGenerator("G", z_dim=3)
    g = make(steps=1)
    with pytest.raises(ValueError, match=r"`latent` must have shape \(N, 6\)"):
        g.decode(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        g.project(torch.rand(1, 1, 8, 8), generator=0)
    with pytest.raises(TypeError, match="`normalize` must be a bool"):
        GANGenerator(TinyStyleGAN(), normalize=1, feature_network=None)
    with pytest.raises(TypeError, match="`drop` must be a bool"):
        g.project(torch.rand(1, 1, 8, 8), drop=1)
    with pytest.raises(ValueError, match="x"):
        g.encode(torch.rand(1, 3, 8, 8))


def test_attack_runs_unchanged_and_marks_failed_projections():
    g = make(error_threshold=0.01, steps=100)
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    on = g.decode(g.sample(2, torch.Generator().manual_seed(2))).detach()
    off = torch.zeros(1, 1, 8, 8)
    off[:, :, ::2] = 1.0
    out = LatentCounterfactualAttack(clf, g).generate(torch.cat([on, off]), objective="flip", max_steps=50,
                                                      internal_batch_size=2)
    assert out.counterfactuals.shape == (3, 1, 8, 8)
    assert out.projection_ok.tolist() == [True, True, False]
    assert out.latents.free.shape == (3, 6)


def test_shipped_mnist_gan(mnist_test):
    from captum_cfx.zoo import load_generator, load_pretrained

    gan = load_generator("mnist-gan")
    assert isinstance(gan, GANGenerator) and gan.latent_space == "w" and gan.feature_network is not None
    x, y = mnist_test
    idx = torch.arange(5, 1000, 100)  # one digit of each class (the split is class-sorted)
    lat = gan.encode(x[idx])
    clf = load_pretrained("mnist-classifier")
    with torch.no_grad():
        acc = (clf(gan.decode(lat)).argmax(1) == y[idx]).float().mean()
    assert acc >= 0.8
    assert lat.fixed["projection_error"].median() < 0.03 and lat.fixed["projection_ok"].float().mean() >= 0.8


def test_adamw_decays_towards_the_mean_w():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    plain = make(steps=60, tol=0.0).encode(x).free
    decayed = make(steps=60, tol=0.0, optimizer="adamw", weight_decay=5.0).encode(x).free
    assert decayed.norm(dim=1).mean() < plain.norm(dim=1).mean()  # standardised W: the centre is 0
