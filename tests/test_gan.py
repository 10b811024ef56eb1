"""GANGenerator: batched optimisation-based inversion, W space, noise inputs, the shipped MNIST GAN."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from captum_cfx import (
    CounterfactualDescriptorAttribution,
    CounterfactualSufficiencyNecessity,
    GANGenerator,
    LatentCounterfactualAttack,
    LatentProbes,
    LinearDirections,
)
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


class TinyBNSynthesis(nn.Module):
    """w -> 8x8 images through linear, transposed-conv and conv layers with batch norms (to fold)."""

    def __init__(self, w_dim: int = 6) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(w_dim, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.net = nn.Sequential(nn.ConvTranspose2d(2, 4, 4, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, w):
        return self.net(self.fc(w).view(-1, 2, 4, 4))


def randomise_batchnorm(module: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters, so folding them matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
    return module.eval()


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
    assert out.latent.fixed == {} and set(out.latent.diagnostics) == {"projection_error", "projection_ok"}
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
    assert torch.equal(out.latent.diagnostics["projection_ok"], out.ok)
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
    assert back.diagnostics["projection_error"].max() < 1e-3
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
    # row 1 alone decodes as row 1 of the batch (a batch of one may take another matmul kernel: 1e-6)
    torch.testing.assert_close(g.decode(lat[1]), g.decode(lat)[1:2], rtol=0, atol=1e-6)
    assert torch.allclose(lat.diagnostics["projection_error"], (g.decode(lat) - x).flatten(1).pow(2).mean(1), atol=1e-6)


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
    assert GANGenerator(TinyStyleGAN(), image_shape=(1, 8, 8)).feature_network is None  # pixel loss by default
    # the reference's setting: AdamW, a fixed number of steps, a purely perceptual loss
    ref = make(feature_network=feats, feature_weight=1.0, pixel_weight=0.0, optimizer="adamw", weight_decay=0.01,
               tol=0.0, steps=25)
    out = ref.project(torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)))
    assert (out.n_steps == 25).all() and torch.isfinite(out.error).all() and (out.error > 0).all()
    with pytest.raises(ValueError, match="`pixel_weight=0` needs a feature term"):
        make(pixel_weight=0.0)


def test_clear_errors():
    plain = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    with pytest.raises(ValueError, match="does not accept latents of the declared size"):
        GANGenerator(plain, z_dim=5, feature_network=None)
    with pytest.raises(ValueError, match="`z_dim` must be a positive int"):
        GANGenerator(plain, feature_network=None)
    with pytest.raises(ValueError, match="`mapping` does not accept latents of size z_dim=5"):
        GANGenerator(TinySynthesis(), mapping=TinyMapping(z_dim=4), z_dim=5, feature_network=None)
    with pytest.raises(ValueError, match=r"synthesis network does not accept latents of the declared size \(7,\)"):
        GANGenerator(TinySynthesis(w_dim=6), mapping=TinyMapping(z_dim=4, w_dim=7), z_dim=4, feature_network=None)
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
    with pytest.raises(TypeError, match="`feature_network` must be callable"):
        GANGenerator(TinyStyleGAN(), feature_network="auto")  # no shipped default in the generic class
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
    with pytest.raises(TypeError, match="`fuse` must be a bool"):
        GANGenerator(TinyStyleGAN(), fuse=1, feature_network=None)
    with pytest.raises(ValueError, match="`chunk_size` must be"):
        GANGenerator(TinyStyleGAN(), chunk_size=0, feature_network=None)
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
    diag = lat.diagnostics
    assert diag["projection_error"].median() < 0.03 and diag["projection_ok"].float().mean() >= 0.8


def test_adamw_decays_towards_the_mean_w():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    plain = make(steps=60, tol=0.0).encode(x).free
    decayed = make(steps=60, tol=0.0, optimizer="adamw", weight_decay=5.0).encode(x).free
    assert decayed.norm(dim=1).mean() < plain.norm(dim=1).mean()  # standardised W: the centre is 0


# ---------------------------------------------------------------------- speed paths: same results
def make_bn(**kw) -> GANGenerator:
    """A tiny GAN whose synthesis and feature networks have batch norms (with non-trivial statistics)."""
    torch.manual_seed(0)
    G = TinyStyleGAN()
    G.synthesis = randomise_batchnorm(TinyBNSynthesis())
    feats = randomise_batchnorm(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                              nn.ReLU(), nn.Flatten(), nn.Linear(256, 5)))
    opts = dict(image_shape=(1, 8, 8), feature_network=feats, feature_weight=1.0, num_starts=4, steps=10, tol=0.0)
    opts.update(kw)
    return GANGenerator(G, **opts).eval()


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def test_fused_copies_compute_the_same_inversion():
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fused, plain = make_bn(), make_bn(fuse=False)
    a, b = fused.project(x), plain.project(x)
    torch.testing.assert_close(a.start_error, b.start_error, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.latent.free, b.latent.free, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.error, b.error, atol=1e-6, rtol=0)
    cpu = torch.device("cpu")
    nets = fused._nets(cpu)
    # the copies have their batch norms folded, the wrapped networks keep theirs and are what decode runs
    assert isinstance(nets.synthesis, nn.Module) and not _has_batchnorm(nets.synthesis)
    assert _has_batchnorm(fused.synthesis_fn) and nets.synthesis is not fused.synthesis_fn
    assert nets.features is not fused.feature_network
    w = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(nets.synthesis(w), fused.synthesis_fn(w), atol=1e-6, rtol=0)
        torch.testing.assert_close(nets.features(x), fused.feature_network(x), atol=1e-5, rtol=0)
    assert plain._nets(cpu).synthesis is plain.synthesis_fn  # fuse=False: the networks as they are
    # cached, and rebuilt when a parameter changes in place
    assert fused._nets(cpu) is nets
    with torch.no_grad():
        fused.synthesis_fn.fc[0].weight.mul_(2.0)
    rebuilt = fused._nets(cpu)
    assert rebuilt is not nets
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.synthesis(w), fused.synthesis_fn(w), atol=1e-6, rtol=0)
    # copies and pickles of the wrapper leave the cached copies out
    dup = copy.deepcopy(fused)
    assert dup._fused_cache is None and fused._fused_cache is not None
    assert pickle.loads(pickle.dumps(fused))._fused_cache is None  # the cache (with a closure) is not pickled
    torch.testing.assert_close(dup.project(x).latent.free, fused.project(x).latent.free)
    # networks with hooks are used as they are (a copy would not run the hook)
    hooked = make_bn()
    hooked.project(x[:1])  # builds and caches the fused copies; a hook registered afterwards still runs
    calls = []
    hooked.synthesis_fn.register_forward_hook(lambda *a: calls.append(1))
    assert hooked._nets(cpu).synthesis is hooked.synthesis_fn
    hooked.project(x[:1])
    assert calls


def test_chunking_does_not_change_the_result():
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    whole, chunked = make_bn(steps=20).project(x), make_bn(steps=20, chunk_size=2).project(x)
    torch.testing.assert_close(chunked.latent.free, whole.latent.free, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.error, whole.error, atol=1e-6, rtol=0)
    assert torch.equal(chunked.n_steps, whole.n_steps)


# ---------------------------------------------------------------------- B and F through the GAN, unchanged
def expressive_gan() -> GANGenerator:
    """The tiny GAN with a larger gain, so that its images vary enough to carry descriptors."""
    torch.manual_seed(0)
    G = TinyStyleGAN()
    with torch.no_grad():
        G.synthesis.fc.weight.mul_(8.0)
    return GANGenerator(G, image_shape=(1, 8, 8), feature_network=None, steps=100, lr=0.2, num_starts=8,
                        error_threshold=0.01).eval()


def image_descriptors(x: torch.Tensor) -> torch.Tensor:
    """brightness (continuous), top_heavy (binary), left_mass (continuous), measured on the images."""
    top, bottom = x[:, :, :4].flatten(1).mean(1), x[:, :, 4:].flatten(1).mean(1)
    return torch.stack([x.flatten(1).mean(1), (top > bottom).float(), x[..., :4].flatten(1).mean(1)], 1)


class Brightness(nn.Module):
    """A binary classifier that calls an image class 1 when it is brighter than ``threshold``."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        m = 40 * (x.flatten(1).mean(1) - self.threshold)
        return torch.stack([-m, m], 1)


@pytest.fixture(scope="module")
def gan_world():
    g = expressive_gan()
    aux = g.decode(g.sample(200, torch.Generator().manual_seed(10))).detach()
    threshold = float(aux.flatten(1).mean(1).median())
    off = torch.zeros(1, 1, 8, 8)
    off[:, :, ::2] = 1.0  # stripes the GAN cannot make: a failed projection
    x = torch.cat([g.decode(g.sample(8, torch.Generator().manual_seed(11))).detach(), off])
    return g, aux, Brightness(threshold), x


def test_descriptor_attribution_runs_on_the_gan_unchanged(gan_world):
    g, aux, clf, x = gan_world
    names = ["brightness", "top_heavy", "left_mass"]
    cda = CounterfactualDescriptorAttribution(clf, g).fit(aux, image_descriptors(aux), names)  # encodes by projection
    assert cda.probes_.kinds_ == ["continuous", "binary", "continuous"]
    assert min(cda.probes_.scores_.values()) > 0.8  # the projected latents carry the descriptors
    out = cda.explain(x, objective="flip", max_steps=100)
    cf = out.counterfactuals
    assert out.deltas.shape == (9, 3) and torch.isfinite(out.deltas).all() and out.descriptor_names == names
    assert cf.projection_ok.tolist() == [True] * 8 + [False]  # the failed projection is marked
    assert cf.original_latents.free.shape == (9, 6) and cf.success.all()
    # the deltas are the probes' change between the projected and the counterfactual latents
    torch.testing.assert_close(out.deltas, cda.probes_.predict(cf.latents.free) - cda.probes_.predict(
        cf.original_latents.free))
    # the brightness probe moves the way the decoded images' brightness moves, towards the target class
    measured = cda.measure_images(image_descriptors, cf)
    towards = torch.where(clf(x).argmax(1) == 0, 1.0, -1.0)
    assert ((out.deltas[:, 0] * towards) > 0).all() and ((measured[:, 0] * towards) > 0).all()
    glob = cda.global_attribution(cf, positive_class=1)
    assert glob.transitions == [(-1, 1)] and int(glob.counts[0]) == 9 and glob.get(-1, 1)[0] > 0
    # re-encoding projects the decoded original and counterfactual again; brightness still moves the same way
    again = cda.attribute(x, counterfactuals=cf, reencode=True)
    assert again.shape == (9, 3) and torch.isfinite(again).all() and ((again[:, 0] * towards) > 0).all()


def test_sufficiency_necessity_runs_on_the_gan_unchanged(gan_world):
    g, aux, clf, x = gan_world
    z = g.encode(aux).free
    d = image_descriptors(aux)
    probes = LatentProbes().fit(z, torch.stack([(d[:, 0] > clf.threshold).float(), d[:, 1]], 1),
                                ["bright", "top_heavy"])

    def oracle(im):
        top, bottom = im[:, :, :4].flatten(1).mean(1), im[:, :, 4:].flatten(1).mean(1)
        return torch.sigmoid(60 * torch.stack([im.flatten(1).mean(1) - clf.threshold, top - bottom], 1))

    cfsn = CounterfactualSufficiencyNecessity(clf, g, LinearDirections(probes, z), oracle=oracle)
    samples = torch.cat([g.decode(g.sample(60, torch.Generator().manual_seed(12))).detach(), x[-1:]])
    res = cfsn.estimate(samples, target=1, n_bootstrap=100, generator=torch.Generator().manual_seed(0))
    assert res.names == ["bright", "top_heavy"] and res.latents.shape == (61, 6)
    assert res.nec.shape == (2,) and res.nec_ci.shape == (2, 2) and res.prob_add.shape == (61, 2)
    assert ((res.prob >= 0) & (res.prob <= 1)).all() and torch.isfinite(res.prob_add).all()
    assert res.extra["projection_ok"].tolist() == [True] * 60 + [False]  # failed projections are flagged
    assert (res.n_nec > 0).all() and (res.n_suf > 0).all() and (res.kept > 0.7).all()
    # the classifier reads brightness alone: "bright" is necessary and sufficient, "top_heavy" much less so
    assert res.nec[0] > 0.9 and res.suf[0] > 0.9 and res.nesuf[0] > 0.9
    assert res.nec[1] < 0.5 and res.nesuf[1] < 0.5
    # n_samples draws from the GAN's own prior (mapped W), not a standard normal
    drawn = cfsn.estimate(n_samples=40, target=1, n_bootstrap=10, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(drawn.latents, g.sample(40, torch.Generator().manual_seed(3)).free.flatten(1))
    eff = cfsn.attribute(samples[:5], target=1)
    assert eff.shape == (5, 2) and ((eff >= -1) & (eff <= 1)).all() and eff[:, 0].mean() > eff[:, 1].mean()
