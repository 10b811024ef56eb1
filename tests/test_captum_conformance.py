"""Captum conformance: every attribution class through the checks Captum's own test-suite runs on its methods.

Captum's ``tests/attr/`` checks each algorithm with every target form (``test_targets.py``: a batch against each
example alone, with ``target[i]`` and ``target[i:i+1]``), with additional forward args as tensors, tuples and
non-tensors, with tuple inputs, in ``NoiseTunnel``, with ``internal_batch_size``, with scripted and traced models
(``test_jit.py``) and through ``captum.metrics``. The same checks run here over all seven attribution classes of
``captum_cfx.attr``, on tiny random-weight models (8x8 images, a 3-d latent, 3 classes).

A check that does not apply to a class is left out of that check's parametrisation, with the reason, in
:data:`EXCLUDED` (not skipped: a left-out pair is never run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor, nn

from captum_cfx import VAEGenerator
from captum_cfx.attr import (
    CounterfactualDescriptorAttribution,
    CounterfactualSufficiencyNecessity,
    DiffusionPixelCounterfactual,
    GlobalCounterfactualDirections,
    InterFaceGANEdit,
    LatentCoordinateSearch,
    LatentCounterfactualAttack,
    LatentIntegratedGradients,
)
from captum_cfx.descriptors import LatentProbes
from captum_cfx.interventions import LinearDirections

from .conftest import TinyClassifier, TinyVAE

N, K, SIDE = 4, 3, 8  # examples, classes, image side
TARGET = torch.tensor([0, 2, 2, 0])  # one class per example (GCD asks 0 vs 2)


class Shifted(nn.Module):
    """``clf(x) * scale + shift``: a model with a tensor and a non-tensor extra argument (Captum's
    ``additional_forward_args``), or a tuple member (``inputs=(x, shift)``)."""

    def __init__(self, clf: nn.Module) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, x: Tensor, shift: Tensor | None = None, scale: float = 1.0) -> Tensor:
        out = self.clf(x) * scale
        return out if shift is None else out + shift


@dataclass
class World:
    """The tiny models every case shares (built once per module)."""

    clf: nn.Module
    gen: VAEGenerator
    x: Tensor
    probes: LatentProbes
    oracle: Callable[[Tensor], Tensor]
    ddim: Any


def _world(dtype: torch.dtype = torch.float32) -> World:
    torch.manual_seed(0)
    vae, clf = TinyVAE(d=3, s=SIDE), TinyClassifier(s=SIDE, k=K)
    z = torch.randn(400, 3, generator=torch.Generator().manual_seed(2)) * 2  # latent codes of a "data set"
    with torch.no_grad():  # logits of a few units that cross their decision boundaries within the latent prior
        clf.net[-1].weight.mul_(20.0)
        clf.net[-1].bias.sub_(clf(vae.decode(z)).mean(0))
    vae, clf, z = vae.to(dtype), clf.to(dtype), z.to(dtype)
    gen = VAEGenerator(vae, input_range=(0.0, 1.0), image_shape=(1, SIDE, SIDE))
    x = torch.rand(N, 1, SIDE, SIDE).to(dtype)
    # attributes read from images (the oracle); latent probes fitted on what the oracle reads of decoded codes
    v = torch.randn(SIDE * SIDE, 2, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        center = (vae.decode(z).flatten(1) @ v).median(0).values

        def oracle(images: Tensor) -> Tensor:
            return torch.sigmoid(8.0 * (images.flatten(1) @ v - center))

        labels = (oracle(vae.decode(z)) > 0.5).to(dtype)
    probes = LatentProbes().fit(z, labels, ["a", "b"])
    return World(clf, gen, x, probes, oracle, _ddim(dtype))


def _ddim(dtype: torch.dtype) -> Any:
    from diffusers import DDIMScheduler, UNet2DModel

    from captum_cfx import DDIMGenerator

    torch.manual_seed(3)
    unet = UNet2DModel(sample_size=SIDE, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval().to(dtype)
    return DDIMGenerator(unet, DDIMScheduler(num_train_timesteps=50), num_inference_steps=2)


def _pixel_distance(images: Tensor, reference: Tensor) -> Tensor:
    return (images - reference).pow(2).flatten(1).mean(1)


@dataclass
class Case:
    """One attribution class: how to build it around a model, and small ``attribute`` settings."""

    name: str
    build: Callable[[World, Callable[..., Tensor], Any], Any]  # (world, forward_func, fit args) -> method
    kwargs: dict[str, Any] = field(default_factory=dict)
    chunk: dict[str, Any] = field(default_factory=dict)  # its batching argument, set to 1
    seeded: bool = False  # takes a torch.Generator as `generator`

    def method(self, world: World, model: Callable[..., Tensor] | None = None, fit_args: Any = None) -> Any:
        return self.build(world, world.clf if model is None else model, fit_args)

    def attribute(self, method: Any, inputs: Any, **kw: Any) -> Any:
        call = dict(self.kwargs, **kw)
        if self.seeded:
            call.setdefault("generator", torch.Generator().manual_seed(0))
        return method.attribute(inputs, **call)


def _gcd(w: World, f: Callable[..., Tensor], fit_args: Any) -> GlobalCounterfactualDirections:
    gcd = GlobalCounterfactualDirections(f, w.gen, classes=(0, 2), distance=_pixel_distance, n_hessian=0, n_alphas=8,
                                         alpha_max=8.0)
    return gcd.fit(w.x[:1], additional_forward_args=fit_args)


def _csn(w: World, f: Callable[..., Tensor], fit_args: Any) -> CounterfactualSufficiencyNecessity:
    return CounterfactualSufficiencyNecessity(f, w.gen, LinearDirections(w.probes), oracle=w.oracle)


# settings that never stop early (margin 100), so results depend continuously on the inputs
CASES = {c.name: c for c in [
    Case("LatentCounterfactualAttack", lambda w, f, _: LatentCounterfactualAttack(f, w.gen),
         dict(max_steps=4, margin=100.0), dict(internal_batch_size=1)),
    Case("LatentCoordinateSearch", lambda w, f, _: LatentCoordinateSearch(f, w.gen),
         dict(values=torch.linspace(-3.0, 3.0, 5), max_changes=2, margin=100.0), dict(internal_batch_size=1)),
    Case("CounterfactualDescriptorAttribution",
         lambda w, f, _: CounterfactualDescriptorAttribution(f, w.gen, probes=w.probes),
         dict(max_steps=4, margin=100.0), dict(internal_batch_size=1)),
    Case("GlobalCounterfactualDirections", _gcd, {}, dict(internal_batch_size=1)),
    Case("LatentIntegratedGradients", lambda w, f, _: LatentIntegratedGradients(f, w.gen),
         dict(n_steps=4, walk_steps=4, threshold=0.2, max_alpha=6.0), dict(internal_batch_size=1)),
    Case("CounterfactualSufficiencyNecessity", _csn, {}, dict(batch_size=1), seeded=True),
    Case("InterFaceGANEdit", lambda w, f, _: InterFaceGANEdit(f, w.gen, w.probes), dict(descriptor="a")),
    Case("DiffusionPixelCounterfactual", lambda w, f, _: DiffusionPixelCounterfactual(f, w.ddim),
         dict(max_steps=2, margin=100.0, step_size=0.05, filter_steps=1, noise_level=0.3, stop_on="filtered"),
         dict(internal_batch_size=1), seeded=True),
]}

_PIXEL_NOISE = ("its filter and inpainting noise is drawn for the whole batch from one generator, so an example "
                "run alone (or in another chunk) sees other noise; same seed and same batch give the same output "
                "(checked by `same_seed`)")
_SCORES = ("returns per-{what} scores (N, k), not a map over the input's pixels; infidelity multiplies attributions "
           "with input perturbations")
_BLIND = ("model-blind: the InterFaceGAN edit is a closed-form step along a probe normal that never reads the model, "
          "so the model's arguments cannot change its map (they reach the model in `generate`'s predictions, "
          "checked by `test_interfacegan_passes_the_arguments_to_the_model`)")
#: (class, check) pairs that are not run, and why.
EXCLUDED: dict[tuple[str, str], str] = {
    ("DiffusionPixelCounterfactual", "batch_vs_each_example"): _PIXEL_NOISE,
    ("DiffusionPixelCounterfactual", "internal_batch_size"): _PIXEL_NOISE,
    ("DiffusionPixelCounterfactual", "sensitivity_of_unperturbed_inputs"): _PIXEL_NOISE,
    ("DiffusionPixelCounterfactual", "float64_matches_float32"): "its noise is drawn in the inputs' dtype, so a "
    "float64 run draws other noise than a float32 run with the same seed (the float64 run itself is checked)",
    ("InterFaceGANEdit", "internal_batch_size"): "closed form: one encode, one step, one decode; no batching argument",
    ("InterFaceGANEdit", "forward_args_reach_the_model"): _BLIND,
    ("InterFaceGANEdit", "tuple_members_reach_the_model"): _BLIND,
    ("CounterfactualDescriptorAttribution", "infidelity"): _SCORES.format(what="descriptor"),
    ("CounterfactualSufficiencyNecessity", "infidelity"): _SCORES.format(what="attribute"),
}
CHECKS = ("target_forms", "one_element_target_for_one_example", "forward_args_containers",
          "forward_args_reach_the_model", "tuple_members_reach_the_model", "tuple_in_tuple_out",
          "batch_vs_each_example", "internal_batch_size", "noise_tunnel", "sensitivity_max",
          "sensitivity_of_unperturbed_inputs", "infidelity", "scripted_and_traced", "float64",
          "float64_matches_float32", "channels_last", "same_seed")


def cases(check: str) -> list[str]:
    assert check in CHECKS
    return [name for name in CASES if (name, check) not in EXCLUDED]


@pytest.fixture(scope="module")
def world() -> World:
    return _world()


@pytest.fixture(scope="module")
def methods(world: World) -> dict[str, Any]:
    return {name: case.method(world) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def reference(world: World, methods: dict[str, Any]) -> dict[str, Tensor]:
    """Each class's attributions for the whole batch with a per-example target tensor."""
    return {name: CASES[name].attribute(methods[name], world.x, target=TARGET) for name in CASES}


def close(a: Any, b: Any, atol: float = 1e-5) -> None:
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    assert len(a) == len(b)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=atol, rtol=1e-4)


def differs(a: Tensor, b: Tensor) -> bool:
    return not torch.allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------------------------------------- the checks
def test_exclusions_name_real_cases_and_checks() -> None:
    for (name, check), why in EXCLUDED.items():
        assert name in CASES and check in CHECKS and len(why) > 20
    from captum.attr import Attribution

    import captum_cfx.attr as attr

    public = {n for n in attr.__all__
              if isinstance(getattr(attr, n), type) and issubclass(getattr(attr, n), Attribution)}
    assert set(CASES) == public  # every public attribution class is checked


@pytest.mark.parametrize("name", CASES)
def test_reference_is_not_trivial(name: str, world: World, reference: dict[str, Tensor]) -> None:
    ref = reference[name]
    assert isinstance(ref, Tensor) and ref.shape[0] == N and torch.isfinite(ref).all()
    assert ref.abs().sum() > 0, "an all-zero reference would make every equality check below pass trivially"
    if name not in ("CounterfactualDescriptorAttribution", "CounterfactualSufficiencyNecessity"):
        assert ref.shape == world.x.shape


@pytest.mark.parametrize("name", cases("target_forms"))
def test_target_forms(name: str, world: World, methods: dict[str, Any], reference: dict[str, Tensor]) -> None:
    case, m = CASES[name], methods[name]
    close(case.attribute(m, world.x, target=TARGET.tolist()), reference[name])  # list of ints
    one = case.attribute(m, world.x, target=2)  # int: one class for all
    close(case.attribute(m, world.x, target=torch.full((N,), 2)), one)
    close(case.attribute(m, world.x, target=torch.tensor([2])), one)  # one-element tensor: broadcast
    close(case.attribute(m, world.x, target=torch.tensor(2)), one)  # 0-d tensor
    close(case.attribute(m, world.x, target=(2,)), one)  # one-element tuple (Captum's output index)


@pytest.mark.parametrize("name", cases("one_element_target_for_one_example"))
def test_one_element_target_for_one_example(name: str, world: World, methods: dict[str, Any]) -> None:
    case, m = CASES[name], methods[name]
    want = case.attribute(m, world.x[:1], target=2)
    for t in (torch.tensor([2]), torch.tensor([[2]]), [2], torch.tensor(2), (2,)):
        close(case.attribute(m, world.x[:1], target=t), want)


@pytest.mark.parametrize("name", cases("forward_args_containers"))
def test_forward_args_containers(name: str, world: World) -> None:
    """The same model arguments as a tuple, as a tensor (the rest bound) and as a later tuple member agree."""
    case, shifted = CASES[name], Shifted(world.clf)
    shift = torch.linspace(-3, 3, N * K).view(N, K)
    m = case.method(world, shifted, fit_args=(shift[:1], 2.0))
    as_tuple = case.attribute(m, world.x, target=TARGET, additional_forward_args=(shift, 2.0))
    bound = case.method(world, lambda x, s: shifted(x, s, 2.0), fit_args=shift[:1])
    close(case.attribute(bound, world.x, target=TARGET, additional_forward_args=shift), as_tuple)
    close(case.attribute(m, (world.x, shift), target=TARGET, additional_forward_args=2.0)[0], as_tuple)
    # a non-tensor alone
    scaled = case.method(world, lambda x, scale: world.clf(x) * scale, fit_args=3.0)
    times3 = case.method(world, lambda x: world.clf(x) * 3.0)
    close(case.attribute(scaled, world.x, target=TARGET, additional_forward_args=3.0),
          case.attribute(times3, world.x, target=TARGET))


@pytest.mark.parametrize("name", cases("forward_args_reach_the_model"))
def test_forward_args_reach_the_model(name: str, world: World) -> None:
    """Each example gets its own row of a tensor argument: the batch equals the examples run alone, and a
    different argument gives a different result."""
    case, shifted = CASES[name], Shifted(world.clf)
    shift = torch.zeros(N, K)
    shift[:, 2] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # moves the decision boundary of class 2
    m = case.method(world, shifted, fit_args=(torch.zeros(1, K),))
    batch = case.attribute(m, world.x, target=TARGET, additional_forward_args=(shift,))
    assert differs(batch, case.attribute(m, world.x, target=TARGET, additional_forward_args=(-shift,)))
    if (name, "batch_vs_each_example") not in EXCLUDED:
        for i in range(N):
            close(case.attribute(m, world.x[i:i + 1], target=TARGET[i], additional_forward_args=(shift[i:i + 1],)),
                  batch[i:i + 1])


@pytest.mark.parametrize("name", cases("tuple_members_reach_the_model"))
def test_tuple_members_reach_the_model(name: str, world: World) -> None:
    """A later tuple member is a model input: it is passed to the model, not dropped."""
    case, shifted = CASES[name], Shifted(world.clf)
    shift = torch.zeros(N, K)
    shift[:, 2] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # moves the decision boundary of class 2
    m = case.method(world, shifted, fit_args=torch.zeros(1, K))
    out = case.attribute(m, (world.x, shift), target=TARGET)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[1].shape == shift.shape and out[1].abs().sum() == 0  # the model's extra input gets no attribution
    close(out[0], case.attribute(m, world.x, target=TARGET, additional_forward_args=shift))
    assert differs(out[0], case.attribute(m, (world.x, -shift), target=TARGET)[0])


@pytest.mark.parametrize("name", cases("tuple_in_tuple_out"))
def test_tuple_in_tuple_out(name: str, world: World, methods: dict[str, Any], reference: dict[str, Tensor]) -> None:
    out = CASES[name].attribute(methods[name], (world.x,), target=TARGET)
    assert isinstance(out, tuple) and len(out) == 1
    close(out[0], reference[name])


@pytest.mark.parametrize("name", cases("batch_vs_each_example"))
def test_batch_vs_each_example(name: str, world: World, methods: dict[str, Any],
                               reference: dict[str, Tensor]) -> None:
    """Captum's ``test_targets.py``: example ``i`` alone, with ``target[i]`` and ``target[i:i+1]``."""
    case, m = CASES[name], methods[name]
    for i in range(N):
        close(case.attribute(m, world.x[i:i + 1], target=TARGET[i]), reference[name][i:i + 1])
        close(case.attribute(m, world.x[i:i + 1], target=TARGET[i:i + 1]), reference[name][i:i + 1])


@pytest.mark.parametrize("name", cases("internal_batch_size"))
def test_internal_batch_size(name: str, world: World, methods: dict[str, Any], reference: dict[str, Tensor]) -> None:
    case = CASES[name]
    close(case.attribute(methods[name], world.x, target=TARGET, **case.chunk), reference[name])


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("name", cases("noise_tunnel"))
def test_noise_tunnel(name: str, nt_type: str, world: World, methods: dict[str, Any]) -> None:
    """``NoiseTunnel`` with a one-element target, against the same noisy copies attributed by hand."""
    case, m = CASES[name], methods[name]
    x, samples, sd = world.x[:1], 3, 0.05
    kw = dict(case.kwargs, **({"generator": torch.Generator().manual_seed(0)} if case.seeded else {}))
    torch.manual_seed(7)
    with torch.no_grad():  # as a user would call it, e.g. under an evaluation loop
        nt = NoiseTunnel(m).attribute(x, nt_type=nt_type, nt_samples=samples, stdevs=sd, target=torch.tensor([2]),
                                      **kw)
    torch.manual_seed(7)  # NoiseTunnel's noise: one normal draw for the expanded batch
    noisy = x.repeat_interleave(samples, 0) + torch.normal(0, torch.tensor(sd).repeat(x.repeat(samples, 1, 1, 1).shape))
    each = case.attribute(m, noisy, target=2)
    mean, sq = each.mean(0, keepdim=True), each.pow(2).mean(0, keepdim=True)
    want = {"smoothgrad": mean, "smoothgrad_sq": sq, "vargrad": sq - mean * mean}[nt_type]
    assert nt.shape == want.shape
    close(nt, want, atol=1e-5)


@pytest.mark.parametrize("name", cases("sensitivity_max"))
def test_sensitivity_max(name: str, world: World, methods: dict[str, Any]) -> None:
    """``sensitivity_max`` passes a tuple of inputs and expands them, but not a one-element target."""
    case, m = CASES[name], methods[name]
    torch.manual_seed(0)
    sens = sensitivity_max(m.attribute, world.x[:2], target=torch.tensor([2]), n_perturb_samples=2,
                           perturb_radius=0.02, **case.kwargs)
    assert sens.shape == (2,) and torch.isfinite(sens).all() and (sens >= 0).all()


@pytest.mark.parametrize("name", cases("sensitivity_of_unperturbed_inputs"))
def test_sensitivity_of_unperturbed_inputs(name: str, world: World, methods: dict[str, Any]) -> None:
    """With a perturbation that changes nothing, the maximal sensitivity is exactly what it must be: 0."""
    case, m = CASES[name], methods[name]
    sens = sensitivity_max(m.attribute, world.x[:2], perturb_func=lambda inp: inp, target=TARGET[:2],
                           n_perturb_samples=2, **case.kwargs)
    close(sens, torch.zeros(2))


@pytest.mark.parametrize("name", cases("infidelity"))
def test_infidelity(name: str, world: World, methods: dict[str, Any], reference: dict[str, Tensor]) -> None:
    def perturb(inp: Any) -> tuple[Any, Any]:
        if isinstance(inp, tuple):
            noise = tuple(0.02 * torch.randn_like(t) for t in inp)
            return noise, tuple(t - e for t, e in zip(inp, noise))
        noise = 0.02 * torch.randn_like(inp)
        return noise, inp - noise

    torch.manual_seed(0)
    inf = infidelity(world.clf, perturb, world.x, reference[name], target=TARGET, n_perturb_samples=3)
    assert inf.shape == (N,) and torch.isfinite(inf).all() and (inf >= 0).all()
    # tuple inputs with the tuple this class returns for them, and a one-element target
    attr = CASES[name].attribute(methods[name], (world.x,), target=torch.tensor([2]))
    tup = infidelity(world.clf, perturb, (world.x,), attr, target=torch.tensor([2]), n_perturb_samples=2)
    assert tup.shape == (N,) and torch.isfinite(tup).all() and (tup >= 0).all()


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # torch 2.13 deprecates TorchScript
@pytest.mark.parametrize("name", cases("scripted_and_traced"))
def test_scripted_and_traced(name: str, world: World, reference: dict[str, Tensor]) -> None:
    case = CASES[name]
    for model in (torch.jit.script(world.clf), torch.jit.trace(world.clf, world.x)):
        close(case.attribute(case.method(world, model), world.x, target=TARGET), reference[name])


@pytest.fixture(scope="module")
def world64() -> World:
    return _world(torch.float64)


@pytest.mark.parametrize("name", cases("float64"))
def test_float64(name: str, world64: World, reference: dict[str, Tensor]) -> None:
    case, w64 = CASES[name], world64
    out = case.attribute(case.method(w64), w64.x, target=TARGET)
    assert out.dtype == torch.float64 and out.shape == reference[name].shape and torch.isfinite(out).all()
    if (name, "float64_matches_float32") not in EXCLUDED:
        close(out.float(), reference[name], atol=1e-3)


@pytest.mark.parametrize("name", cases("channels_last"))
def test_channels_last(name: str, world: World, methods: dict[str, Any], reference: dict[str, Tensor]) -> None:
    x = world.x.contiguous(memory_format=torch.channels_last)
    close(CASES[name].attribute(methods[name], x, target=TARGET), reference[name])


@pytest.mark.parametrize("name", cases("same_seed"))
def test_same_seed(name: str, world: World, methods: dict[str, Any]) -> None:
    case, m = CASES[name], methods[name]
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        runs.append(case.attribute(m, world.x, target=TARGET))
    assert torch.equal(runs[0], runs[1])


def test_interfacegan_passes_the_arguments_to_the_model(world: World) -> None:
    """The model-blind edit still evaluates the model with every argument (tuple member or extra argument)."""
    shifted = Shifted(world.clf)
    edit = CASES["InterFaceGANEdit"].method(world, shifted)
    shift = torch.zeros(N, K)
    shift[:, 2] = 50.0
    via_tuple = edit.generate((world.x, shift), target=TARGET, descriptor="a")
    via_args = edit.generate(world.x, target=TARGET, additional_forward_args=(shift, 1.0), descriptor="a")
    assert (via_tuple.predictions.argmax(1) == 2).all() and torch.equal(via_tuple.predictions, via_args.predictions)


@pytest.mark.parametrize("name", CASES)
def test_public_signatures_use_captum_typing(name: str) -> None:
    """``attribute`` (and ``generate`` where there is one) take Captum's ``TensorOrTupleOfTensorsGeneric`` and
    ``TargetType`` (plus numbers, for regression targets)."""
    import inspect

    import captum_cfx.attr

    cls = getattr(captum_cfx.attr, name)
    for meth in ("attribute", "generate"):
        if hasattr(cls, meth):
            params = inspect.signature(getattr(cls, meth)).parameters
            assert params["inputs"].annotation == "TensorOrTupleOfTensorsGeneric", (meth, params["inputs"])
            assert params["target"].annotation.startswith("TargetType"), (meth, params["target"])


def test_latent_ig_return_type_follows_return_convergence_delta(methods: dict[str, Any]) -> None:
    import typing

    overloads = typing.get_overloads(LatentIntegratedGradients.attribute)
    assert [o.__annotations__["return_convergence_delta"] for o in overloads] == ["Literal[True]", "Literal[False]"]
    assert [o.__annotations__["return"] for o in overloads] == ["tuple[TensorOrTupleOfTensorsGeneric, Tensor]",
                                                                "TensorOrTupleOfTensorsGeneric"]
    # its maps satisfy completeness, as captum.attr.IntegratedGradients' do (which reports True too)
    assert methods["LatentIntegratedGradients"].multiplies_by_inputs is True
