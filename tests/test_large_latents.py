"""Real latent sizes: Lanczos h-directions (no D x D buffer), chunked decodes, float32 optimiser state for
half-precision models, diffusion-autoencoder encoders and sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_cfx import GlobalCounterfactualDirections, LatentCounterfactualAttack, LatentIntegratedGradients
from captum_cfx.generators import AutoencoderGenerator, DDIMGenerator, DiffusionAutoencoder, SemanticEncoder
from captum_cfx.optim import LatentAdam, NormalizedGradient
from tests.conftest import TinyClassifier


def pixel_distance(images, reference):
    return (images - reference).pow(2).flatten(1).mean(1)


class _Recorder:
    """Wraps a generator's decode and records the batch size of every call."""

    def __init__(self, gen):
        self.sizes: list[int] = []
        self._decode = gen.decode
        gen.decode = self

    def __call__(self, latent):
        self.sizes.append(int(latent.free.shape[0]) if hasattr(latent, "free") else int(latent.shape[0]))
        return self._decode(latent)


def _wide_world(d: int, seed: int = 0):
    """A decoder ``z (d) -> 8x8 image`` (linear then sigmoid) and a small non-linear classifier."""
    torch.manual_seed(seed)
    lin = nn.Linear(d, 64)
    with torch.no_grad():
        lin.weight.mul_(0.3)
    gen = AutoencoderGenerator(lambda x: x.flatten(1)[:, :1].repeat(1, d) * 0.1,
                               lambda z: torch.sigmoid(lin(z)).view(-1, 1, 8, 8), input_range=(0.0, 1.0),
                               image_shape=(1, 8, 8))
    gen.lin = lin
    return gen, TinyClassifier().eval()


# ---------------------------------------------------------------------- GCD at large D
def test_lanczos_with_full_krylov_space_equals_the_dense_eigenvectors():
    gen, clf = _wide_world(12)
    x = torch.rand(1, 1, 8, 8)
    kw = dict(classes=(0, 2), distance=pixel_distance, n_hessian=3, n_alphas=4, hvp="exact")
    dense = GlobalCounterfactualDirections(clf, gen, eigensolver="dense", **kw).fit(x)
    lanczos = GlobalCounterfactualDirections(clf, gen, eigensolver="lanczos", hessian_steps=12, **kw).fit(x)
    assert dense.direction_kinds_ == lanczos.direction_kinds_
    cos = (dense.directions_ * lanczos.directions_).sum(1)
    assert float(cos.min()) > 0.999, cos  # same vectors, same signs (both descend the loss)
    # "auto" is dense below dense_max_dim and Lanczos above: 12 dims are dense by default
    auto = GlobalCounterfactualDirections(clf, gen, **kw).fit(x)
    torch.testing.assert_close(auto.directions_, dense.directions_)
    # Lanczos: per loss, one decode for the gradient's graph + hessian_steps HVPs; dense: D decodes + 2 D HVPs
    assert lanczos.renders_ - dense.renders_ == 2 * (1 + 12) - (12 + 2 * 12)


def test_auto_hvps_on_the_lanczos_path_are_differences_of_gradients_and_agree_with_exact_ones():
    gen, clf = _wide_world(200)
    x = torch.rand(1, 1, 8, 8)
    kw = dict(classes=(0, 2), distance=pixel_distance, n_hessian=1, n_alphas=2, loss_weights=[(1.0, 0.0)],
              hessian_steps=30)
    exact = GlobalCounterfactualDirections(clf, gen, hvp="exact", **kw).fit(x)
    auto = GlobalCounterfactualDirections(clf, gen, **kw).fit(x)  # D = 200 > 128: Lanczos, "auto" = differences
    # exact: 1 decode for the gradient's graph + 30 HVPs; differences: 30 x (2 decodes + 2 gradient passes)
    assert auto.renders_ - exact.renders_ == 30 * 4 - (1 + 30)
    assert float((exact.directions_[1] * auto.directions_[1]).sum()) > 0.99


def test_lanczos_top_eigenvector_at_a_latent_size_where_a_dense_hessian_would_not_fit():
    """D = 60,000: a dense Hessian is 14 GB in float32; Lanczos keeps hessian_steps + 2 vectors of size D."""
    d = 60_000
    gen, clf = _wide_world(d)
    lin = gen.lin
    x = torch.rand(1, 1, 8, 8)
    gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, n_hessian=1,
                                         loss_weights=[(1.0, 0.0)], n_alphas=2, hvp="exact", hessian_steps=70)
    gcd.fit(x)
    assert gcd.directions_.shape == (2, d)
    v = gcd.directions_[1].double()
    # the exact Hessian is W^T M W with M the 64 x 64 Hessian in the pre-activation u = W z + b: its non-zero
    # eigenvalues are those of L^T M L with W W^T = L L^T (64 x 64), computed here independently in float64
    s = gcd.source_sign_
    w, b = lin.weight.detach().double(), lin.bias.detach().double()
    clf64 = TinyClassifier()
    clf64.load_state_dict(clf.state_dict())
    clf64 = clf64.double()

    def f(u):
        o = clf64(torch.sigmoid(u).view(1, 1, 8, 8))
        return s * (o[0, 2] - o[0, 0])

    u0 = gcd.z0_.double() @ w.T + b
    m = torch.autograd.functional.hessian(f, u0[0])
    chol = torch.linalg.cholesky(w @ w.T)
    top = torch.linalg.eigvalsh(chol.T @ m @ chol).max()
    rayleigh = (w @ v) @ m @ (w @ v)
    assert float(rayleigh) == pytest.approx(float(top), rel=1e-3)
    # an eigenvector: H v = lambda v (measured in the 64-d image of W, where H acts)
    hv = w.T @ (m @ (w @ v))
    assert float((hv - top * v).norm() / top.abs()) < 2e-2


def test_proxy_mode_uses_lanczos_above_the_threshold_and_agrees_with_dense():
    gen, clf = _wide_world(40)
    x = torch.rand(1, 1, 8, 8)
    kw = dict(classes=(0, 2), distance=pixel_distance, mode="proxy", n_hessian=2, n_alphas=4, render_budget=120,
              n_rounds=2, proxy_hidden=16, proxy_epochs=20)
    dense = GlobalCounterfactualDirections(clf, gen, eigensolver="dense", **kw).fit(
        x, generator=torch.Generator().manual_seed(0))
    lanczos = GlobalCounterfactualDirections(clf, gen, dense_max_dim=8, hessian_steps=40, **kw).fit(
        x, generator=torch.Generator().manual_seed(0))
    cos = (dense.directions_ * lanczos.directions_).sum(1)
    assert float(cos.min()) > 0.999, cos


def test_eigensolver_arguments_are_checked():
    gen, clf = _wide_world(4)
    with pytest.raises(ValueError, match="`eigensolver` must be"):
        GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, eigensolver="arpack")
    with pytest.raises(ValueError, match="hessian_steps"):
        GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=pixel_distance, hessian_steps=0)


# ---------------------------------------------------------------------- chunked decodes
def test_gcd_fit_and_transfer_decode_in_chunks_with_the_same_results():
    gen, clf = _wide_world(6)
    x = torch.rand(5, 1, 8, 8)
    kw = dict(classes=(0, 2), distance=pixel_distance, n_hessian=2, n_alphas=7)
    whole = GlobalCounterfactualDirections(clf, gen, **kw).fit(x[:1], internal_batch_size=None)
    out_whole = whole.transfer(x, internal_batch_size=1000)
    rec = _Recorder(gen)
    chunked = GlobalCounterfactualDirections(clf, gen, **kw).fit(x[:1], internal_batch_size=3)
    out_chunked = chunked.transfer(x, internal_batch_size=3)
    assert max(rec.sizes) <= 3  # every decoder call: at most 3 renders (fit and transfer alike)
    torch.testing.assert_close(chunked.directions_, whole.directions_, atol=1e-6, rtol=1e-5)
    assert chunked.renders_ == whole.renders_
    for f in ("counterfactuals", "reconstructions", "alphas", "success", "flips", "classes"):
        torch.testing.assert_close(getattr(out_chunked, f), getattr(out_whole, f), atol=1e-6, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*walks did not reach")
def test_lig_walk_and_path_decode_in_chunks_with_the_same_results():
    gen, clf = _wide_world(6)
    x = torch.rand(3, 1, 8, 8)
    kw = dict(target=1, n_steps=10, walk_steps=9, threshold=0.3)
    lig = LatentIntegratedGradients(clf, gen)
    whole = lig.explain(x, internal_batch_size=None, **kw)
    rec = _Recorder(gen)
    chunked = lig.explain(x, internal_batch_size=4, **kw)
    assert max(rec.sizes) <= 4 and sum(rec.sizes) >= 3 * (10 + 1 + 9)
    for f in ("attributions", "convergence_delta", "baseline_latents", "baseline_found", "start_outputs"):
        torch.testing.assert_close(getattr(chunked, f), getattr(whole, f), atol=1e-6, rtol=1e-5)
    assert chunked.n_renders == whole.n_renders


def test_decode_chunked_matches_decode_and_checks_its_argument():
    gen, _ = _wide_world(6)
    z = torch.randn(10, 6)
    torch.testing.assert_close(gen.decode_chunked(z, 3), gen.decode(z), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        gen.decode_chunked(z, 0)


# ---------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_adam_state_is_float32_for_half_precision_latents(dtype):
    opt = LatentAdam(lr=0.1)
    z = torch.zeros(2, 5, dtype=dtype)
    state = opt.init_state(z)
    assert state["m"].dtype == torch.float32 and state["v"].dtype == torch.float32
    g = torch.full((2, 5), 1e-4, dtype=dtype)  # v = 1e-11 underflows in float16; eps = 1e-8 is 0 there
    z1 = opt.step(z, g, state, t=1)
    assert z1.dtype == dtype and bool(torch.isfinite(z1).all())
    ref = LatentAdam(lr=0.1)
    s32 = ref.init_state(z.float())
    torch.testing.assert_close(z1, ref.step(z.float(), g.float(), s32, t=1).to(dtype))
    torch.testing.assert_close(z1.float(), torch.full((2, 5), -0.1), atol=1e-3, rtol=0)  # Adam's first step: -lr
    zn = NormalizedGradient(0.1).step(z, torch.zeros_like(z), {}, t=1)
    assert bool(torch.isfinite(zn).all())  # a zero gradient in float16 does not divide by a clamp that rounds to 0


def test_float32_latents_keep_float32_arithmetic_bit_for_bit():
    torch.manual_seed(0)
    z, g = torch.randn(3, 4), torch.randn(3, 4)
    opt = LatentAdam(lr=0.05)
    st = opt.init_state(z)
    z1 = opt.step(z, g, st, t=torch.tensor([1, 2, 3]))
    m, v = 0.1 * g, 0.001 * g * g
    b1 = torch.tensor([1 - 0.9, 1 - 0.9**2, 1 - 0.9**3]).view(3, 1)
    b2 = torch.tensor([1 - 0.999, 1 - 0.999**2, 1 - 0.999**3]).view(3, 1)
    assert torch.equal(z1, z - 0.05 * (m / b1) / ((v / b2).sqrt() + 1e-8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attack_on_a_half_precision_diffusers_vae_takes_finite_steps(dtype):
    import warnings

    from diffusers import AutoencoderKL

    from captum_cfx.generators import DiffusersVAEGenerator

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, layers_per_block=1, sample_size=16)
    clf = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = DiffusersVAEGenerator(vae.to(dtype)).eval()
    x = torch.rand(2, 3, 16, 16, dtype=dtype)
    out = LatentCounterfactualAttack(clf.to(dtype).eval(), gen).generate(x, target=torch.tensor([1, 2]),
                                                                           max_steps=4)
    assert not bool(out.nonfinite.any())  # float16 state made every sample non-finite after one step
    assert out.n_steps.tolist() == [4, 4] or bool(out.success.any())
    assert out.latents.free.dtype == dtype
    moved = (out.latents.free - out.original_latents.free).float().flatten(1).norm(dim=1)
    assert bool((moved > 0.1).all())


# ---------------------------------------------------------------------- diffusion autoencoder
def _unet(channels: int = 3, size: int = 8, cond: bool = True):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 8),
                       norm_num_groups=4, layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"),
                       class_embed_type="identity" if cond else None).eval()


def _sched():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=100)


class _CustomEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, 2, 1)
        self.head = nn.Linear(5, 6)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def test_semantic_encoder_channels_come_from_the_unet():
    gen = DiffusionAutoencoder(None, _unet(3), _sched(), z_dim=6, num_inference_steps=2)
    assert isinstance(gen.encoder, SemanticEncoder) and gen.encoder.config["in_channels"] == 3
    lat = gen.encode(torch.rand(2, 3, 8, 8))
    assert lat.free.shape == (2, 6) and lat.fixed["x_T"].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="takes 1-channel images but the UNet's in_channels is 3"):
        DiffusionAutoencoder(SemanticEncoder(1, 6), _unet(3), _sched(), z_dim=6)
    with pytest.raises(ValueError, match="z_dim=4 but `z_dim` is 6"):
        DiffusionAutoencoder(SemanticEncoder(3, 4), _unet(3), _sched(), z_dim=6)
    with pytest.raises(TypeError, match="in_channels"):
        SemanticEncoder()  # no silent one-channel default


def test_custom_encoder_saves_and_reloads(tmp_path):
    torch.manual_seed(1)
    gen = DiffusionAutoencoder(_CustomEncoder(), _unet(3), _sched(), z_dim=6, num_inference_steps=2).eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        lat = gen.encode(x)
        img = gen.decode(lat)
    gen.save_pretrained(tmp_path / "g")
    with pytest.raises(ValueError, match="custom encoder .*_CustomEncoder.*pass encoder="):
        DiffusionAutoencoder.from_pretrained(tmp_path / "g")
    with pytest.raises(ValueError, match="do not fit"):
        DiffusionAutoencoder.from_pretrained(tmp_path / "g", encoder=SemanticEncoder(3, 6))
    back = DiffusionAutoencoder.from_pretrained(tmp_path / "g", encoder=_CustomEncoder())
    with torch.no_grad():
        lat2 = back.encode(x)
        torch.testing.assert_close(lat2.free, lat.free)
        torch.testing.assert_close(back.decode(lat2), img)


def test_image_size_other_than_the_unets_sample_size_is_a_clear_error():
    ddim = DDIMGenerator(_unet(3, cond=False), _sched(), num_inference_steps=2)
    with pytest.raises(ValueError, match=r"DDIMGenerator: `x` must be 8x8, the UNet's sample_size; got 16x16"):
        ddim.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"`latent` must be 8x8, the UNet's sample_size; got 12x12"):
        ddim.decode(torch.randn(1, 3, 12, 12))
    dae = DiffusionAutoencoder(None, _unet(3), _sched(), z_dim=6, num_inference_steps=2)
    with pytest.raises(ValueError, match=r"DiffusionAutoencoder: `x` must be 8x8.*sample_size=16"):
        dae.encode(torch.rand(1, 3, 16, 16))
    from captum_cfx.generators import Latent

    with pytest.raises(ValueError, match=r"x_T'\]` must be 8x8"):
        dae.decode(Latent(torch.zeros(1, 6), {"x_T": torch.randn(1, 3, 16, 16)}))
