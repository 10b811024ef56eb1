"""Metrics against hand-computed values and torchmetrics, and the `captum-cfx compare` command on a tiny run."""

import json

import pytest
import torch
from torch import nn

from captum_cfx.cli import main
from captum_cfx.datasets import AttributeWorld
from captum_cfx.metrics import (
    FactorChanges,
    FeatureNet,
    cout,
    cout_curves,
    domain_fid,
    fid,
    intervention_effects,
    knn_distance,
    latent_proximity,
    manifold_distance,
    oracle_agreement,
    proximity,
    right_factor_rate,
    seconds_per_counterfactual,
    sfid,
    sparsity,
    steps_per_counterfactual,
)
from captum_cfx.zoo import available

from .conftest import linear_world


def points(v: torch.Tensor) -> torch.Tensor:
    """Feature vectors ``(N, k)`` as ``(N, k, 1, 1)`` "images" for an identity feature net."""
    return v.view(len(v), -1, 1, 1)


IDENTITY2 = FeatureNet(lambda x: x.flatten(1), num_features=2)


# ---------------------------------------------------------------------------------------------- FID / sFID
def test_fid_hand_values():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 2, generator=g, dtype=torch.float64).float()
    mu = real.mean(0)
    cov = torch.cov(real.T.double())
    shift = torch.tensor([0.5, -1.5])
    # same covariance: FID = ||shift||^2
    assert fid(points(real), points(real + shift), IDENTITY2).value == pytest.approx(2.5, abs=1e-3)
    # scaled by 2: mean 2 mu, covariance 4 S -> ||mu||^2 + Tr(S) (1 + 4 - 2 * 2)
    want = float(mu.double().pow(2).sum() + torch.trace(cov))
    assert fid(points(real), points(2 * real), IDENTITY2).value == pytest.approx(want, rel=1e-3)
    assert fid(points(real), points(real), IDENTITY2).value == pytest.approx(0.0, abs=1e-4)


def test_knn_distance_hand_values_and_precomputed_reference():
    ref = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [10.0, 10.0]])
    img = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # k = 2 nearest: (0, 0) -> {0, 3} mean 1.5; (3, 4) -> {3, 4} (to (0, 4) and (3, 0)) mean 3.5; median of 2 = lower
    got = knn_distance(points(img), points(ref), IDENTITY2, k=2)
    assert got.values.tolist() == pytest.approx([1.5, 3.5]) and got.value == pytest.approx(1.5)
    # a zero-distance match dropped: (0, 0) -> {3, 4}
    assert knn_distance(points(img), points(ref), IDENTITY2, k=2, exclude_self=True).values[0] == pytest.approx(3.5)
    # features given instead of reference images: same figures, the reference is not embedded again
    calls = []
    net = FeatureNet(lambda x: calls.append(len(x)) or x.flatten(1), num_features=2)
    assert torch.equal(knn_distance(points(img), ref, net, k=2).values, got.values) and calls == [2]
    with pytest.raises(ValueError, match=r"`reference` must be .* \(M, 2\) features with M >= k = 5"):
        knn_distance(points(img), ref, IDENTITY2, k=5)
    with pytest.raises(ValueError, match="`reference` must be"):
        knn_distance(points(img), torch.zeros(4, 3), IDENTITY2)


def test_fid_matches_torchmetrics_on_identical_inputs():
    from torchmetrics.image.fid import FrechetInceptionDistance

    torch.manual_seed(0)
    net = FeatureNet(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), num_features=3).eval()
    real, fake = torch.rand(30, 1, 4, 4), torch.rand(25, 1, 4, 4) * 0.8
    ref = FrechetInceptionDistance(feature=net, normalize=True)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    want = float(ref.compute())
    assert want > 0.01
    got = fid(real, fake, net, batch_size=7)  # batching does not change the figure
    assert got.value == pytest.approx(want, rel=1e-4)
    assert got.values.shape == (1,)
    assert domain_fid(real, fake, net) == pytest.approx(want, rel=1e-4)


def test_sfid_is_the_mean_of_cross_half_fids():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 2, generator=g)
    cf = x + torch.tensor([1.0, 0.0]) + 0.1 * torch.randn(10, 2, generator=g)
    res = sfid(points(x), points(cf), IDENTITY2, n_splits=3, generator=torch.Generator().manual_seed(5))
    assert res.values.shape == (3,)
    perm_g = torch.Generator().manual_seed(5)
    want = []
    for _ in range(3):
        p = torch.randperm(10, generator=perm_g)
        a, b = p[:5], p[5:]
        want.append(0.5 * (fid(points(x[a]), points(cf[b]), IDENTITY2).value
                           + fid(points(x[b]), points(cf[a]), IDENTITY2).value))
    assert res.values.tolist() == pytest.approx(want, rel=1e-4)
    assert res.value == pytest.approx(sum(want) / 3, rel=1e-4)
    # an identity "explanation" scores FID 0 but not sFID 0: the split removes the pairing
    assert fid(points(x), points(x), IDENTITY2).value == pytest.approx(0.0, abs=1e-4)
    assert sfid(points(x), points(x), IDENTITY2).value > 0.1


# ---------------------------------------------------------------------------------------------- COUT
def step_model(x: torch.Tensor) -> torch.Tensor:
    """Class 1 exactly when pixel (0, 0) is bright."""
    return torch.stack([torch.zeros(len(x)), 1000 * (x[:, 0, 0, 0] - 0.5)], 1)


def test_cout_known_answers():
    x = torch.zeros(2, 1, 10, 10)
    xc = torch.full((2, 1, 10, 10), 0.4)
    xc[0, 0, 0, 0] = 1.0  # the decisive pixel changed most (1.0 vs 0.4): inserted in the first chunk
    x[1, 0, 0, 0], xc[1] = 0.4, 1.0  # it changed least (0.6 vs 1.0): inserted in the last chunk
    src, tgt = torch.tensor([0, 0]), torch.tensor([1, 1])
    res = cout(step_model, x, xc, src, target=tgt)
    # first: target curve 0, 1, ..., 1 -> AUC (0.5 + 49) / 50 = 0.99; source 0.01; COUT 0.98
    # last:  target curve 0, ..., 0, 1 -> AUC 0.5 / 50 = 0.01; source 0.99; COUT -0.98
    assert res.values.tolist() == pytest.approx([0.98, -0.98], abs=1e-5)
    assert res.value == pytest.approx(0.0, abs=1e-5)
    pt, ps = cout_curves(step_model, x, xc, src, target=tgt)
    assert pt.shape == ps.shape == (2, 51)
    assert torch.allclose(pt + ps, torch.ones_like(pt))
    assert cout(step_model, x, xc, src, target=tgt, batch_size=1).values.tolist() == pytest.approx(res.values.tolist())


def test_cout_linear_model_and_binary_logit():
    def mean_model(x):  # p(class 1) = mean brightness: linear in the inserted fraction
        p = x.flatten(1).mean(1).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log(1 - p), torch.log(p)], 1)

    x, xc = torch.zeros(1, 3, 5, 5), torch.ones(1, 3, 5, 5)
    assert cout(mean_model, x, xc, torch.tensor([0]), target=torch.tensor([1]), n_chunks=25).value == pytest.approx(
        0.0, abs=1e-4)

    def one_logit(x):
        return step_model(x)[:, 1:]

    x1, xc1 = torch.zeros(1, 1, 10, 10), torch.full((1, 1, 10, 10), 0.5)
    xc1[0, 0, 0, 0] = 1.0
    assert cout(one_logit, x1, xc1, torch.tensor([0]), target=torch.tensor([1])).value == pytest.approx(0.98, abs=1e-5)


# ---------------------------------------------------------------------------------------------- the rest
def test_proximity_latents_manifold_sparsity_cost():
    A, _, gen, model = linear_world()
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]).view(2, 1, 2, 2)
    cf = x + torch.tensor([0.0, 0.0, 0.0, 3.0]).view(1, 1, 2, 2)
    assert proximity(cf, x, p=1).values.tolist() == [3.0, 3.0]
    want = (cf.flatten(1) @ A - x.flatten(1) @ A).norm(dim=1)
    assert latent_proximity(gen, x, cf).values.tolist() == pytest.approx(want.tolist(), rel=1e-5)
    on = (torch.randn(3, 2) @ A.T).view(3, 1, 2, 2)  # in the decoder's span: reconstructed exactly
    assert manifold_distance(gen, on).value == pytest.approx(0.0, abs=1e-10)
    off = x.flatten(1) - (x.flatten(1) @ A) @ A.T
    assert manifold_distance(gen, x).values.tolist() == pytest.approx(off.pow(2).mean(1).tolist(), rel=1e-4)
    assert sparsity(cf, x).values.tolist() == [0.25, 0.25]
    assert steps_per_counterfactual(torch.tensor([1, 3])).value == 2.0
    assert seconds_per_counterfactual(2.0, 4) == 0.5


def test_oracle_agreement_classes_and_values():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    oracle = lambda x: logits[: len(x)]  # noqa: E731
    x = torch.zeros(3, 1, 2, 2)
    assert oracle_agreement(oracle, x, torch.tensor([1, 1, 1])).values.tolist() == [1.0, 0.0, 1.0]
    assert oracle_agreement(oracle, x, torch.tensor([1, 1, 1]), success=torch.tensor([True, True, False])).value \
        == pytest.approx(1 / 3)
    reg = lambda x: torch.tensor([[0.5], [0.9], [0.2]])  # noqa: E731
    assert oracle_agreement(reg, x, torch.tensor([0.55, 0.5, 0.2]), tolerance=0.1).values.tolist() == [1.0, 0.0, 1.0]


def test_right_factor_rate_and_interventions():
    ch = torch.tensor([[True, False], [True, True], [False, True]])
    fc = FactorChanges(("smile", "hat"), ch.float(), ch.float(), ch.float(), ch)
    assert right_factor_rate(fc, "smile").values.tolist() == [1.0, 1.0, 0.0]
    assert right_factor_rate(fc, "smile", only=True).values.tolist() == [1.0, 0.0, 0.0]
    assert right_factor_rate(fc, "smile", valid=torch.tensor([False, True, True])).values.tolist() == [0.0, 1.0, 0.0]
    world = AttributeWorld()

    def hat_model(x):  # decides on the hat pixel only
        return torch.stack([torch.zeros(len(x)), world.measure(x)["hat"] - 0.5], 1)

    _, f = world.sample(12, generator=torch.Generator().manual_seed(0))
    eff = intervention_effects(world, hat_model, f)
    assert eff["hat"] == 1.0
    assert all(v == 0.0 for k, v in eff.items() if k not in ("hat", "face_size"))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: fid(torch.rand(4, 1, 2, 2), torch.rand(4, 1, 2, 2), nn.Flatten()), ValueError, "num_features"),
        (lambda: fid(torch.rand(1, 2, 1, 1), torch.rand(4, 2, 1, 1), IDENTITY2), ValueError, "at least 2"),
        (lambda: fid(torch.rand(4, 2), torch.rand(4, 2), IDENTITY2), ValueError, r"\(N, C, H, W\)"),
        (lambda: fid(torch.rand(4, 2, 1, 1), torch.rand(4, 2, 1, 1), "net"), TypeError, "nn.Module"),
        (lambda: sfid(torch.rand(3, 2, 1, 1), torch.rand(3, 2, 1, 1), IDENTITY2), ValueError, "at least 4"),
        (lambda: sfid(torch.rand(4, 2, 1, 1), torch.rand(5, 2, 1, 1), IDENTITY2), ValueError, "paired"),
        (lambda: sfid(torch.rand(4, 2, 1, 1), torch.rand(4, 2, 1, 1), IDENTITY2, n_splits=0), ValueError,
         "`n_splits`"),
        (lambda: cout(step_model, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), torch.tensor([0]),
                      target=torch.tensor([1])), ValueError, "shape of `originals`"),
        (lambda: cout(step_model, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.tensor([0.0]),
                      target=torch.tensor([1])), ValueError, "`source`"),
        (lambda: cout(step_model, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.tensor([0]),
                      target=torch.tensor([2])), ValueError, r"\[0, 1\]"),
        (lambda: cout(step_model, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.tensor([0]),
                      target=torch.tensor([1]), n_chunks=0), ValueError, "`n_chunks`"),
        (lambda: latent_proximity(object(), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)), TypeError,
         "`generator`"),
        (lambda: oracle_agreement(lambda x: x, torch.zeros(2, 1, 2, 2), torch.zeros(3)), ValueError, "`targets`"),
        (lambda: seconds_per_counterfactual(1.0, 0), ValueError, "`n`"),
        (lambda: FeatureNet(lambda x: x, num_features=0), ValueError, "`num_features`"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------- compare
def test_compare_tiny_run_writes_tables_and_figures(tmp_path, capsys):
    out = tmp_path / "cmp"
    fast = "latent attack (VAE),InterFaceGAN (VAE),GCD transfer (VAE),captum PGD (pixels)"  # slow rows: seconds/CF
    code = main(["compare", "--n", "4", "--datasets", "world,squares", "--no-attributions", "--out", str(out),
                 "--methods", fast, "--no-progress"])
    assert code == 0
    res = json.loads((out / "compare.json").read_text())
    assert set(res["tasks"]) == {"world (spurious smile)", "world (decorrelated smile)", "squares"}
    world = res["tasks"]["world (spurious smile)"]
    names = [r["method"] for r in world["rows"]]
    assert names == ["latent attack (VAE)", "InterFaceGAN (VAE)", "GCD transfer (VAE)", "captum PGD (pixels)"]
    assert world["right_factor"] == "eyeglasses"  # the planted reliance, measured by interventions
    assert res["tasks"]["world (decorrelated smile)"]["right_factor"] == "smile"
    for r in world["rows"]:
        assert r["n"] == 4 and 0 <= r["validity"] <= 1 and -1 <= r["cout"] <= 1 and r["fid"] >= 0
    assert {r["method"] for r in world["ground_truth"]} == set(names)
    rates = [r["right_factor_rate"] for r in world["ground_truth"]]
    assert rates == sorted(rates, reverse=True)
    squares = res["tasks"]["squares"]
    has_vae = "squares-vae" in available()  # without a squares generator there are no latent rows
    assert [r["method"] for r in squares["rows"]] == ["latent attack (VAE)"] * has_vae + ["captum PGD (pixels)"]
    pgd = squares["rows"][-1]
    assert pgd["cout"] is None and (pgd["l2_latent"] is None) == (not has_vae)  # no COUT for a regressor
    md = (out / "compare.md").read_text()
    assert "| captum PGD (pixels)" in md and "Ground truth: world (spurious smile)" in md
    for t in res["tasks"].values():
        assert (out / t["figure"]).stat().st_size > 1000
    assert f"compared {8 + len(squares['rows'])} method rows on 3 tasks" in capsys.readouterr().out


def test_compare_attributions_and_absent_rows(tmp_path):
    from captum_cfx import compare

    registry = compare.default_registry()
    registry.register("needs a missing model", ("mnist",), requires=("no-such-model",))(
        lambda task: compare.CFResult(task.images, 0.0))
    registry.register("identity", ("mnist",))(lambda task: compare.CFResult(task.images.clone(), 0.0))
    res = compare.run_compare(tmp_path, n=4, datasets=("mnist",), methods=["saliency", "occlusion", "identity",
                                                                           "missing"], registry=registry,
                              progress=False)
    rows = res["tasks"]["mnist"]["rows"]
    assert [r["method"] for r in rows] == ["identity"]  # the missing model's row is absent, not faked
    assert rows[0]["validity"] == 0.0 and rows[0]["l2_pixels"] == 0.0
    task = compare.build_tasks(4, ("mnist",))[0]
    with torch.no_grad():
        p = torch.softmax(task.model(task.images), 1)
    idx = torch.arange(4)
    # nothing inserted changes anything: both curves are flat, COUT = p(target) - p(source) of the input
    assert rows[0]["cout"] == pytest.approx(float((p[idx, task.goals] - p[idx, task.sources]).mean()), abs=1e-5)
    assert {"task": "mnist", "method": "needs a missing model", "reason": "not shipped: no-such-model"} \
        in res["skipped"]
    attr = {r["method"]: r for r in res["attributions"]["mnist"]}
    assert set(attr) == {"Saliency (signed gradient)", "Occlusion (4x4)"}
    assert all(r["infidelity"] >= 0 and r["sensitivity_max"] >= 0 for r in attr.values())
    assert "needs a missing model on mnist (not shipped: no-such-model)" in (tmp_path / "compare.md").read_text()
    assert res["command"] == "captum-cfx compare --n 4" and res["size"] == "default" and res["slow_n"] == 8


def test_compare_registries_are_objects():
    from captum_cfx import compare

    a, b = compare.default_registry(), compare.default_registry()
    names = [m.name for m in a.methods]
    assert names[0] == "latent attack (VAE)" and names[-1] == "captum PGD (pixels)" and len(a.attributions) == 4
    a.register("identity", ("mnist",))(lambda task: compare.CFResult(task.images.clone(), 0.0))
    copy = a.copy()
    copy.register("other", ("world",))(lambda task: None)
    # registering on one registry leaves every other one (and the next default) unchanged
    assert [m.name for m in a.methods] == [*names, "identity"]
    assert [m.name for m in copy.methods] == [*names, "identity", "other"]
    assert [m.name for m in b.methods] == names == [m.name for m in compare.default_registry().methods]
    with pytest.raises(ValueError, match="already registered"):
        a.register("identity", ("mnist",))
    with pytest.raises(ValueError, match="already registered"):
        a.register_attribution("Occlusion (4x4)", ("mnist",))
    with pytest.raises(ValueError, match="`families`"):
        a.register("cifar row", ("cifar",))
    with pytest.raises(TypeError, match="`families`"):
        a.register("str families", "mnist")
    with pytest.raises(TypeError, match="`registry`"):
        compare.run_compare("unused", registry=[])  # type: ignore[arg-type]


@pytest.mark.parametrize("args, match", [(["--n", "3"], "`--n`"), (["--datasets", "cifar"], "`--datasets`"),
                                         (["--threads", "0"], "`--threads`")])
def test_compare_bad_arguments(args, match, tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path), "--no-progress", *args]) == 2
    assert match in capsys.readouterr().err


def test_compare_runs_slow_methods_on_a_fixed_subset(tmp_path):
    from captum_cfx import compare

    registry = compare.Registry()
    seen: dict[str, torch.Tensor] = {}

    def make(name: str):
        def run(task):
            seen[name] = task.images.clone()
            return compare.CFResult(task.images.clone(), 0.0)
        return run

    registry.register("fast identity", ("mnist",))(make("fast"))
    registry.register("slow identity", ("mnist",), slow=True)(make("slow"))
    registry.register("per-family needs", ("mnist",), requires={"mnist": ("no-such-model",)})(make("x"))
    size = compare.RunSize("test", n=5, slow_n=3)
    res = compare.run_compare(tmp_path, size=size, datasets=("mnist",), attributions=False, registry=registry,
                              progress=False)
    rows = {r["method"]: r for r in res["tasks"]["mnist"]["rows"]}
    assert rows["fast identity"]["n"] == 5 and rows["slow identity"]["n"] == 3
    assert torch.equal(seen["slow"], seen["fast"][:3])  # the first images of the same task, not a new draw
    assert "x" not in seen
    assert {"task": "mnist", "method": "per-family needs", "reason": "not shipped: no-such-model"} in res["skipped"]
    md = (tmp_path / "compare.md").read_text()
    assert "| slow identity | 3 |" in md and "| fast identity | 5 |" in md
    assert res["command"] == "captum_cfx.compare.run_compare(size=RunSize(name='test', n=5, slow_n=3))"


def test_compare_sizes():
    from captum_cfx import compare
    from captum_cfx.cli import build_parser

    sizes = compare.SIZES
    assert (sizes["quick"].n, sizes["quick"].slow_n) == (8, 2)  # a smoke of every row (under 2 minutes)
    assert (sizes["default"].n, sizes["default"].slow_n) == (100, 8)  # the README's tables
    assert (sizes["full"].n, sizes["full"].slow_n) == (1000, None)
    assert [s.command() for s in sizes.values()] == ["captum-cfx compare --quick", "captum-cfx compare",
                                                     "captum-cfx compare --full"]
    assert compare.RunSize("full", 20).command() == "captum-cfx compare --full --n 20"
    with pytest.raises(ValueError, match="`n`"):
        compare.RunSize("x", 3)
    with pytest.raises(ValueError, match="`slow_n`"):
        compare.RunSize("x", 4, 0)
    with pytest.raises(ValueError, match="`size`"):
        compare.run_compare("unused", size="huge")
    with pytest.raises(SystemExit):  # argparse: --quick and --full exclude each other
        build_parser().parse_args(["compare", "--quick", "--full"])


def test_compare_registration_checks_requires():
    from captum_cfx import compare

    registry = compare.Registry()
    with pytest.raises(TypeError, match="`requires`"):
        registry.register("a str", ("mnist",), requires="mnist-vae")
    with pytest.raises(ValueError, match="`requires`"):
        registry.register("other family", ("mnist",), requires={"world": ("world-vae",)})
    assert registry.methods == ()


def test_update_readme_pastes_between_markers(tmp_path, capsys):
    from tools.update_readme import main, update_readme  # the repository's tooling, not the installed package

    out = tmp_path / "results" / "cmp"
    out.mkdir(parents=True)
    (out / "compare.md").write_text("Produced by x.\n\n### Counterfactuals: mnist\n\n![mnist](grid_mnist.png)\n")
    readme = tmp_path / "README.md"
    readme.write_text("# top\n<!-- compare:start (pasted) -->\nold table\n<!-- compare:end -->\nafter\n")
    update_readme(readme, out)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# top\n<!-- compare:start (pasted) -->\nProduced by x.")
    assert "#### Counterfactuals: mnist" in text and "![mnist](results/cmp/grid_mnist.png)" in text
    assert text.endswith("<!-- compare:end -->\nafter\n")
    update_readme(readme, out)  # idempotent
    assert readme.read_text() == text
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="`readme`"):
        update_readme(readme, out)
    with pytest.raises(ValueError, match="`out_dir`"):
        update_readme(readme, tmp_path)
    assert main(["--readme", str(readme), "--results", str(out)]) == 2  # still no markers: one-line error
    assert "error: `readme` must hold" in capsys.readouterr().err


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_task_subset_needs_a_positive_int(n):
    from captum_cfx import compare

    task = compare.Task(name="t", family="mnist", images=torch.zeros(3, 1, 2, 2), sources=torch.zeros(3),
                        goals=torch.zeros(3), model=nn.Identity(), oracle=lambda v: v, features=nn.Identity())
    with pytest.raises(ValueError, match="`n`"):
        task.subset(n)
    assert task.subset(5) is task and len(task.subset(2).images) == 2
