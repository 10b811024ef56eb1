"""Synthetic worlds (squares, attribute world), their shipped models and ground-truth scoring."""

from __future__ import annotations

import pytest
import torch

from captum_cfx.datasets import CAUSAL_GRAPH, AttributeWorld, Squares
from captum_cfx.metrics import FactorChanges, factor_changes, mnac
from captum_cfx.zoo import load_generator, load_pretrained


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def faces():
    return AttributeWorld().sample(1000, generator=gen(123))


@pytest.fixture(scope="module")
def oracle():
    return load_pretrained("world-oracle")


# ---------------------------------------------------------------- generation: determinism, round trip
@pytest.mark.parametrize("world", [Squares(), Squares(64), AttributeWorld(), AttributeWorld(64)])
def test_deterministic_under_a_seed_and_render_round_trips(world):
    a, b, c = (tuple(world.sample(64, generator=gen(s))) for s in (0, 0, 1))
    for t, u in zip(a, b):
        assert torch.equal(t, u)
    assert not torch.equal(a[0], c[0])
    x, f = a[0], a[-1]
    s = world.image_size
    assert x.shape == (64, 3, s, s) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(world.render(f), x)
    assert torch.equal(world.render(f[10:20]), x[10:20])  # per-row: batch composition does not matter


def test_factor_table_dict_round_trip():
    world = AttributeWorld()
    x, f = world.sample(32, generator=gen(3))
    d = world.to_dict(f)
    assert list(d) == list(world.factor_names)
    assert torch.equal(world.from_dict(d), f)
    assert torch.equal(world.render(world.from_dict(d)), x)
    binary = f[:, world.is_binary]
    assert set(binary.unique().tolist()) <= {0.0, 1.0}


def test_every_factor_is_visible_so_tables_say_exactly_what_differs():
    world = AttributeWorld()
    x, f = world.sample(100, generator=gen(4))
    for name in world.factor_names:
        i = world.index(name)
        g = f.clone()
        g[:, i] = 1 - g[:, i] if name in world.binary_factors else (g[:, i] + 0.5) % 1.0
        changed = (world.render(g) != x).flatten(1).any(1)
        assert bool(changed.all()), name


def test_squares_measure_reads_factors_from_pixels():
    world = Squares()
    x, y, f = world.sample(500, generator=gen(5))
    m = world.measure(x)
    assert torch.equal(m[:, 4:6], f[:, 4:6])  # position: exact
    assert float((m[:, 0] - y).abs().max()) < 0.005  # intensity: exact up to the noise mean
    assert float((m[:, 1:4] - f[:, 1:4]).abs().max()) < 0.005
    clean = Squares(noise=0.0)
    xc, yc, fc = clean.sample(100, generator=gen(6))
    mc = clean.measure(xc)
    assert torch.allclose(mc[:, 0], yc, atol=1e-5) and torch.allclose(mc[:, 1:4], fc[:, 1:4], atol=1e-5)


def test_attribute_world_analytic_measurements():
    world = AttributeWorld()
    x, f = world.sample(300, generator=gen(7))
    m = world.measure(x)
    hue_err = ((m["background"] - f[:, world.index("background")] + 0.5) % 1.0 - 0.5).abs()
    assert float(hue_err.max()) < 1e-4
    assert torch.equal(m["hat"], f[:, world.index("hat")])


# ---------------------------------------------------------------- causal graph
def test_causal_graph_is_followed_by_sampling():
    world = AttributeWorld()
    assert CAUSAL_GRAPH["grey_hair"] == ("age",) and world.causal_graph is CAUSAL_GRAPH
    assert world.descendants("age") == ("grey_hair", "eyeglasses")
    assert world.descendants("smile") == ("eyes_open",) and world.descendants("hat") == ()
    _, f = world.sample(6000, generator=gen(8))
    d = world.to_dict(f)
    old, young = d["age"] > 0.7, d["age"] < 0.3
    assert d["grey_hair"][old].mean() > d["grey_hair"][young].mean() + 0.4
    assert d["eyeglasses"][old].mean() > d["eyeglasses"][young].mean() + 0.15
    smile = d["smile"] > 0.5
    assert abs(float(d["eyes_open"][smile].mean()) - 0.6) < 0.03
    assert abs(float(d["eyes_open"][~smile].mean()) - 0.9) < 0.03
    assert abs(float(d["hat"].mean()) - 0.3) < 0.02  # roots are independent of everything
    assert abs(float(torch.corrcoef(torch.stack([d["hat"], d["age"]]))[0, 1])) < 0.04


def test_interventions_causal_versus_contrastive():
    world = AttributeWorld()
    _, f = world.sample(2000, generator=gen(9))
    c = world.intervene(f, {"age": 1.0}, generator=gen(10), causal=True)
    k = world.intervene(f, {"age": 1.0}, causal=False)
    a, gh = world.index("age"), world.index("grey_hair")
    assert bool((c[:, a] == 1).all()) and bool((k[:, a] == 1).all())
    others = [i for i, n in enumerate(world.factor_names) if n not in ("age", "grey_hair", "eyeglasses")]
    assert torch.equal(c[:, others], f[:, others]) and torch.equal(k[:, others], f[:, others])
    assert torch.equal(k[:, gh], f[:, gh])  # contrastive: grey hair untouched
    assert float(c[:, gh].mean()) > 0.9  # causal: grey hair follows age (p = 0.95)
    _, fd = world.sample(1000, generator=gen(11), do={"smile": 1.0, "eyeglasses": "smile"})
    assert bool((fd[:, world.index("eyeglasses")] == 1).all())
    assert abs(float(fd[:, world.index("eyes_open")].mean()) - 0.6) < 0.05  # descendant follows do(smile=1)


# ---------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    world, sq = AttributeWorld(), Squares()
    with pytest.raises(ValueError, match="`image_size` must be 32 or 64"):
        AttributeWorld(28)
    with pytest.raises(ValueError, match="`image_size` must be 32 or 64"):
        Squares(16)
    with pytest.raises(ValueError, match="`noise` and `margin`"):
        Squares(noise=0.1, margin=0.05)
    with pytest.raises(ValueError, match=r"`factors` must be \(N, 9\)"):
        world.render(torch.zeros(2, 8))
    with pytest.raises(TypeError, match="`factors` must be a Tensor"):
        sq.render([[0.0] * 7])
    with pytest.raises(ValueError, match="x and y must lie in"):
        sq.render(torch.tensor([[0.5, 0, 0, 0, 30, 0, 0]]))
    with pytest.raises(ValueError, match="`name` must be one of"):
        world.sample(2, do={"glasses": 1.0})
    with pytest.raises(ValueError, match=r"`do\['smile'\]` must be a scalar"):
        world.sample(2, do={"smile": torch.ones(3)})
    with pytest.raises(ValueError, match="`n` must be a non-negative int"):
        world.sample(-1)
    with pytest.raises(ValueError, match="`intensity` must have shape"):
        sq.sample(3, intensity=torch.zeros(2))
    with pytest.raises(ValueError, match=r"`images` must be \(N, 3, 32, 32\)"):
        sq.measure(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"`images` must be \(N, 3, 32, 32\)"):
        world.measure(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="`spurious` must be a binary factor"):
        world.sample_correlated(2, "smile", "age")
    with pytest.raises(ValueError, match="`label` and `spurious` must differ"):
        world.sample_correlated(2, "smile", "smile")
    with pytest.raises(ValueError, match=r"`agreement` must be in \[0, 1\]"):
        world.sample_correlated(2, agreement=1.5)
    with pytest.raises(ValueError, match="`table` must hold every factor"):
        world.from_dict({"age": torch.zeros(2)})
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match="must have the same shape"):
        factor_changes(sq, x, x[:1])
    with pytest.raises(TypeError, match="`world` must be an AttributeWorld or a Squares"):
        factor_changes("faces", x, x)
    with pytest.raises(ValueError, match="`tolerance` must be > 0"):
        factor_changes(sq, x, x, tolerance=0)
    with pytest.raises(ValueError, match="factor names must be in"):
        factor_changes(sq, x, x).mnac(exclude="smile")


# ---------------------------------------------------------------- ground-truth scoring
def test_squares_factor_changes_and_mnac():
    world = Squares()
    x, y, f = world.sample(100, generator=gen(12))
    g = f.clone()
    g[:, 0] = (f[:, 0] + 0.5) % 1.0
    ch = factor_changes(world, x, world.render(g))
    assert ch.names == world.measured_names
    assert bool(ch.changed[:, 0].all()) and not bool(ch.changed[:, 1:].any())
    assert torch.allclose(ch.delta[:, 0], g[:, 0] - f[:, 0], atol=0.005)
    assert ch.mnac(exclude="intensity").value == 0.0
    g[:50, 4] = (f[:50, 4] + 3) % (world.max_pos + 1)  # move half of them sideways too
    ch = factor_changes(world, x, world.render(g))
    assert ch.change_rate()["x"] == 0.5 and mnac(ch, "intensity").value == 0.5
    assert torch.equal(ch.delta[:50, 4], g[:50, 4] - f[:50, 4])


def test_mnac_by_hand():
    ch = torch.tensor([[True, True, False], [False, False, True], [False, False, False]])
    fc = FactorChanges(("a", "b", "c"), ch.float(), ch.float(), ch.float(), ch)
    assert mnac(fc).value == pytest.approx(1.0)
    assert mnac(fc, exclude=("a", "c")).value == pytest.approx(1 / 3)
    assert fc.mean_abs_delta()["a"] == pytest.approx(1 / 3)


def test_attribute_world_factor_changes_with_the_shipped_oracle(oracle):
    world = AttributeWorld()
    x, f = world.sample(300, generator=gen(13))
    g = world.intervene(f, {"smile": 1 - f[:, world.index("smile")]}, causal=False)
    ch = factor_changes(world, x, world.render(g), oracle=oracle)
    rate = ch.change_rate()
    assert rate["smile"] >= 0.95
    assert ch.mnac(exclude="smile").value <= 0.3  # only oracle noise on the other factors
    same = factor_changes(world, x, x, oracle=oracle)
    assert not bool(same.changed.any())
    plain = factor_changes(world, x, world.render(g), oracle=lambda t: oracle(t))  # a plain callable works
    assert torch.equal(plain.changed, ch.changed)


# ---------------------------------------------------------------- shipped models
@torch.no_grad()
def test_world_oracle_is_accurate_per_binary_factor(faces, oracle):
    x, f = faces
    world = AttributeWorld()
    pred = oracle.predict(x)
    acc = (pred == f).float().mean(0)
    for name in world.binary_factors:
        assert float(acc[world.index(name)]) >= 0.95, name
    mae = (pred - f).abs().mean(0)
    for name in world.continuous_factors:
        assert float(mae[world.index(name)]) <= 0.1, name


@torch.no_grad()
def test_world_vae_keeps_the_factors(faces, oracle):
    x, f = faces
    vae = load_generator("world-vae")
    assert vae.image_shape == (3, 32, 32) and vae.encode(x[:2]).free.shape == (2, 64)
    pred = oracle.predict(vae.reconstruct(x))
    world = AttributeWorld()
    ok = torch.where(world.is_binary, pred == f, (pred - f).abs() <= 0.1).float().mean(0)
    assert float(ok.mean()) >= 0.90


@torch.no_grad()
def test_planted_spurious_correlation_shows_with_the_shipped_weights():
    world = AttributeWorld()
    # like the training data, then decorrelated
    xc, fc = world.sample_correlated(1000, "smile", "eyeglasses", agreement=0.9, generator=gen(777))
    xd, fd = world.sample_correlated(1000, "smile", "eyeglasses", agreement=0.5, generator=gen(778))
    assert abs(float((fc[:, 3] == fc[:, 4]).float().mean()) - 0.9) < 0.03
    assert abs(float((fd[:, 3] == fd[:, 4]).float().mean()) - 0.5) < 0.05

    def acc(model, x, f):
        return float((model(x).argmax(1) == f[:, world.index("smile")].long()).float().mean())

    spurious, fair = load_pretrained("world-smile-spurious"), load_pretrained("world-smile-decorrelated")
    assert acc(spurious, xc, fc) - acc(spurious, xd, fd) >= 0.10
    assert acc(fair, xc, fc) - acc(fair, xd, fd) < 0.05 and acc(fair, xd, fd) >= 0.9


@torch.no_grad()
def test_squares_regressor_and_oracle_mae_on_a_fresh_test_set():
    x, y, _ = Squares().sample(1000, generator=gen(2024))
    for name in ("squares-regressor", "squares-oracle"):
        out = load_pretrained(name)(x)
        assert out.shape == (1000, 1)
        assert float((out[:, 0] - y).abs().mean()) <= 0.03, name


def test_ground_truth_scoring_reveals_the_planted_reliance(oracle):
    """Latent counterfactuals of the spurious classifier change eyeglasses; those of the decorrelated one do not."""
    from captum_cfx import LatentCounterfactualAttack

    world = AttributeWorld()
    x, _ = world.sample(24, generator=gen(99))
    vae = load_generator("world-vae")
    rates = {}
    for name in ("world-smile-spurious", "world-smile-decorrelated"):
        clf = load_pretrained(name)
        with torch.no_grad():
            target = 1 - clf(vae.reconstruct(x)).argmax(1)
        out = LatentCounterfactualAttack(clf, vae).generate(x, target=target, max_steps=200)
        assert float(out.success.float().mean()) >= 0.9
        rates[name] = factor_changes(world, out.reconstructions, out.counterfactuals, oracle=oracle).change_rate()
    assert rates["world-smile-spurious"]["eyeglasses"] >= 0.6
    assert rates["world-smile-decorrelated"]["eyeglasses"] <= 0.15
    assert rates["world-smile-decorrelated"]["smile"] >= 0.7


@torch.no_grad()
def test_world_factor_ae_coordinates_are_the_factors(faces, oracle):
    """The attribute-coded autoencoder: its codes read the factors, and moving one coordinate changes that factor
    alone (what `LatentCoordinateSearch` relies on)."""
    x, f = faces.images[:200], faces.factors[:200]
    world = AttributeWorld()
    gen = load_generator("world-factor-ae")
    code = gen.encode(x).free
    assert code.shape == (200, 9)
    binary = world.is_binary
    assert float(((code > 0).float() == f)[:, binary].float().mean()) >= 0.97
    assert float(((code + 1) / 2 - f)[:, ~binary].abs().mean()) <= 0.1
    rec = gen.decode(gen.encode(x))
    for name in ("eyeglasses", "smile"):
        j = world.index(name)
        moved = code.clone()
        moved[:, j] = -code[:, j]
        ch = factor_changes(world, rec, gen.decode(moved), oracle=oracle)
        assert ch.change_rate()[name] >= 0.9, name
        others = ch.changed.clone()
        others[:, j] = False
        assert float(others.any(1).float().mean()) <= 0.15, name


def test_coordinate_search_in_the_factor_ae_changes_the_factor_the_classifier_reads(oracle):
    from captum_cfx import LatentCoordinateSearch

    world = AttributeWorld()
    x, _ = world.sample(32, generator=gen(99))
    clf = load_pretrained("world-smile-decorrelated")
    search = LatentCoordinateSearch(clf, load_generator("world-factor-ae"))
    with torch.no_grad():
        target = 1 - clf(x).argmax(1)
    out = search.generate(x, target=target)
    assert float(out.success.float().mean()) >= 0.95 and int(out.n_steps.max()) <= 3
    moved = (out.latents.free != out.original_latents.free).float().mean(0)
    assert float(moved[world.index("smile")]) >= 0.8 and float(moved.sum()) <= 1.3  # mostly one coordinate: smile
    ch = factor_changes(world, out.reconstructions, out.counterfactuals, oracle=oracle)
    only = ch.changed[:, world.index("smile")] & (ch.changed.sum(1) == 1) & out.success
    assert float(only.float().mean()) >= 0.6
