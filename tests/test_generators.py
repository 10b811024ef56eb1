import pytest
import torch
from diffusers import AutoencoderKL, VQModel

from captum_cfx import AutoencoderGenerator, DiffusersVAEGenerator, Latent, VAEGenerator

from .conftest import TinyVAE


def test_latent_indexing_selects_both_parts():
    lat = Latent(torch.arange(8.0).view(4, 2), {"xT": torch.arange(4.0).view(4, 1)})
    sub = lat[torch.tensor([True, False, True, False])]
    assert len(sub) == 2 and sub.free.tolist() == [[0, 1], [4, 5]] and sub.fixed["xT"].flatten().tolist() == [0, 2]
    assert lat[1].free.shape == (1, 2)
    both = Latent.cat([lat[:1], lat[1:]])
    assert torch.equal(both.free, lat.free) and torch.equal(both.fixed["xT"], lat.fixed["xT"])
    assert lat.replace(torch.zeros(4, 2)).fixed is lat.fixed


def test_latent_bad_parts():
    with pytest.raises(TypeError, match="`free`"):
        Latent([1, 2])
    with pytest.raises(ValueError, match=r"`fixed\['xT'\]`"):
        Latent(torch.zeros(3, 2), {"xT": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match="`latents`"):
        Latent.cat([])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vae_generator_shapes_dtypes(tiny, dtype):
    vae, _, _, x = tiny
    gen = VAEGenerator(vae.to(dtype), image_shape=(1, 8, 8))
    lat = gen.encode(x.to(dtype))
    assert lat.free.shape == (6, 3) and lat.free.dtype == dtype
    out = gen.decode(lat)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(gen.decode(lat.free), out)  # a bare tensor is a latent without fixed part
    s1 = gen.encode_sample(x.to(dtype), generator=torch.Generator().manual_seed(0)).free
    s2 = gen.encode_sample(x.to(dtype), generator=torch.Generator().manual_seed(0)).free
    assert torch.equal(s1, s2) and not torch.equal(s1, lat.free)


def test_decode_is_differentiable(tiny):
    _, _, gen, x = tiny
    z = gen.encode(x).free.detach().requires_grad_()
    gen.decode(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (torch.rand(6, 8, 8), ValueError, r"\(N, C, H, W\)"),
        (torch.rand(6, 3, 8, 8), ValueError, "C == 1"),
        (torch.randint(0, 255, (6, 1, 8, 8)), TypeError, "floating-point"),
        (torch.rand(6, 1, 8, 8) * 255, ValueError, "input range"),
        (torch.full((2, 1, 8, 8), float("nan")), ValueError, "NaN"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images(tiny, bad, exc, match):
    _, _, gen, _ = tiny
    with pytest.raises(exc, match=match):
        gen.encode(bad)


def test_small_noise_outside_range_is_accepted(tiny):
    _, _, gen, x = tiny
    noisy = x + 0.05 * torch.randn_like(x)  # NoiseTunnel-style excursions just outside [0, 1]
    assert noisy.min() < 0 or noisy.max() > 1
    lat = gen.encode(noisy)
    assert lat.free.shape == (6, 3) and torch.isfinite(lat.free).all()
    assert not torch.allclose(lat.free, gen.encode(x).free)  # encoded as given, not clamped back to x
    with pytest.raises(ValueError, match="input range"):
        gen.encode(x * 255)  # a 0-255 image is refused, not taken for noise


def test_mismatched_encoder_decoder():
    enc = torch.nn.Linear(64, 3)
    dec = torch.nn.Linear(4, 64)
    with pytest.raises(ValueError, match="`encoder` and `decoder` do not match"):
        AutoencoderGenerator(lambda x: enc(x.flatten(1)), lambda z: dec(z).view(-1, 1, 8, 8), image_shape=(1, 8, 8))
    dec2 = torch.nn.Linear(3, 49)
    with pytest.raises(ValueError, match="do not match `image_shape`"):
        AutoencoderGenerator(lambda x: enc(x.flatten(1)), lambda z: dec2(z).view(-1, 1, 7, 7), image_shape=(1, 8, 8))
    with pytest.raises(TypeError, match="`decoder` must be callable"):
        AutoencoderGenerator(enc, "decoder")
    with pytest.raises(TypeError, match="`vae` must have callable"):
        VAEGenerator(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`input_range`"):
        VAEGenerator(TinyVAE(), input_range=(1.0, 0.0))


def _tiny_kl():
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8,), norm_num_groups=4,
                         latent_channels=2, sample_size=8, layers_per_block=1)


def _tiny_vq():
    torch.manual_seed(0)
    return VQModel(in_channels=3, out_channels=3, block_out_channels=(8,), norm_num_groups=4,
                   latent_channels=2, num_vq_embeddings=16, vq_embed_dim=2, sample_size=8, layers_per_block=1)


@pytest.mark.parametrize("make", [_tiny_kl, _tiny_vq])
def test_diffusers_adapters_roundtrip(make, tmp_path):
    gen = DiffusersVAEGenerator(make().eval(), input_range=(0.0, 1.0))
    x = torch.rand(2, 3, 8, 8)
    lat = gen.encode(x)
    assert lat.free.shape[0] == 2 and lat.free.shape[1] == 2
    out = gen.decode(lat)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    z = lat.free.detach().clone().requires_grad_()
    gen.decode(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    gen.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").is_file()
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "m").iterdir())
    gen2 = DiffusersVAEGenerator.from_pretrained(tmp_path / "m")
    assert gen2.kind == gen.kind
    with torch.no_grad():
        assert torch.allclose(gen2.decode(gen2.encode(x)), gen.decode(gen.encode(x)), atol=1e-5)


def test_diffusers_adapter_input_range_conversion():
    gen = DiffusersVAEGenerator(_tiny_kl().eval(), input_range=(-1.0, 1.0))
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.allclose(gen._to_model_range(x), x)
    gen01 = DiffusersVAEGenerator(_tiny_kl().eval())
    assert torch.allclose(gen01._to_model_range(torch.ones(1)), torch.ones(1))
    assert torch.allclose(gen01._to_model_range(torch.zeros(1)), -torch.ones(1))


def test_diffusers_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="`model` must be a diffusers AutoencoderKL or VQModel"):
        DiffusersVAEGenerator(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`path` must be a local diffusers model folder"):
        DiffusersVAEGenerator.from_pretrained(tmp_path / "missing")
