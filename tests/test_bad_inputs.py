"""The bad-input matrix: every public entry point answers odd input with a clear ValueError/TypeError that
names the argument (never a traceback from deep inside torch), plus hypothesis property tests."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import captum_cfx
from captum_cfx import (
    AutoencoderGenerator,
    DDIMGenerator,
    DiffusersVAEGenerator,
    Flip,
    Latent,
    LatentAdam,
    LatentCoordinateSearch,
    LatentCounterfactualAttack,
    LatentIntegratedGradients,
    RegressionTarget,
    TargetClass,
    VAEGenerator,
)
from captum_cfx.metrics import proximity
from captum_cfx.runner import RunConfig, open_data, run_sharded
from captum_cfx.zoo import load_generator, load_pretrained

from .conftest import TinyClassifier, TinyVAE

PACKAGE = Path(captum_cfx.__file__).parent


def _world():
    torch.manual_seed(0)
    vae, clf = TinyVAE(), TinyClassifier()
    return vae, clf, VAEGenerator(vae, image_shape=(1, 8, 8)), torch.rand(4, 1, 8, 8)


def _attack(**kw):
    _, clf, gen, x = _world()
    x = kw.pop("x", x)
    model = kw.pop("model", clf)
    gen = kw.pop("gen", gen)
    return lambda: LatentCounterfactualAttack(model, gen).generate(x, **{"target": 1, "max_steps": 3, **kw})


def _search(**kw):
    _, clf, gen, x = _world()
    x = kw.pop("x", x)
    model = kw.pop("model", clf)
    return lambda: LatentCoordinateSearch(model, gen).generate(x, **{"target": 1, **kw})


class _NoGradDecoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.vae = TinyVAE()

    def encode(self, x):
        return self.vae.encode(x)

    def decode(self, z):
        with torch.no_grad():
            return self.vae.decode(z)


def _tiny_kl():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(4,), norm_num_groups=2,
                         latent_channels=2, sample_size=8, layers_per_block=1)


def _tiny_unet_sched():
    from diffusers import DDIMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 4), norm_num_groups=2,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1)
    return unet, DDIMScheduler(num_train_timesteps=10)


def _aw():
    from captum_cfx.datasets import AttributeWorld

    return AttributeWorld()


def _meta_generator():
    gen = VAEGenerator(TinyVAE(), image_shape=(1, 8, 8))
    return gen.to("meta")


CASES = {
    # images
    "rank 3 images": (_attack(x=torch.rand(4, 8, 8)), ValueError, r"`inputs` must be a batch of images"),
    "wrong channels": (_attack(x=torch.rand(4, 3, 8, 8)), ValueError, "C == 1"),
    "wrong size": (_attack(x=torch.rand(4, 1, 9, 9)), ValueError, r"\(N, 1, 8, 8\)"),
    "integer images": (_attack(x=torch.ones(4, 1, 8, 8, dtype=torch.uint8)), TypeError, "floating-point"),
    "NaN images": (_attack(x=torch.full((4, 1, 8, 8), float("nan"))), ValueError, "NaN or Inf"),
    "Inf images": (_attack(x=torch.full((4, 1, 8, 8), float("inf"))), ValueError, "NaN or Inf"),
    "0-255 images": (_attack(x=torch.rand(4, 1, 8, 8) * 255), ValueError, "input range"),
    "numpy images": (_attack(x=np.zeros((4, 1, 8, 8), np.float32)), TypeError, "`inputs` must be a torch.Tensor"),
    "list images": (_attack(x=[torch.rand(4, 1, 8, 8)]), TypeError, "`inputs` must be a torch.Tensor"),
    "tuple batch mismatch": (_attack(x=(torch.rand(4, 1, 8, 8), torch.rand(3, 2))), ValueError, r"`inputs\[1\]`"),
    # targets
    "target too large": (_attack(target=3), ValueError, r"class indices in \[0, 2\]"),
    "target negative": (_attack(target=[-1, 0, 1, 2]), ValueError, "class indices"),
    "target wrong length": (_attack(target=[0, 1]), ValueError, "one entry per example"),
    "float targets": (_attack(target=torch.tensor([0.0, 1.0, 1.0, 0.0])), TypeError, "integer class indices"),
    "2-D targets": (_attack(target=torch.zeros(4, 2, dtype=torch.long)), ValueError, "1-D tensor"),
    "bool target": (_attack(target=True), TypeError, "got bool"),
    "string target": (_attack(target="cat"), TypeError, "`target` must be an int"),
    "missing target": (_attack(target=None), ValueError, "`target` is required"),
    # settings
    "negative max_steps": (_attack(max_steps=-2), ValueError, "`max_steps`"),
    "zero lr": (_attack(lr=0.0), ValueError, "`lr`"),
    "unknown objective": (_attack(objective="hinge"), ValueError, "`objective`"),
    "unknown optimizer": (_attack(optimizer="lbfgs"), ValueError, "`optimizer`"),
    "bad radius": (_attack(radius=-1.0), ValueError, "`radius`"),
    "bad source": (_attack(source="decoder"), ValueError, "`source`"),
    "flip on one logit": (_attack(model=lambda x: x.flatten(1)[:, :1], objective=Flip(), target=None), ValueError,
                          "ProbabilityThreshold"),
    # the coordinate search: the same front-end, its own settings
    "search: wrong size": (_search(x=torch.rand(4, 1, 9, 9)), ValueError, r"\(N, 1, 8, 8\)"),
    "search: NaN images": (_search(x=torch.full((4, 1, 8, 8), float("nan"))), ValueError, "NaN or Inf"),
    "search: target too large": (_search(target=3), ValueError, r"class indices in \[0, 2\]"),
    "search: missing target": (_search(target=None), ValueError, "`target` is required"),
    "search: model returns numpy": (_search(model=lambda x: np.zeros((len(x), 3))), TypeError,
                                    "`forward_func` must return a tensor"),
    "search: zero max_changes": (_search(max_changes=0), ValueError, "`max_changes`"),
    "search: values of another latent": (_search(values=torch.zeros(5, 3)), ValueError, "`values` must be"),
    "search: one input, no values": (_search(x=torch.rand(1, 1, 8, 8)), ValueError, "`values` must be given"),
    # models and generators
    "generator on another device": (_attack(gen=_meta_generator()), ValueError, "`generator` is on meta"),
    "decoder not differentiable": (_attack(gen=VAEGenerator(_NoGradDecoder(), image_shape=(1, 8, 8))), TypeError,
                                   "`generator.decode`.*not differentiable"),
    "model not differentiable": (_attack(model=lambda x: TinyClassifier()(x).detach()), TypeError,
                                 "`forward_func` is not differentiable"),
    "model returns numpy": (_attack(model=lambda x: np.zeros((len(x), 3))), TypeError,
                            "`forward_func` must return a tensor"),
    "generator not a LatentGenerator": (lambda: LatentCounterfactualAttack(TinyClassifier(), TinyVAE()), TypeError,
                                        "`generator` must be a captum_cfx"),
    "encoder/decoder mismatch": (lambda: AutoencoderGenerator(lambda x: x.flatten(1)[:, :3],
                                                              lambda z: z.view(-1, 1, 2, 2), image_shape=(1, 8, 8)),
                                 ValueError, "`encoder` and `decoder` do not match"),
    "VAE without decode": (lambda: VAEGenerator(torch.nn.Linear(2, 2)), TypeError, "`vae` must have callable"),
    "bad image_shape": (lambda: VAEGenerator(TinyVAE(), image_shape=(8, 8)), ValueError, "`image_shape`"),
    "diffusers wrong model": (lambda: DiffusersVAEGenerator(TinyVAE()), TypeError, "`model` must be a diffusers"),
    "latent batch mismatch": (lambda: Latent(torch.zeros(3, 2), {"xT": torch.zeros(2, 1)}), ValueError,
                              r"`fixed\['xT'\]`"),
    # objectives
    "NaN regression target": (lambda: RegressionTarget().prepare(torch.zeros(2), [0.1, float("nan")]),
                              ValueError, "NaN"),
    "regression target length": (lambda: RegressionTarget().prepare(torch.zeros(3), [0.1, 0.2]), ValueError,
                                 "one value per example"),
    "threshold out of range": (lambda: TargetClass(threshold=0.0), ValueError, "`threshold`"),
    # zoo and files
    "unknown zoo name": (lambda: load_pretrained("resnet50"), ValueError, "`name` must be one of"),
    "zoo name not str": (lambda: load_pretrained(None), TypeError, "`name` must be a str"),
    "not a generator": (lambda: load_generator("mnist-oracle"), ValueError, "`name` must be a generator"),
    "missing data": (lambda: open_data("/nonexistent/data.npz"), ValueError, "is none of these"),
    "shard size zero": (lambda: run_sharded(RunConfig(data="mnist-test", shard_size=0, limit=4), "/tmp/cfx_bad",
                                            lambda x, y, s: {}, progress=False), ValueError, "`shard_size`"),
    # non-finite and mistyped hyperparameters (each names the argument)
    "inf lr": (_attack(lr=float("inf")), ValueError, "`lr` must be a finite number; got inf"),
    "nan radius": (_attack(radius=float("nan")), ValueError, "`radius` must be a finite number; got nan"),
    "nan distance_penalty": (_attack(distance_penalty=float("nan")), ValueError, "`distance_penalty` must be a finite"),
    "inf margin": (_attack(margin=float("inf")), ValueError, "`margin` must be a finite number; got inf"),
    "string margin": (_attack(margin="6"), TypeError, "`margin` must be a real number; got str '6'"),
    "adam betas out of range": (lambda: LatentAdam(betas=(0.9, 1.5)), ValueError, r"`betas\[1\]` must be in \[0, 1\)"),
    "adam betas nan": (lambda: LatentAdam(betas=(float("nan"), 0.9)), ValueError, r"`betas\[0\]` must be a finite"),
    "adam betas not a pair": (lambda: LatentAdam(betas=0.9), TypeError, "`betas` must be a pair"),
    "adam eps zero": (lambda: LatentAdam(eps=0.0), ValueError, r"`eps` must be > 0; got 0.0"),
    "LIG nan max_alpha": (lambda: LatentIntegratedGradients(*_world()[1:3]).explain(
        _world()[3], target=1, max_alpha=float("nan")), ValueError, "`max_alpha` must be a finite number"),
    "nan tolerance": (lambda: RegressionTarget(tolerance=float("nan")), ValueError, "`tolerance` must be a finite"),
    "nan threshold": (lambda: TargetClass(threshold=float("nan")), ValueError, "`threshold` must be a finite"),
    # inputs, generator and model that disagree
    "decoder size differs from inputs": (_attack(gen=AutoencoderGenerator(
        lambda x: x.flatten(1)[:, :4], lambda z: torch.zeros(len(z), 1, 9, 9) + z.sum() * 0)), ValueError,
        r"`generator.decode` must return images shaped like `inputs` \(4, 1, 8, 8\); got \(4, 1, 9, 9\)"),
    "images barely out of range": (_attack(x=torch.rand(4, 1, 8, 8) * 1.9 - 0.45), ValueError,
                                   "range_tolerance"),
    "float64 inputs, float32 models": (_attack(x=torch.rand(4, 1, 8, 8, dtype=torch.float64)), TypeError,
                                       r"`inputs` must have the dtype of `generator`'s parameters \(torch.float32\)"),
    "float16 inputs, float32 models": (_attack(x=torch.rand(4, 1, 8, 8).half()), TypeError,
                                       "`inputs` must have the dtype"),
    "model output batch size": (_attack(model=lambda x: TinyClassifier()(x)[:2]), ValueError,
                                r"`forward_func` must return one row per input, shape \(4, ...\); got \(2, 3\)"),
    "string input_range": (lambda: VAEGenerator(TinyVAE(), input_range="ab"), TypeError,
                           r"`input_range` must be a \(low, high\) pair of numbers; got 'ab'"),
    "reversed input_range": (lambda: VAEGenerator(TinyVAE(), input_range=(1, 0)), ValueError, "low < high"),
    "encoder fails in the probe": (lambda: AutoencoderGenerator(lambda x: x.view(len(x), 7, -1),
                                                                lambda z: z, image_shape=(1, 8, 8)),
                                   ValueError, "`encoder` fails on a zero image batch"),
    "diffusers VAE without input_range": (lambda: DiffusersVAEGenerator(_tiny_kl(), input_range=None), ValueError,
                                          "`input_range` must be a \\(low, high\\) pair: DiffusersVAEGenerator"),
    "DDIM without input_range": (lambda: DDIMGenerator(*_tiny_unet_sched(), input_range=None), ValueError,
                                 "`input_range` must be a \\(low, high\\) pair: DDIMGenerator"),
    "string encode_level": (lambda: DDIMGenerator(*_tiny_unet_sched(), encode_level="0.5"), TypeError,
                            "`encode_level` must be a real number"),
    # attribute-world interventions
    "do binary factor 7": (lambda: _aw().sample(2, do={"smile": 7}), ValueError,
                           r"`do\['smile'\]` sets a binary factor: values must be 0 or 1; got \[7.0, 7.0\]"),
    "do continuous nan": (lambda: _aw().sample(2, do={"age": float("nan")}), ValueError,
                          r"`do\['age'\]` must be finite"),
    "do continuous out of range": (lambda: _aw().sample(2, do={"age": 1.5}), ValueError,
                                   r"`do\['age'\]` sets a continuous factor in \[0, 1\]"),
    "do copies continuous into binary": (lambda: _aw().sample(4, do={"hat": "age"}), ValueError,
                                         r"`do\['hat'\]` sets a binary factor"),
    "do not a number": (lambda: _aw().sample(2, do={"age": object()}), TypeError, r"`do\['age'\]` must be a number"),
    # metrics
    "proximity shapes": (lambda: proximity(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "same shape"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_matrix(case):
    fn, exc, match = CASES[case]
    with pytest.raises(exc, match=match) as e:
        fn()
    # raised by captum_cfx's own checks, never from deep inside torch or numpy
    assert Path(e.traceback[-1].path).is_relative_to(PACKAGE), e.traceback[-1].path


@settings(max_examples=12, deadline=None)
@given(n=st.integers(0, 5), dtype=st.sampled_from([torch.float32, torch.float64]),
       steps=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_attack_shapes_dtypes_property(n, dtype, steps, seed):
    torch.manual_seed(0)
    vae, clf = TinyVAE().to(dtype), TinyClassifier().to(dtype)
    gen = VAEGenerator(vae, image_shape=(1, 8, 8))
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    atk = LatentCounterfactualAttack(clf, gen)
    out = atk.generate(x, target=[i % 3 for i in range(n)], max_steps=steps)
    assert out.counterfactuals.shape == x.shape and out.counterfactuals.dtype == dtype
    assert out.success.shape == (n,) and out.success.dtype == torch.bool
    assert out.n_steps.shape == (n,) and (out.n_steps <= steps).all()
    maps = atk.attribute(x, target=[i % 3 for i in range(n)], max_steps=steps)
    assert maps.shape == x.shape and torch.isfinite(maps).all()


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_image_check_property(shape):
    gen = VAEGenerator(TinyVAE(), image_shape=(1, 8, 8))
    x = torch.rand(*shape)
    if len(shape) != 4:
        with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
            gen.encode(x)
    else:
        with pytest.raises(ValueError, match="`x` must be"):
            gen.encode(x)  # never (1, 8, 8) with sides <= 4


# ----------------------------------------------------------------------------- hostile zoo files
def _hostile_folder(tmp_path, cls="os:system", config=None, name="evil", weights=None, generator=None):
    import json

    from safetensors.torch import save_file

    folder = tmp_path / "untrusted"
    folder.mkdir(exist_ok=True)
    cfg = {"class": cls, "config": config if config is not None else {}}
    if generator is not None:
        cfg["generator"] = generator
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    save_file(weights if weights is not None else {"w": torch.zeros(1)}, str(folder / f"{name}.safetensors"))
    return folder


def test_zoo_json_cannot_run_code(tmp_path, monkeypatch):
    """`{"class": "os:system"}` is refused before anything is imported or called: the marker never appears."""
    import sys

    from captum_cfx.cli import main

    marker = tmp_path / "PWNED"
    folder = _hostile_folder(tmp_path, config={"command": f"touch {marker}"})
    # a module that would announce its import: a JSON naming it must not import it
    (tmp_path / "evilmod_cfx.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Boom: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _hostile_folder(tmp_path, cls="evilmod_cfx:Boom", name="evil2", generator={"wrapper": "VAEGenerator"})
    with pytest.raises(ValueError, match=r"`class` must be one of the registered model classes.*got 'os:system'"):
        load_pretrained("evil", weights_dir=folder)
    with pytest.raises(ValueError, match="`class` must be one of the registered"):
        load_generator("evil2", weights_dir=folder)
    rel = "/".join([".."] * 12) + str(folder / "evil")
    with pytest.raises(ValueError, match="without path separators"):
        load_pretrained(rel)
    assert main(["explain", "--generator", rel, "--n", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert not marker.exists() and "evilmod_cfx" not in sys.modules
    assert not (tmp_path / "o").exists()


def test_zoo_generator_wrapper_is_allow_listed(tmp_path):
    from captum_cfx.zoo import load_pretrained as lp

    weights = lp("mnist-classifier").state_dict()
    folder = _hostile_folder(tmp_path, cls="MNISTClassifier", config={"width": 32, "hidden": 128, "dropout": 0.3},
                             weights=weights, generator={"wrapper": "torch.load"})
    with pytest.raises(ValueError, match=r"`generator.wrapper` must be one of .*got 'torch.load'"):
        load_generator("evil", weights_dir=folder)


@pytest.mark.parametrize("name", ["../mnist-vae", "a/b", "a\\b", "..", ".hidden", "", "x" * 300, "mnist-vae/"])
def test_zoo_names_are_plain(name):
    with pytest.raises(ValueError, match="`name` must be a model name"):
        load_pretrained(name)


def test_zoo_config_bounded_before_allocation(tmp_path):
    import time

    folder = _hostile_folder(tmp_path, cls="MNISTClassifier", config={"width": 200000, "hidden": 128})
    with pytest.raises(ValueError, match=r"`config` value config.width must be an int in \[-16384, 16384\]"):
        load_pretrained("evil", weights_dir=folder)
    # within the bounds but not what the file holds: refused from the meta-device build, nothing allocated
    folder = _hostile_folder(tmp_path, cls="MNISTClassifier", config={"width": 16000, "hidden": 16000})
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="does not match class 'MNISTClassifier'"):
        load_pretrained("evil", weights_dir=folder)
    assert time.perf_counter() - t0 < 5
    folder = _hostile_folder(tmp_path, cls="MNISTClassifier", config={"width": float("nan")})
    with pytest.raises(ValueError, match="must be finite"):
        load_pretrained("evil", weights_dir=folder)
    folder = _hostile_folder(tmp_path, cls="MNISTClassifier", config={"depth": 3, "colour": "red"})
    with pytest.raises(ValueError, match="does not fit class 'MNISTClassifier'"):
        load_pretrained("evil", weights_dir=folder)


def test_zoo_header_with_too_many_tensors_refused_before_reading(tmp_path):
    import json
    import struct
    import time

    folder = _hostile_folder(tmp_path, cls="MNISTClassifier", config={"width": 32, "hidden": 128, "dropout": 0.3})
    n_params = len(load_pretrained("mnist-classifier").state_dict())
    path = folder / "evil.safetensors"
    for entries in (n_params + 1, 20_000):
        header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(entries)}
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4 * entries))
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=r"lists \d+ tensors; the model has|header of \d+ bytes"):
            load_pretrained("evil", weights_dir=folder)
        assert time.perf_counter() - t0 < 2


def test_registered_user_class_loads_from_a_weights_folder(tmp_path):
    from captum_cfx.zoo import register_model
    from captum_cfx.zoo._registry import _USER_CLASSES

    torch.manual_seed(0)
    net = TinyClassifier()
    folder = _hostile_folder(tmp_path, cls="TinyClassifierForTest", weights=net.state_dict())
    with pytest.raises(ValueError, match="`class` must be one of the registered"):
        load_pretrained("evil", weights_dir=folder)
    register_model("TinyClassifierForTest", TinyClassifier)
    try:
        loaded = load_pretrained("evil", weights_dir=folder)
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    finally:
        _USER_CLASSES.pop("TinyClassifierForTest")
    with pytest.raises(ValueError, match="`name` must be a short identifier"):
        register_model("os:system", TinyClassifier)
    with pytest.raises(TypeError, match="`cls` must be a torch.nn.Module subclass"):
        register_model("Evil", print)


# ----------------------------------------------------------------------------- the CLI: one line, exit 2
_TINY = ["--model", "tests.factories:tiny_model", "--generator", "tests.factories:tiny_generator"]


def _cli(args, tmp_path, capsys, out="out"):
    from captum_cfx.cli import main

    code = main(["explain", "--out", str(tmp_path / out), "--no-progress", *args])
    err = capsys.readouterr().err
    return code, err


def _assert_one_line_error(code, err, match):
    import re

    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("captum-cfx: error: ") and "Traceback" not in err, err
    assert re.search(match, lines[0]), lines[0]


CLI_CASES = {
    "device gpu": (["--device", "gpu"], r"`--device` must be a torch device"),
    "device meta": (["--device", "meta"], r"`--device` must be cpu, cuda\[:i\] or mps"),
    "threads 0": (["--threads", "0"], r"`--threads` must be >= 1; got 0"),
    "limit -3": (["--data", "mnist-test", "--limit", "-3"], r"`--limit` must be >= 1; got -3"),
    "max-steps 0": (["--max-steps", "0"], r"`--max-steps` must be >= 1; got 0"),
    "margin nan": (["--margin", "nan"], r"`--margin` must be a finite number; got nan"),
    "shard-size 0": (["--data", "mnist-test", "--shard-size", "0"], r"`--shard-size` must be >= 1"),
    "generator nonexistent": (["--generator", "nonexistent"], r"`--generator` must be module:factory.*'nonexistent'"),
    "generator traversal": (["--generator", "../../../../tmp/evil"], r"`--generator` must be .*path separators"),
    "resume without data": (["--resume"], r"`--resume` needs `--data`"),
    "target 12": (["--target", "12"], r"`--target`"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_arguments_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    args, match = CLI_CASES[case]
    code, err = _cli(args, tmp_path, capsys)
    _assert_one_line_error(code, err, match)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cli_cuda_without_gpu(tmp_path, capsys):
    _assert_one_line_error(*_cli(["--device", "cuda"], tmp_path, capsys), r"no CUDA GPU is available")


def test_cli_unwritable_out_and_bin_only_generator(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _assert_one_line_error(*_cli([], tmp_path, capsys, out="file"), r"`--out` .* is a file")
    _assert_one_line_error(*_cli([], tmp_path, capsys, out="file/sub"), r"`--out` .* is not writable")
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    _assert_one_line_error(*_cli(["--generator", str(folder)], tmp_path, capsys),
                           r"holds no .safetensors weights.*never pickles")


def test_cli_threads_honoured_without_data(tmp_path, capsys, monkeypatch):
    from captum_cfx import cli

    seen = []
    monkeypatch.setattr(cli, "_explain_digits", lambda a: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    assert cli.main(["explain", "--threads", "2", "--out", str(tmp_path / "o")]) == 0
    assert seen == [2] and torch.get_num_threads() == before


def _npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


@pytest.mark.parametrize("shape, match", [
    ((4, 3, 28, 28), r"`data` images must be \(N, 1, 28, 28\) for this generator; got \(4, 3, 28, 28\)"),
    ((4, 28, 28, 1), r"channels-last"),
    ((4, 1, 32, 32), r"got \(4, 1, 32, 32\)"),
    ((4, 784), r"must be \(N, C, H, W\) or \(N, H, W\)"),
])
def test_cli_wrong_shape_data_refused_before_writing(shape, match, tmp_path, capsys):
    data = _npy(tmp_path, "x.npy", np.random.default_rng(0).random(shape, dtype=np.float32))
    _assert_one_line_error(*_cli(["--data", data, *_TINY], tmp_path, capsys), match)
    assert not (tmp_path / "out").exists()  # no run.json, no lock: the corrected command is not blocked
    good = _npy(tmp_path, "good.npy", np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
    code, err = _cli(["--data", good, "--max-steps", "2", *_TINY], tmp_path, capsys)
    assert code == 0, err


def test_cli_all_rows_skipped_exits_2_and_lists_problems(tmp_path, capsys):
    import json

    data = _npy(tmp_path, "u8.npy", (np.random.default_rng(0).random((6, 1, 28, 28)) * 255).astype(np.uint8))
    code, err = _cli(["--data", data, "--shard-size", "4", *_TINY], tmp_path, capsys)
    _assert_one_line_error(code, err, r"all 6 images of `--data` were skipped.*0-255 images\? divide them by 255")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_valid"] == 0 and len(summary["problems"]) == 6
    assert summary["problems"][5].startswith("row 5: values in [")


def test_runner_flags_bad_labels_and_nonfinite_rows(tmp_path, capsys):
    import json

    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([42, 1, 2, 3, -7]))
    code, err = _cli(["--data", str(tmp_path / "d.npz"), "--max-steps", "2", *_TINY], tmp_path, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n"] == 5 and summary["n_valid"] == 2
    assert summary["problems"] == [
        "row 0: label 42 is not a class of the model (0..9, or -1 for unknown)",
        "row 3: non-finite values (NaN or Inf)",
        "row 4: label -7 is not a class of the model (0..9, or -1 for unknown)",
    ]


def test_runner_sidecar_holding_a_list_is_redone(tmp_path):
    calls = []

    def compute(x, y, seed):
        calls.append(seed)
        return {"success": torch.ones(len(x), dtype=torch.bool)}

    cfg = RunConfig(data="mnist-test", shard_size=4, limit=8)
    run_sharded(cfg, tmp_path, compute, progress=False)
    (tmp_path / "shard_00001.json").write_text("[]")
    calls.clear()
    summary = run_sharded(cfg, tmp_path, compute, resume=True, progress=False)
    assert calls == [1] and summary["n"] == 8


def test_runner_config_values_checked_before_writing(tmp_path):
    for kw, match in (({"threads": 0}, "`threads`"), ({"limit": -3}, "`limit`"), ({"max_steps": 0}, "`max_steps`"),
                      ({"margin": float("inf")}, "`margin` must be a finite")):
        with pytest.raises(ValueError, match=match):
            run_sharded(RunConfig(data="mnist-test", **kw), tmp_path / "o", lambda x, y, s: {}, progress=False)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- one writer per output folder
_HOLD = """
import sys, time
from pathlib import Path
from captum_cfx.runner import acquire_lock
acquire_lock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def test_second_writer_is_refused_and_a_dead_owner_lock_is_stale(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from captum_cfx.runner import LOCK_NAME

    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = RunConfig(data="mnist-test", shard_size=4, limit=8)
        with pytest.raises(ValueError, match=rf"`out` .* is in use by another run \(pid {holder.pid} "):
            run_sharded(cfg, out, lambda x, y, s: {"success": torch.ones(len(x), dtype=torch.bool)}, progress=False)
        assert not (out / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the owner was killed: its lock is stale, the next run (a resume after a crash) takes it over
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    summary = run_sharded(cfg, out, lambda x, y, s: {"success": torch.ones(len(x), dtype=torch.bool)},
                          resume=True, progress=False)
    assert summary["n"] == 8 and not (out / LOCK_NAME).exists()  # released at the end


# ----------------------------------------------------------------------------- per-sample fault isolation
@pytest.mark.parametrize("method", ["path", "finite-difference"])
def test_lig_flags_a_nonfinite_sample_and_completes_the_rest_bit_identically(method):
    import warnings

    _, clf, gen, x = _world()

    def model(images, flag):
        out = clf(images)
        return torch.where(flag[:, None], torch.full_like(out, float("nan")), out)

    lig = LatentIntegratedGradients(model, gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # walks that do not reach the threshold
        clean = lig.explain(x, target=1, method=method, additional_forward_args=(torch.zeros(4, dtype=torch.bool),))
    flag = torch.tensor([False, True, False, False])
    with pytest.warns(UserWarning, match=r"1 of 4 inputs gave NaN/Inf values"):
        out = lig.explain(x, target=1, method=method, additional_forward_args=(flag,))
    assert out.nonfinite.tolist() == flag.tolist() and not clean.nonfinite.any()
    keep = [0, 2, 3]
    assert torch.equal(out.attributions[keep], clean.attributions[keep])
    assert torch.equal(out.convergence_delta[keep], clean.convergence_delta[keep])
    assert torch.equal(out.baseline_latents[keep], clean.baseline_latents[keep])
    assert (out.attributions[1] == 0).all() and out.convergence_delta[1].isnan() and not out.baseline_found[1]
    with pytest.warns(UserWarning, match="NaN/Inf"):
        maps = lig.attribute(x, target=1, method=method, additional_forward_args=(flag,))
    assert torch.isfinite(maps).all() and torch.equal(maps[keep], clean.attributions[keep])


def test_gcd_transfer_flags_a_nonfinite_image_and_completes_the_rest():
    from captum_cfx import GlobalCounterfactualDirections

    from .conftest import linear_world

    A, W, gen, model = linear_world()

    def flagged(images, flag):
        out = model(images)
        return torch.where(flag[:, None], torch.full_like(out, float("inf")), out)

    gcd = GlobalCounterfactualDirections(flagged, gen, classes=(0, 1), n_hessian=0, alpha_max=6.0, n_alphas=24,
                                         distance=lambda a, b: (a - b).pow(2).flatten(1).mean(1))
    w = (W[1] - W[0]) @ A
    gcd.fit((0.5 * w / w.norm() @ A.T).view(1, 1, 2, 2), additional_forward_args=torch.zeros(1, dtype=torch.bool))
    imgs = (torch.stack([0.8 * w / w.norm(), -0.9 * w / w.norm(), 1.5 * w / w.norm()]) @ A.T).view(3, 1, 2, 2)
    clean = gcd.transfer(imgs, additional_forward_args=torch.zeros(3, dtype=torch.bool))
    flag = torch.tensor([False, True, False])
    with pytest.warns(UserWarning, match=r"1 of 3 images gave NaN/Inf"):
        out = gcd.transfer(imgs, additional_forward_args=flag)
    assert out.nonfinite.tolist() == flag.tolist() and not clean.nonfinite.any() and clean.success.all()
    assert out.success.tolist() == [True, False, True] and not out.flips[1].any()
    for f in ("counterfactuals", "alphas", "classes"):
        assert torch.equal(getattr(out, f)[[0, 2]], getattr(clean, f)[[0, 2]])


@pytest.mark.parametrize("args", [["explain", "--n", "ten"], ["explain", "--bogus"], ["nosuchcommand"],
                                  ["compare", "--threads", "x"]])
def test_cli_argparse_errors_are_one_line(args, capsys):
    from captum_cfx.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    _assert_one_line_error(e.value.code, capsys.readouterr().err, r"--help")


def test_causal_scores_leave_out_nonfinite_samples():
    from captum_cfx import CounterfactualSufficiencyNecessity, LatentProbes, LinearDirections

    from .test_causal import D, _world

    z = torch.randn(400, D, generator=torch.Generator().manual_seed(0))
    lin = LinearDirections(LatentProbes().fit(z, (z > 0).float(), ["a", "b", "c"]), z)
    gen, model, oracle = _world()

    def flagged(x, flag):
        out = model(x)
        return torch.where(flag[:, None], torch.full_like(out, float("nan")), out)

    cf = CounterfactualSufficiencyNecessity(flagged, gen, lin, oracle=oracle)
    zs = torch.randn(60, D, generator=torch.Generator().manual_seed(1))
    flag = torch.zeros(60, dtype=torch.bool)
    flag[::7] = True
    with pytest.warns(UserWarning, match=r"9 of 60 samples gave NaN/Inf"):
        res = cf.estimate(latents=zs, target=1, additional_forward_args=(flag,), n_bootstrap=20)
    clean = cf.estimate(latents=zs[~flag], target=1, additional_forward_args=(flag[~flag],), n_bootstrap=20)
    assert res.nonfinite.tolist() == flag.tolist() and not clean.nonfinite.any()
    for s in ("nec", "suf", "nesuf", "n_nec", "n_suf", "n_nesuf"):
        assert torch.equal(getattr(res, s), getattr(clean, s)), s
