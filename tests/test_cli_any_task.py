"""`captum-cfx explain --model pkg:factory --generator pkg:factory --data folder/` for any task: 3-channel 64x64
PNGs with 5 classes and labels from a CSV, and a regressor, with factories imported from the current directory
(a module written in tmp_path, no PYTHONPATH)."""

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from captum_cfx.cli import main

FACTORIES = '''
import torch
from torch import nn


class VAE(nn.Module):
    """3x64x64 <-> 6-d latent: average-pooled encoder, linear decoder upsampled (tiny, any-size pattern)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * 8 * 8, 12))
        self.dec = nn.Linear(6, 3 * 8 * 8)

    def encode(self, x):
        return self.enc(x).chunk(2, dim=1)

    def decode(self, z):
        img = torch.sigmoid(self.dec(z)).view(-1, 3, 8, 8)
        return nn.functional.interpolate(img, scale_factor=8, mode="nearest")


def classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * 8 * 8, 5))


def regressor():
    """The mean brightness, in [0, 1]: (N, 1) values, a regressor any decoder can move."""
    lin = nn.Linear(3 * 8 * 8, 1)
    nn.init.constant_(lin.weight, 1 / (3 * 8 * 8))
    nn.init.zeros_(lin.bias)
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), lin)


def vae():
    torch.manual_seed(0)
    v = VAE()
    with torch.no_grad():
        v.dec.weight[:, 0] = 1.0  # latent 0 sets the brightness: a regressor of it can be steered
    return v
'''


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A working folder holding the user's factory module (imported from the current directory) and 8 RGB
    64x64 PNGs with a labels.csv of 5 classes."""
    from PIL import Image

    name = f"cfx_user_{abs(hash(str(tmp_path))) % 10**8}"  # a fresh module name per test (sys.modules caches)
    (tmp_path / f"{name}.py").write_text(FACTORIES)
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.RandomState(0)
    rows = ["filename,label"]
    for i in range(8):
        Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8), mode="RGB").save(folder / f"img{i}.png")
        rows.append(f"img{i}.png,{i % 5}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path, name, folder
    sys.modules.pop(name, None)


def test_rgb_64_five_classes_from_a_folder_with_labels(user_dir, capsys):
    tmp_path, mod, folder = user_dir
    out = tmp_path / "run"
    code = main(["explain", "--model", f"{mod}:classifier", "--generator", f"{mod}:vae", "--data", "images/",
                 "--shard-size", "4", "--max-steps", "30", "--out", str(out), "--no-progress", "--seed", "3"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["n"] == 8 and summary["n_valid"] == 8
    assert summary["n_shards"] == 2 and summary["problems"] == [] and np.isnan(summary["oracle_agreement"])
    shards = [load_file(str(out / f"shard_{k:05d}.safetensors")) for k in range(2)]
    labels = torch.cat([s["labels"] for s in shards])
    targets = torch.cat([s["targets"] for s in shards])
    success = torch.cat([s["success"] for s in shards])
    assert labels.tolist() == [i % 5 for i in range(8)]  # from labels.csv, in file-name order
    assert (targets != labels).all() and targets.min() >= 0 and targets.max() <= 4
    assert torch.cat([s["counterfactuals"] for s in shards]).shape == (8, 3, 64, 64)
    assert summary["flip_rate"] == pytest.approx(float(success.float().mean()))
    side = json.loads((out / "shard_00000.json").read_text())["summary"]  # a per-shard summary, same keys
    assert side["n"] == 4 and side["flip_rate"] == pytest.approx(float(shards[0]["success"].float().mean()))
    assert (out / "grid.png").stat().st_size > 1000 and (out / "manifest.json").is_file()
    printed = capsys.readouterr().out
    assert "(classification, 3x64x64)" in printed and "(5 classes)" in printed
    # a class index outside the model's 5 classes is refused before anything runs
    assert main(["explain", "--model", f"{mod}:classifier", "--generator", f"{mod}:vae", "--data", "images/",
                 "--target", "5", "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "0-4" in capsys.readouterr().err and not (tmp_path / "o2" / "summary.json").exists()


@pytest.mark.parametrize("mode, target", [("mirror", None), ("absolute", "0.8"), ("relative", "-0.2")])
def test_regressor_on_a_folder(user_dir, capsys, mode, target):
    tmp_path, mod, folder = user_dir
    out = tmp_path / f"reg_{mode}"
    extra = ["--target", target] if target else []
    code = main(["explain", "--model", f"{mod}:regressor", "--generator", f"{mod}:vae", "--data", "images/",
                 "--regression-mode", mode, "--tolerance", "0.05", "--shard-size", "4", "--max-steps", "40",
                 "--out", str(out), "--no-progress", *extra])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["n"] == 8 and summary["n_valid"] == 8
    assert "flip_rate" not in summary and "oracle_agreement" not in summary
    d = {k: torch.cat([load_file(str(out / f"shard_{s:05d}.safetensors"))[k] for s in range(2)])
         for k in ("predictions_before", "goals", "predictions", "success", "labels")}
    before, goal, after = d["predictions_before"], d["goals"], d["predictions"]
    if mode == "mirror":
        assert torch.allclose(goal, torch.where(before < 0.5, before + 0.5, before - 0.5))
    elif mode == "absolute":
        assert torch.allclose(goal, torch.full_like(goal, 0.8))
    else:
        assert torch.allclose(goal, before - 0.2)
    assert torch.equal(d["success"], (after - goal).abs() <= 0.05)  # success means within tolerance of the goal
    assert summary["success_rate"] == pytest.approx(float(d["success"].float().mean()))
    if mode != "mirror":  # mirror asks brightness 0.5 images for ~0 or ~1: kept as a consistency check only
        assert summary["success_rate"] == 1.0  # the search moves this regressor: not a vacuous run
    assert summary["mean_abs_error_to_goal"] == pytest.approx(float((after - goal).abs().mean()), rel=1e-5)
    assert summary["mean_abs_change"] == pytest.approx(float((after - before).abs().mean()), rel=1e-5)
    assert d["labels"].dtype == torch.float32 and d["labels"].tolist() == [float(i % 5) for i in range(8)]
    assert (out / "grid.png").stat().st_size > 1000
    assert "(regression, 3x64x64)" in capsys.readouterr().out


def test_task_and_shape_flags_are_checked(user_dir, capsys):
    tmp_path, mod, folder = user_dir
    base = ["explain", "--generator", f"{mod}:vae", "--data", "images/", "--no-progress", "--max-steps", "2"]
    cases = [
        (["--model", f"{mod}:classifier", "--task", "regression"], "`--task regression`"),
        (["--model", f"{mod}:classifier", "--num-classes", "10"], "`--num-classes` 10"),
        (["--model", f"{mod}:regressor", "--regression-mode", "absolute"], "must be a number"),
        (["--model", f"{mod}:classifier", "--image-shape", "3,32"], "`--image-shape`"),
        (["--model", f"{mod}:classifier", "--pixel-range", "1,0"], "`--pixel-range`"),
        (["--model", f"{mod}:classifier", "--labels", "nothing.csv"], "`labels`"),
        (["--model", f"{mod}:classifier", "--image-shape", "1,64,64"], "`--model`"),
    ]
    for args, match in cases:
        assert main([*base, *args, "--out", str(tmp_path / "o")]) == 2, args
        assert match in capsys.readouterr().err, args
    assert not (tmp_path / "o" / "summary.json").exists()


def test_labels_csv_is_validated(tmp_path):
    from PIL import Image

    from captum_cfx.runner import open_data

    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), 40 * i, dtype=np.uint8), mode="RGB").save(folder / f"{i}.png")
    csv = tmp_path / "l.csv"
    for text, match in [("0.png,1\n0.png,2\n", "listed twice"), ("0.png,cat\n1.png,dog\n", "must be a number"),
                        ("9.png,1\n", "not images of"), ("0.png\n", "2 columns"), ("a/0.png,1\n", "not a path")]:
        csv.write_text(text)
        with pytest.raises(ValueError, match=match):
            open_data(str(folder), labels=csv)
    csv.write_text("0.png,0.25\n2.png,0.75\n")  # regression targets; 1.png unlabelled
    src = open_data(str(folder), labels=csv, pixel_range=(-1.0, 1.0))
    x, y, _ = src.get(0, 3)
    assert y.dtype == torch.float32 and y[0] == 0.25 and torch.isnan(y[1]) and y[2] == 0.75
    assert x.min() == -1.0 and x[2].max() == pytest.approx(-1 + 2 * 80 / 255)  # [0, 1] pixels mapped to [-1, 1]
    with pytest.raises(ValueError, match="is for a folder"):
        open_data("mnist-test", labels=csv)


def test_slow_generator_warns_before_starting(capsys, monkeypatch):
    """A generator whose attack step is slow (a diffusion model on a CPU) prints the projected time first."""
    from captum_cfx import cli

    from .factories import tiny_generator, tiny_model

    x = torch.rand(1, 1, 28, 28)
    monkeypatch.setattr(cli, "SLOW_WARNING_S", 1e-9)
    projected = cli.warn_expected_time(tiny_model(), tiny_generator(), x, n_images=100, max_steps=500,
                                         device=torch.device("cpu"))
    err = capsys.readouterr().err
    assert projected > 0 and "warning: VAEGenerator on the CPU" in err and "100 image(s) x up to 500 steps" in err
    monkeypatch.setattr(cli, "SLOW_WARNING_S", 1e9)
    cli.warn_expected_time(tiny_model(), tiny_generator(), x, n_images=1, max_steps=1, device=torch.device("cpu"))
    assert capsys.readouterr().err == ""


def test_without_data_a_non_mnist_model_gets_a_clear_error(user_dir, capsys):
    tmp_path, mod, _ = user_dir
    assert main(["explain", "--model", f"{mod}:classifier", "--generator", f"{mod}:vae", "--n", "2",
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "pass your images with --data" in capsys.readouterr().err
    assert main(["explain", "--data", "images/", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "`--model` is required for 3x64x64 images" in capsys.readouterr().err
