"""Every public method on the real architecture families at test width, 64x64 RGB, single thread.

A ResNet-18-layout classifier (BasicBlock, (2, 2, 2, 2)) and regressor, Stable Diffusion's ``AutoencoderKL`` block
layout, the ``google/ddpm-celebahq-256`` ``UNet2DModel`` block/attention layout under DDIM, and a diffusion
autoencoder over the same UNet layout (``tests/real_architectures.py``). Widths are tiny so that the whole file
runs in seconds; the layouts (depth, block types, attention placement, down-sampling) are the real ones.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from diffusers import DDIMScheduler

from captum_cfx import (
    CounterfactualDescriptorAttribution,
    CounterfactualSufficiencyNecessity,
    DDIMGenerator,
    DiffusersVAEGenerator,
    DiffusionAutoencoder,
    DiffusionPixelCounterfactual,
    GlobalCounterfactualDirections,
    LatentCounterfactualAttack,
    LatentIntegratedGradients,
    LatentProbes,
    LinearDirections,
    RegressionTarget,
)
from tests.real_architectures import ResNet, ddpm_celebahq_unet, sd_vae

S = 64  # image size
K = 5  # classes


def _distance(images, reference):
    return (images - reference).pow(2).flatten(1).mean(1)


@pytest.fixture(scope="module")
def arch():
    torch.manual_seed(0)
    clf = ResNet("basic", (2, 2, 2, 2), width=8, num_classes=K).eval()
    reg_net = ResNet("basic", (2, 2, 2, 2), width=8, num_classes=1).eval()
    reg = lambda x: torch.sigmoid(reg_net(x))[:, 0]  # noqa: E731  a regressor with outputs in (0, 1)
    vae = DiffusersVAEGenerator(sd_vae(width=8, sample_size=S, norm_num_groups=4)).eval()
    sched = DDIMScheduler(num_train_timesteps=1000)
    ddim = DDIMGenerator(ddpm_celebahq_unet(width=8, sample_size=S, norm_num_groups=4), sched,
                         num_inference_steps=2).eval()
    dae = DiffusionAutoencoder(None, ddpm_celebahq_unet(width=8, sample_size=S, norm_num_groups=4,
                                                        class_embed_type="identity"),
                               sched, z_dim=16, num_inference_steps=2).eval()
    x = torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(1))
    return dict(clf=clf, reg=reg, vae=vae, ddim=ddim, dae=dae, x=x)


def _other_class(clf, x):
    with torch.no_grad():
        return (clf(x).argmax(1) + 1) % K


def test_shapes_of_the_real_layouts(arch):
    vae, ddim, dae, x = arch["vae"], arch["ddim"], arch["dae"], arch["x"]
    with torch.no_grad():
        assert vae.encode(x).free.shape == (2, 4, S // 8, S // 8)  # SD: 8x down-sampling, 4 latent channels
        assert ddim.encode(x).free.shape == x.shape
        lat = dae.encode(x)
    assert lat.free.shape == (2, 16) and lat.fixed["x_T"].shape == x.shape
    assert len(ddim.unet.down_blocks) == 6 and type(ddim.unet.down_blocks[4]).__name__ == "AttnDownBlock2D"
    assert type(ddim.unet.up_blocks[1]).__name__ == "AttnUpBlock2D"
    assert len(vae.model.encoder.down_blocks) == 4 and vae.model.config.layers_per_block == 2


@pytest.mark.parametrize("gen_name", ["vae", "ddim", "dae"])
def test_attack_moves_the_latent_on_every_generator(arch, gen_name):
    clf, gen, x = arch["clf"], arch[gen_name], arch["x"]
    out = LatentCounterfactualAttack(clf, gen).generate(x, target=_other_class(clf, x), max_steps=1)
    assert out.counterfactuals.shape == x.shape and not bool(out.nonfinite.any())
    moved = (out.latents.free - out.original_latents.free).flatten(1).norm(dim=1)
    assert bool((moved > 0).all()) and bool(((out.n_steps == 1) | out.success).all())


def test_regression_attack_on_the_sd_vae(arch):
    reg, vae, x = arch["reg"], arch["vae"], arch["x"]
    out = LatentCounterfactualAttack(reg, vae).generate(x, target=0.2, max_steps=3, lr=0.5,
                                                        objective=RegressionTarget(0.05, mode="relative"))
    with torch.no_grad():
        before, after = reg(out.reconstructions), reg(out.counterfactuals)
    assert bool((after > before).all())  # every prediction moved towards +0.2


def test_descriptors_on_the_sd_vae(arch):
    clf, vae, x = arch["clf"], arch["vae"], arch["x"]
    aux = torch.rand(24, 3, S, S, generator=torch.Generator().manual_seed(2))
    desc = aux.mean((2, 3))  # mean red / green / blue: continuous descriptors
    cda = CounterfactualDescriptorAttribution(clf, vae).fit(aux, desc, ["red", "green", "blue"], test_size=0.25)
    cfs = LatentCounterfactualAttack(clf, vae).generate(x, target=_other_class(clf, x), max_steps=2)
    deltas = cda.attribute(x, target=_other_class(clf, x), counterfactuals=cfs)
    assert deltas.shape == (2, 3) and bool(torch.isfinite(deltas).all()) and float(deltas.abs().sum()) > 0


def test_gcd_white_box_uses_lanczos_in_the_sd_vae_latent_and_transfers(arch):
    clf, vae, x = arch["clf"], arch["vae"], arch["x"]
    # SD's mid-block attention has no double backward on the CPU: Hessian-vector products from gradient differences
    gcd = GlobalCounterfactualDirections(clf, vae, classes=(0, 1), distance=_distance, n_hessian=2, n_alphas=4,
                                         hessian_steps=4, hvp="finite-difference").fit(x[:1])
    d = 4 * (S // 8) ** 2
    assert gcd.directions_.shape == (2 * 3, d) and d > gcd.dense_max_dim  # Lanczos, not a 256 x 256 Hessian
    torch.testing.assert_close(gcd.directions_.norm(dim=1), torch.ones(6))
    assert gcd.renders_ == 1 + (1 + 2) + 2 * 4 * (2 + 2) + 6 * 4  # 4 difference HVPs per loss
    out = gcd.transfer(x, internal_batch_size=3)
    assert out.counterfactuals.shape == x.shape and out.flips.shape == (2, 4)


def test_gcd_proxy_mode_on_the_sd_vae(arch):
    clf, vae, x = arch["clf"], arch["vae"], arch["x"]
    gcd = GlobalCounterfactualDirections(clf, vae, classes=(0, 1), distance=_distance, mode="proxy", n_hessian=1,
                                         n_alphas=4, render_budget=60, n_rounds=2, proxy_hidden=16, proxy_epochs=10,
                                         hessian_steps=8)
    gcd.fit(x[:1], generator=torch.Generator().manual_seed(0))
    assert gcd.directions_.shape == (4, 4 * (S // 8) ** 2) and gcd.renders_ <= 60


def test_gcd_white_box_and_lig_on_the_diffusion_autoencoder(arch):
    clf, dae, x = arch["clf"], arch["dae"], arch["x"]
    gcd = GlobalCounterfactualDirections(clf, dae, classes=(0, 1), distance=_distance, n_hessian=1, n_alphas=3,
                                         loss_weights=[(1.0, 0.0)], hvp="finite-difference", eigensolver="lanczos",
                                         hessian_steps=3).fit(x[:1])
    assert gcd.directions_.shape == (2, 16)
    # source, gradients (1 decode + 2 passes), 3 difference HVPs (2 decodes + 2 gradient passes each), 2 line searches
    assert gcd.renders_ == 1 + (1 + 2) + 3 * (2 + 2) + 2 * 3
    lig = LatentIntegratedGradients(clf, dae).explain(x, target=0, baseline=torch.zeros(16), n_steps=4,
                                                      internal_batch_size=3)
    assert lig.attributions.shape == x.shape
    assert float(lig.relative_error.max()) < 0.5  # 4 trapezoid steps through a random network: rough, not broken


def test_lig_on_the_sd_vae_with_a_walk(arch):
    clf, vae, x = arch["clf"], arch["vae"], arch["x"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: the walk may not reach the threshold
        attr, delta = LatentIntegratedGradients(clf, vae).attribute(x, target=0, n_steps=8, walk_steps=4,
                                                                    internal_batch_size=4,
                                                                    return_convergence_delta=True)
    assert attr.shape == x.shape and delta.shape == (2,) and bool(torch.isfinite(delta).all())


def test_causal_scores_on_the_sd_vae(arch):
    clf, vae = arch["clf"], arch["vae"]
    imgs = torch.rand(24, 3, S, S, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = vae.encode(imgs).free.flatten(1)
    bright = (imgs.mean((1, 2, 3)) > imgs.mean()).float()[:, None]
    red = (imgs[:, 0].mean((1, 2)) > imgs[:, 0].mean()).float()[:, None]
    lin = LinearDirections(LatentProbes(test_size=0.25).fit(z, torch.cat([bright, red], 1), ["bright", "red"]), z)
    oracle = lambda im: torch.stack([(im.mean((1, 2, 3)) - 0.5) * 20, (im[:, 0].mean((1, 2)) - 0.5) * 20], 1).sigmoid()  # noqa: E731
    binary = lambda im: clf(im)[:, :2]  # noqa: E731  the question: class 1 vs class 0
    cfsn = CounterfactualSufficiencyNecessity(binary, vae, lin, oracle=oracle)
    res = cfsn.estimate(imgs[:6], target=1, n_bootstrap=20, generator=torch.Generator().manual_seed(0))
    assert res.suf.shape == (2,) and res.nec.shape == (2,)


def test_pixel_method_on_the_ddpm_celebahq_layout(arch):
    clf, ddim, x = arch["clf"], arch["ddim"], arch["x"]
    out = DiffusionPixelCounterfactual(clf, ddim).generate(x, target=_other_class(clf, x), max_steps=2,
                                                           filter_steps=1, inpaint_trials=1,
                                                           generator=torch.Generator().manual_seed(0))
    assert out.counterfactuals.shape == x.shape and bool(torch.isfinite(out.counterfactuals).all())
