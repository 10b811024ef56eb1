import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

from captum_cfx import LatentCounterfactualAttack
from captum_cfx.generators import DDIMGenerator, DiffusionAutoencoder, Latent, SemanticEncoder

from .conftest import TinyClassifier


def _unet(cond: bool = False) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), class_embed_type="identity" if cond else None).eval()


def _sched() -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=100)


def _diffae(checkpoint=True, steps=2) -> DiffusionAutoencoder:
    torch.manual_seed(0)
    return DiffusionAutoencoder(SemanticEncoder(1, 4, 8), _unet(True), _sched(), z_dim=4,
                                num_inference_steps=steps, checkpoint=checkpoint).eval()


def test_ddim_shapes_and_gradient_to_xT():
    gen = DDIMGenerator(_unet(), _sched(), num_inference_steps=2)
    x = torch.rand(3, 1, 8, 8)
    lat = gen.encode(x)
    assert lat.free.shape == (3, 1, 8, 8) and not lat.free.requires_grad
    z = lat.free.clone().requires_grad_()
    out = gen.decode(z)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    out.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_ddim_inversion_is_near_exact_for_a_smooth_model():
    # a UNet whose output is zero predicts eps = 0: DDIM then maps x0 <-> sqrt(a) x0 exactly, both ways
    unet = _unet()
    for p in unet.parameters():
        torch.nn.init.zeros_(p)
    gen = DDIMGenerator(unet, _sched(), num_inference_steps=3, encode_level=0.5)
    x = torch.rand(2, 1, 8, 8) * 0.8 + 0.1
    with torch.no_grad():
        assert torch.allclose(gen.decode(gen.encode(x)), x, atol=1e-5)


def test_diffae_latent_parts_and_gradients():
    gen = _diffae()
    x = torch.rand(2, 1, 8, 8)
    lat = gen.encode(x)
    assert lat.free.shape == (2, 4) and lat.fixed["x_T"].shape == (2, 1, 8, 8)
    z = lat.free.detach().requires_grad_()
    xT = lat.fixed["x_T"].clone().requires_grad_()
    gen.decode(Latent(z, {"x_T": xT})).pow(2).sum().backward()
    assert z.grad.abs().sum() > 0 and xT.grad.abs().sum() > 0
    v = gen.vary(lat.free[:1].detach(), 3, torch.Generator().manual_seed(0))
    assert v.shape == (3, 1, 8, 8) and not torch.allclose(v[0], v[1])  # one code, three fresh x_T
    torch.testing.assert_close(v, gen.vary(lat.free[:1].detach(), 3, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=r"fixed\['x_T'\]"):
        gen.decode(lat.free)


@pytest.mark.parametrize("steps", [2, 4])
def test_checkpointed_and_plain_gradients_agree(steps):
    x = torch.rand(2, 1, 8, 8)
    grads = []
    for ck in (True, False):
        gen = _diffae(checkpoint=ck, steps=steps)
        lat = gen.encode(x)
        z = lat.free.detach().requires_grad_()
        gen.decode(lat.replace(z)).pow(2).sum().backward()
        grads.append(z.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_save_and_load_round_trips(tmp_path):
    gen = _diffae()
    x = torch.rand(2, 1, 8, 8)
    gen.save_pretrained(tmp_path / "diffae")
    gen2 = DiffusionAutoencoder.from_pretrained(tmp_path / "diffae")
    with torch.no_grad():
        assert torch.allclose(gen2.decode(gen2.encode(x)), gen.decode(gen.encode(x)), atol=1e-5)
    ddim = DDIMGenerator(_unet(), _sched(), num_inference_steps=2)
    ddim.save_pretrained(tmp_path / "ddim")
    ddim2 = DDIMGenerator.from_pretrained(tmp_path / "ddim")
    assert ddim2.sampler.num_inference_steps == 2
    with torch.no_grad():
        assert torch.allclose(ddim2.decode(ddim2.encode(x)), ddim.decode(ddim.encode(x)), atol=1e-5)


def test_attack_runs_unchanged_on_diffae():
    gen = _diffae()
    torch.manual_seed(1)
    clf = TinyClassifier()
    out = LatentCounterfactualAttack(clf, gen).generate(torch.rand(3, 1, 8, 8), target=1, margin=0.0, max_steps=3)
    assert out.latents.free.shape == (3, 4) and torch.equal(out.latents.fixed["x_T"], out.original_latents.fixed["x_T"])
    moved = out.n_steps > 0  # the semantic code moved where steps were taken, x_T stayed
    assert moved.any() and not torch.equal(out.latents.free[moved], out.original_latents.free[moved])
    with torch.no_grad():
        torch.testing.assert_close(out.counterfactuals, gen.decode(out.latents), atol=1e-5, rtol=1e-4)


def test_bad_configs(tmp_path):
    with pytest.raises(TypeError, match="`unet` must be a diffusers UNet2DModel"):
        DDIMGenerator(torch.nn.Linear(2, 2), _sched())
    with pytest.raises(TypeError, match="`scheduler` must be a diffusers DDIMScheduler"):
        DDIMGenerator(_unet(), object())
    with pytest.raises(ValueError, match="`num_inference_steps`"):
        DDIMGenerator(_unet(), _sched(), num_inference_steps=0)
    with pytest.raises(ValueError, match="`encode_level`"):
        DDIMGenerator(_unet(), _sched(), encode_level=1.5)
    with pytest.raises(ValueError, match="class_embed_type='identity'"):
        DiffusionAutoencoder(SemanticEncoder(1, 4, 8), _unet(False), _sched(), z_dim=4)
    with pytest.raises(ValueError, match="`path`"):
        DDIMGenerator.from_pretrained(tmp_path / "none")


def _tiny_recipe(cls: str, config: dict):
    from captum_cfx.zoo.train import Recipe

    wrapper = "DiffusionAutoencoder.from_weights" if "DiffAE" in cls else "DDIMGenerator.from_weights"
    return Recipe(cls, config, seed=0, epochs=1, train=None, evaluate=None,
                  targets={}, generator={"wrapper": wrapper, "num_inference_steps": 2, "input_range": [0.0, 1.0]})


_TINY_UNET = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 8],
              "down_block_types": ["DownBlock2D"] * 2, "up_block_types": ["UpBlock2D"] * 2, "layers_per_block": 1,
              "norm_num_groups": 4}
_SCHED = {"num_train_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
          "clip_sample": False}


@pytest.mark.parametrize("kind", ["DiffAEWeights", "DDPMWeights"])
def test_zoo_diffusion_weights_round_trip_through_load_generator(tmp_path, kind):
    """A zoo diffusion model saved by the training CLI's writer (fp16) loads back as a working generator."""
    from captum_cfx.zoo import load_generator, load_pretrained
    from captum_cfx.zoo._registry import resolve_class
    from captum_cfx.zoo.train import save_model

    if kind == "DiffAEWeights":
        config = {"unet": {**_TINY_UNET, "class_embed_type": "identity"}, "encoder": {"in_channels": 1, "width": 4},
                  "z_dim": 3, "scheduler": _SCHED}
    else:
        config = {"unet": _TINY_UNET, "scheduler": _SCHED}
    recipe = _tiny_recipe(kind, config)
    torch.manual_seed(0)
    weights = resolve_class(recipe.cls)(**config)
    save_model("tiny", weights, recipe, {}, seconds=0.0, out=tmp_path)
    loaded = load_pretrained("tiny", tmp_path)
    for (k, a), b in zip(weights.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a.half().float(), b), k
    gen = load_generator("tiny", tmp_path)
    assert isinstance(gen, DiffusionAutoencoder if kind == "DiffAEWeights" else DDIMGenerator)
    assert gen.sampler.num_inference_steps == 2
    x = torch.rand(2, 1, 8, 8)
    lat = gen.encode(x)
    assert lat.free.shape == ((2, 3) if kind == "DiffAEWeights" else (2, 1, 8, 8))
    assert gen.decode(lat).shape == x.shape
    if kind == "DiffAEWeights":  # the loaded projection is the trained one, not a fresh layer
        assert torch.equal(gen.proj.weight, loaded.proj.weight)


def test_from_weights_rejects_a_module_without_the_parts():
    with pytest.raises(TypeError, match="weights"):
        DiffusionAutoencoder.from_weights(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="weights"):
        DDIMGenerator.from_weights(torch.nn.Linear(2, 2))


def test_encode_level_round_trips_and_vary_needs_full_inversion(tmp_path):
    torch.manual_seed(0)
    gen = DiffusionAutoencoder(SemanticEncoder(1, 4, 8), _unet(True), _sched(), z_dim=4, num_inference_steps=2,
                               encode_level=0.5).eval()
    gen.save_pretrained(tmp_path / "d")
    gen2 = DiffusionAutoencoder.from_pretrained(tmp_path / "d")
    assert gen2.sampler.encode_level == 0.5
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(gen2.decode(gen2.encode(x)), gen.decode(gen.encode(x)), atol=1e-5)
        with pytest.raises(ValueError, match="encode_level=1.0"):
            gen.vary(torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="encode_level"):
        DiffusionAutoencoder(SemanticEncoder(1, 4, 8), _unet(True), _sched(), z_dim=4, encode_level=0.0)
