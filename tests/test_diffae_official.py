"""The official Diffusion Autoencoder (issue N): equivalence with the official code's outputs, safe checkpoint
reading, parameter counts at the released templates, and every method on a converted official-architecture model.

``tests/data/diffae_tiny_golden.safetensors`` and ``diffae_golden.json`` were written by
``tools/make_diffae_golden.py`` running the official code (github.com/phizaz/diffae) once; the tests need only them.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from captum_cfx import (
    CounterfactualDescriptorAttribution,
    CounterfactualSufficiencyNecessity,
    GlobalCounterfactualDirections,
    LatentCounterfactualAttack,
    LatentIntegratedGradients,
    RegressionTarget,
)
from captum_cfx._safe_pickle import OpaqueObject, load_checkpoint
from captum_cfx.cli import main as cli_main
from captum_cfx.generators import DiffusionAutoencoder, Latent, OfficialDiffusionAutoencoder
from captum_cfx.generators.diffae_official import (
    CELEBAHQ_ATTRIBUTES,
    DIFFAE_TEMPLATES,
    convert_diffae_checkpoint,
    ddim_timesteps,
    load_diffae_classifier,
)
from captum_cfx.interventions import LinearDirections

from .conftest import TinyClassifier

DATA = Path(__file__).parent / "data"
GOLDEN = load_file(str(DATA / "diffae_tiny_golden.safetensors"))
META = json.loads((DATA / "diffae_golden.json").read_text())
TINY = META["tiny_template"]
NAMES = ("Smiling", "Male", "Young")


class _HyperParameters(dict):
    """Stands for Lightning's AttributeDict: a class outside torch's weights-only allow-list."""


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _lightning_ckpt(path: Path, extra: dict | None = None) -> Path:
    """The official checkpoint layout: ``state_dict`` with ``model.*`` and ``ema_model.*`` (+ Lightning's extras)."""
    ema = {k: v for k, v in GOLDEN.items() if k.startswith("ema_model.")}
    train = {"model." + k[len("ema_model."):]: 0.5 * v for k, v in ema.items()}  # different training weights
    # + the latent DPM of the *_latent checkpoints, which the autoencoder leaves out
    latent_net = {f"{p}latent_net.layers.0.weight": torch.randn(4, 32) for p in ("model.", "ema_model.")}
    state = {**train, **ema, **latent_net, "x_T": torch.randn(4, 3, 32, 32), "conds_mean": torch.zeros(1, 32)}
    torch.save({"epoch": 3, "global_step": 1000, "state_dict": state,
                "hyper_parameters": _HyperParameters(img_size=32), **(extra or {})}, path)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[Path, OfficialDiffusionAutoencoder]:
    ckpt = _lightning_ckpt(tmp_path_factory.mktemp("diffae") / "last.ckpt")
    return ckpt, DiffusionAutoencoder.from_diffae_checkpoint(ckpt, template=TINY, num_inference_steps=10)


def test_matches_the_official_code(official):
    _, gen = official
    x, cond = GOLDEN["golden.x"], GOLDEN["golden.cond"]
    assert isinstance(gen, OfficialDiffusionAutoencoder) and gen._render.timesteps == list(range(0, 1000, 100))
    with torch.no_grad():
        lat = gen.encode((x + 1) / 2)  # the API takes [0, 1]
        assert _rel(lat.free, cond) <= 1e-4
        for i in range(3):
            eps = gen.eps(GOLDEN["golden.x_t"][i], int(GOLDEN["golden.t"][i]), cond)
            assert _rel(eps, GOLDEN["golden.eps"][i]) <= 1e-4
        assert _rel(lat.fixed["x_T"], GOLDEN["golden.encode_stochastic"]) <= 1e-4
        render = GOLDEN["golden.render"]
        assert float((render.abs() < 0.999).float().mean()) > 0.1  # the golden render is not all clipped
        out = gen.decode(Latent(cond, {"x_T": GOLDEN["golden.x_T"]}))
        assert _rel(out * 2 - 1, render) <= 1e-4
        # ema=False takes model.* (here half the EMA weights): a different semantic code
        train = DiffusionAutoencoder.from_diffae_checkpoint(official[0], template=TINY, ema=False,
                                                            num_inference_steps=10)
        assert _rel(train.encode_semantic((x + 1) / 2), cond) > 1e-2


def test_gradients_with_and_without_checkpointing_agree(converted):
    gen, _, _, x = converted
    lat = gen.encode(x)
    z = lat.free.detach().requires_grad_()
    grads = []
    for ck in (True, False):
        gen.checkpoint = ck
        z.grad = None
        gen.decode(lat.replace(z)).square().sum().backward()
        grads.append(z.grad.clone())
    gen.checkpoint = True
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


def test_cli_conversion_round_trip(official, tmp_path, capsys):
    ckpt, gen = official
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    assert cli_main(["convert", "diffae", str(ckpt), str(tmp_path / "out"), "--template",
                     str(tmp_path / "tiny.json")]) == 0
    assert "ema_model" in capsys.readouterr().out
    assert not any(p.suffix in {".ckpt", ".pt", ".bin", ".pkl"} for p in (tmp_path / "out").rglob("*"))
    conv = OfficialDiffusionAutoencoder.from_pretrained(tmp_path / "out")
    assert conv.num_inference_steps == 10 and conv.inversion_steps == 10  # T_eval of the template as the default
    assert DiffusionAutoencoder.from_diffae_checkpoint(tmp_path / "out", num_inference_steps=2).inversion_steps == 2
    for a, b in zip(conv.model.state_dict().values(), gen.model.state_dict().values()):
        assert torch.equal(a, b)
    assert cli_main(["convert", "diffae", str(ckpt), str(tmp_path / "bad"), "--template", "ffhq256_autoenc"]) == 2
    assert "does not match `template`" in capsys.readouterr().err


def test_classifier_matches_the_official_code(tmp_path):
    cls = {k[4:]: v for k, v in GOLDEN.items() if k.startswith("cls.")}
    torch.save({"state_dict": cls, "hyper_parameters": _HyperParameters(lr=1e-3)}, tmp_path / "cls.ckpt")
    z = GOLDEN["golden.z"]
    for ema, key in ((False, "golden.logits"), (True, "golden.logits_ema")):
        probes = load_diffae_classifier(tmp_path / "cls.ckpt", ema=ema)
        assert probes.names_ == list(CELEBAHQ_ATTRIBUTES) and len(probes.names_) == 40
        assert _rel(probes.decision_function(z), GOLDEN[key]) <= 1e-4
    # InterFaceGAN-style interventions on a released attribute; the probes survive a save/load round trip
    smiling = LinearDirections(probes).do(z, "Smiling", 1.0)
    assert bool((probes.predict(smiling)[:, probes.index("Smiling")] > 0.5).all())
    probes.save_pretrained(tmp_path / "probes")
    again = load_diffae_classifier(tmp_path / "probes")
    torch.testing.assert_close(again.decision_function(z), probes.decision_function(z))
    with pytest.raises(ValueError, match="not an official Diff-AE classifier"):
        torch.save({"state_dict": {"classifier.weight": torch.zeros(40, 32)}}, tmp_path / "half.ckpt")
        load_diffae_classifier(tmp_path / "half.ckpt")


class _Payload:
    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("kind", ["open", "system"])
def test_reading_a_malicious_checkpoint_runs_no_code(tmp_path, kind):
    target = tmp_path / "pwned"
    payload = _Payload(open, (str(target), "w")) if kind == "open" else _Payload(os.system, (f"touch {target}",))
    ckpt = _lightning_ckpt(tmp_path / "last.ckpt", {"callbacks": {"evil": payload}})
    raw = load_checkpoint(ckpt)
    assert not target.exists()
    assert isinstance(raw["callbacks"]["evil"], OpaqueObject) and raw["callbacks"]["evil"].name in ("open", "system")
    assert isinstance(raw["hyper_parameters"], OpaqueObject)
    assert torch.equal(raw["state_dict"]["ema_model.out.2.weight"], GOLDEN["ema_model.out.2.weight"])
    gen = OfficialDiffusionAutoencoder.from_diffae_checkpoint(ckpt, template=TINY, num_inference_steps=2)
    assert not target.exists() and gen.encode_semantic(torch.rand(1, 3, 32, 32)).shape == (1, 32)
    # a plain pickle (not a torch checkpoint) of the same payload is refused, and runs nothing either
    (tmp_path / "raw.ckpt").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "raw.ckpt")
    assert not target.exists()


def test_ddim_respacing_is_the_official_one():
    for steps, timesteps in META["official_ddim_timesteps"].items():
        assert ddim_timesteps(1000, int(steps)) == timesteps
    for steps in META["official_ddim_refused"]:
        with pytest.raises(ValueError, match=f"`num_inference_steps`={steps} cannot be made"):
            ddim_timesteps(1000, steps)


def test_parameter_counts_match_the_official_templates():
    counts = META["official_parameter_counts"]
    assert set(counts) == set(DIFFAE_TEMPLATES)
    for name, official_count in counts.items():
        with torch.device("meta"):
            gen = OfficialDiffusionAutoencoder.from_template(name)
        assert sum(p.numel() for p in gen.parameters()) == official_count, name
        assert gen.num_inference_steps == 20 and gen.image_shape[1] in (64, 128, 256)


def test_bad_inputs(official, tmp_path):
    ckpt, _ = official
    with pytest.raises(ValueError, match="`template` must be one of"):
        OfficialDiffusionAutoencoder.from_diffae_checkpoint(ckpt, template="ffhq512")
    with pytest.raises(ValueError, match="fields the converter does not know"):
        OfficialDiffusionAutoencoder.from_template({**TINY, "net_chanels": 8})
    with pytest.raises(ValueError, match="net_beatgans_resnet_two_cond"):
        OfficialDiffusionAutoencoder.from_template({**TINY, "net_beatgans_resnet_two_cond": False})
    with pytest.raises(ValueError, match="does not match `template`"):
        OfficialDiffusionAutoencoder.from_diffae_checkpoint(ckpt, template={**TINY, "net_ch": 64})
    with pytest.raises(ValueError, match="has no 'ema_model.\\*' weights"):
        torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.ckpt")
        OfficialDiffusionAutoencoder.from_diffae_checkpoint(tmp_path / "other.ckpt", template=TINY)
    with pytest.raises(ValueError, match="does not exist"):
        OfficialDiffusionAutoencoder.from_diffae_checkpoint(tmp_path / "missing.ckpt", template=TINY)
    with pytest.raises(ValueError, match="captum_cfx.json"):
        OfficialDiffusionAutoencoder.from_diffae_checkpoint(tmp_path, template=TINY)
    with pytest.raises(TypeError, match="`model` must be a BeatGANsAutoencoder"):
        OfficialDiffusionAutoencoder(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """An 8x8 model run through the official code (``methods.*`` in the golden file), converted once from its
    official checkpoint; a classifier in the official checkpoint layout (3 attributes on its 8-d code; the 40
    CelebA-HQ ones are checked above)."""
    out = tmp_path_factory.mktemp("converted")
    ema = {k[len("methods."):]: v for k, v in GOLDEN.items() if k.startswith("methods.")}
    torch.save({"state_dict": ema}, out / "last.ckpt")
    convert_diffae_checkpoint(out / "last.ckpt", out / "gen", template=META["methods_template"])
    g = torch.Generator().manual_seed(0)
    torch.save({"state_dict": {"classifier.weight": torch.randn(3, 8, generator=g),
                               "classifier.bias": torch.randn(3, generator=g),
                               "conds_mean": torch.randn(1, 8, generator=g) * 0.1,
                               "conds_std": torch.rand(1, 8, generator=g) * 0.2 + 0.1}}, out / "cls.ckpt")
    torch.manual_seed(0)
    return (OfficialDiffusionAutoencoder.from_pretrained(out / "gen"),
            load_diffae_classifier(out / "cls.ckpt", names=NAMES), TinyClassifier(c=3, s=8, k=3).eval(),
            torch.rand(2, 3, 8, 8, generator=g))


@pytest.mark.parametrize("method", ["attack", "gcd", "lig", "descriptors", "causal", "regression"])
def test_every_method_runs_on_a_converted_official_model(converted, method):
    gen, probes, clf, x = converted
    if method == "attack":
        out = LatentCounterfactualAttack(clf, gen).generate(x, target=1, margin=0.0, max_steps=2)
        assert out.latents.free.shape == (2, 8) and torch.equal(out.latents.fixed["x_T"],
                                                                 out.original_latents.fixed["x_T"])
    elif method == "gcd":
        dist = lambda a, b: (a - b).flatten(1).norm(dim=1)  # noqa: E731
        gcd = GlobalCounterfactualDirections(clf, gen, classes=(0, 2), distance=dist, n_hessian=1,
                                             hvp="finite-difference", n_alphas=2,
                                             loss_weights=[(1.0, 0.0)]).fit(x[:1])
        assert gcd.directions_.shape[1] == 8 and torch.isfinite(gcd.directions_).all()
    elif method == "lig":
        out = LatentIntegratedGradients(clf, gen).explain(x, target=1, baseline=torch.zeros(8), n_steps=4)
        assert out.attributions.shape == x.shape and torch.isfinite(out.convergence_delta).all()
    elif method == "descriptors":
        cda = CounterfactualDescriptorAttribution(clf, gen, probes=probes)
        out = cda.explain(x, target=1, max_steps=2)
        assert out.deltas.shape == (2, 3) and cda.descriptor_names == list(NAMES)
    elif method == "causal":
        oracle = lambda imgs: probes.predict(gen.encode_semantic(imgs))  # noqa: E731  the classifier re-reads images
        cf = CounterfactualSufficiencyNecessity(clf, gen, LinearDirections(probes), oracle=oracle)
        res = cf.estimate(latents=gen.encode(x), target=1, n_bootstrap=5)
        assert res.names == list(NAMES) and res.state.shape == (2, 3)
    else:
        reg = lambda imgs: imgs.mean((1, 2, 3))  # noqa: E731
        out = LatentCounterfactualAttack(reg, gen).generate(
            x, target=torch.tensor([0.1, -0.1]), objective=RegressionTarget(0.05, mode="relative", value_range=None),
            max_steps=2)
        assert out.predictions.shape == (2,) and out.latents.free.shape == (2, 8)
