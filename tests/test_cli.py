import json

import pytest
import torch

from captum_cfx.cli import choose_targets, main, select_digits

from .factories import tiny_generator, tiny_model


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and "captum-cfx" in capsys.readouterr().out
    assert main([]) == 0
    assert "explain" in capsys.readouterr().out


def test_explain_small_run_writes_report(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["explain", "--n", "20", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 20
    assert metrics["flip_rate"] >= 0.9
    # real digit changes, not adversarial noise: the independent oracle sees the target in most counterfactuals
    # (18 of 20 today) and they lie about as close to training digits as real test digits do (1.08x today)
    assert metrics["oracle_agreement"] >= 0.8
    assert 0.8 < metrics["knn5_ratio"] < 1.5 and metrics["counterfactuals_per_second"] > 0
    assert metrics["mean_steps"] <= metrics["max_steps"] and set(metrics["descriptor_probe_scores"]) >= {"area"}
    assert (out / "grid.png").stat().st_size > 1000 and (out / "descriptor_bars.png").stat().st_size > 1000
    assert "grid.png" in (out / "report.md").read_text()
    assert "explained 20 digits" in capsys.readouterr().out


def test_explain_with_user_factories(tmp_path):
    out = tmp_path / "rep"
    code = main(["explain", "--n", "4", "--max-steps", "3", "--out", str(out), "--no-progress",
                 "--model", "tests.factories:tiny_model", "--generator", "tests.factories:tiny_generator"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["max_steps"] == 3
    _assert_library_figures(metrics, tiny_model(), tiny_generator(), n=4, max_steps=3)


def _assert_library_figures(metrics, model, gen, n, max_steps):
    """``explain``'s report holds the library's figures for the same model, generator, digits and targets."""
    from captum_cfx import LatentCounterfactualAttack

    x, y = select_digits(n)
    out = LatentCounterfactualAttack(model, gen).generate(x, target=choose_targets(y, "random", 0, 10),
                                                          max_steps=max_steps)
    assert metrics["n"] == n and metrics["mean_steps"] == float(out.n_steps.float().mean())
    assert metrics["flip_rate"] == out.success_rate
    def median_l2(a, b):
        return float((a - b).flatten(1).norm(dim=1).median())

    assert metrics["median_l2_pixels"] == pytest.approx(median_l2(out.counterfactuals, x))
    assert metrics["median_l2_latent"] == pytest.approx(median_l2(out.latents.free, out.original_latents.free))
    return out


def test_explain_with_diffusers_folder(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8,), norm_num_groups=4, latent_channels=2,
                        sample_size=28, layers_per_block=1)
    vae.save_pretrained(tmp_path / "vae")
    code = main(["explain", "--n", "2", "--max-steps", "2", "--out", str(tmp_path / "rep"), "--no-progress",
                 "--generator", str(tmp_path / "vae")])
    assert code == 0
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    # the folder's model is the generator: the CLI's figures are the library's on that model
    from captum_cfx import DiffusersVAEGenerator
    from captum_cfx.zoo import load_pretrained

    gen = DiffusersVAEGenerator.from_pretrained(tmp_path / "vae", image_shape=(1, 28, 28))
    out = _assert_library_figures(metrics, load_pretrained("mnist-classifier"), gen, n=2, max_steps=2)
    assert out.latents.free.shape == (2, 2, 28, 28)
    # descriptor probes were fitted on the folder model's (2, 28, 28) latents
    assert set(metrics["descriptor_probe_scores"]) == {"area", "length", "thickness", "slant", "width", "height"}
    assert (tmp_path / "rep" / "grid.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args, match",
    [
        (["--model", "nomodule"], "module:factory"),
        (["--model", "tests.factories:missing"], "no callable"),
        (["--model", "tests.factories:not_a_model"], "callable model"),
        (["--model", "no_such_pkg_xyz:f"], "cannot import"),
        (["--n", "0"], "`--n`"),
        (["--target", "eleven"], "`--target`"),
        (["--target", "12"], "`--target`"),
    ],
)
def test_explain_bad_arguments(args, match, tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path), "--no-progress", *args]) == 2
    assert match in capsys.readouterr().err


def test_targets_and_selection():
    x, y = select_digits(20)
    assert sorted(y.tolist()) == sorted(list(range(10)) * 2)
    t = choose_targets(y, "random", 0, 10)
    assert (t != y).all() and torch.equal(t, choose_targets(y, "random", 0, 10))
    assert torch.equal(choose_targets(y, "next", 0, 10), (y + 1) % 10)
    assert (choose_targets(y, "3", 0, 10) == 3).all()


def test_targets_for_k_classes():
    """K is an argument (the CLI reads it from the model): 5 classes, random targets cover all of them."""
    from captum_cfx.objectives import choose_targets as choose

    y = torch.arange(200) % 5
    t = choose(y, "random", 1, 5)
    assert (t != y).all() and t.min() == 0 and t.max() == 4
    assert set(((t - y) % 5).tolist()) == {1, 2, 3, 4}
    assert torch.equal(choose(y, "next", 0, 5), (y + 1) % 5)
    with pytest.raises(ValueError, match="0-4"):
        choose(y, "7", 0, 5)
    with pytest.raises(ValueError, match="`num_classes`"):
        choose(y, "next", 0, 1)


@pytest.mark.parametrize("n", [30, pytest.param(200, marks=pytest.mark.slow)])
def test_default_configuration_flips_digits(shipped, n):
    """A2's acceptance figure: flip >= 99 % on test digits with random targets != label (200 digits is the slow
    run; ``benchmarks/latent_attack.py`` measures all 1,000; 30 digits keep the property in the fast suite)."""
    from captum_cfx import LatentCounterfactualAttack

    clf, oracle, gen = shipped
    x, y = select_digits(n)
    t = choose_targets(y, "random", 0, 10)
    out = LatentCounterfactualAttack(clf, gen).generate(x, target=t)
    assert out.success.float().mean() >= 0.99
    with torch.no_grad():
        assert (clf(out.counterfactuals).argmax(1) == t)[out.success].all()
