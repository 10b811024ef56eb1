"""Sufficiency / necessity scores and latent interventions (issue F), on hand-computable linear worlds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_cfx import (
    AutoencoderGenerator,
    CounterfactualSufficiencyNecessity,
    LatentProbes,
    LinearDirections,
    ShiftPredictor,
)
from captum_cfx.attr import SufficiencyNecessityOutput, plot_sufficiency_necessity
from captum_cfx.descriptors import NotFittedError

D = 3  # latent size; attribute j is present when z_j > 0


def _world():
    """Identity decoder onto a (1, 1, 3) "image"; the oracle reads each coordinate; the model is positive when
    ``z_0 > 0`` (attribute ``a`` decides it, ``b`` and ``c`` are irrelevant)."""
    gen = AutoencoderGenerator(lambda x: x.flatten(1), lambda z: z.view(-1, 1, 1, D), input_range=None,
                               image_shape=(1, 1, D))
    model = lambda x: torch.stack([-8 * x.flatten(1)[:, 0], 8 * x.flatten(1)[:, 0]], 1)  # noqa: E731
    oracle = lambda x: torch.sigmoid(8 * x.flatten(1))  # noqa: E731
    return gen, model, oracle


@pytest.fixture(scope="module")
def fitted():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(600, D, generator=g)
    probes = LatentProbes().fit(z, (z > 0).float(), ["a", "b", "c"])
    return z, probes, LinearDirections(probes, z)


def _scores(fitted, n=300, seed=1, **kw):
    _, _, lin = fitted
    gen, model, oracle = _world()
    cf = CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle)
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(seed))
    return cf.estimate(latents=z, target=1, n_bootstrap=200, generator=torch.Generator().manual_seed(2), **kw)


# ---------------------------------------------------------------------- interventions
def test_linear_contrastive_moves_only_the_attribute(fitted):
    z, probes, lin = fitted
    z1 = lin.do(z[:50], "a", 1.0)
    logits0, logits1 = lin.presence_logits(z[:50]), lin.presence_logits(z1)
    assert bool((logits1[:, 0] > 0).all())
    torch.testing.assert_close(logits1[:, 1:], logits0[:, 1:], atol=1e-4, rtol=0)
    # already present: no step
    present = logits0[:, 0] > 0
    torch.testing.assert_close(z1[present], z[:50][present])


def test_linear_causal_follows_correlated_normals():
    # b is a noisy copy of a in the data: the causal step along a's (data-metric) direction drags b along
    g = torch.Generator().manual_seed(0)
    a = torch.randn(800, generator=g)
    z = torch.stack([a, a + 0.3 * torch.randn(800, generator=g), torch.randn(800, generator=g)], 1)
    probes = LatentProbes().fit(z, (z > 0).float(), ["a", "b", "c"])
    lin = LinearDirections(probes, z)
    rows = (z[:, 0] < -0.5) & (z[:, 1] < -0.5)
    causal = lin.presence_logits(lin.do(z[rows], "a", 1.0, mode="causal"))
    pinned = lin.presence_logits(lin.do(z[rows], "a", 1.0, mode="contrastive"))
    assert float((causal[:, 1] > 0).float().mean()) > 0.5
    assert bool((pinned[:, 1] < 0).all())


def test_do_value_in_between_is_reached_exactly(fitted):
    z, _, lin = fitted
    z1 = lin.do(z[:20], "b", 0.3, mode="causal")
    torch.testing.assert_close(torch.sigmoid(lin.presence_logits(z1)[:, 1]), torch.full((20,), 0.3, dtype=z.dtype),
                               atol=1e-4, rtol=0)


def test_shift_predictor_fit_and_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, D, generator=g)
    clf = lambda zz: 6 * zz  # noqa: E731  presence logits of three attributes
    sp = ShiftPredictor(hidden=32).fit(z, clf, ["a", "b", "c"], steps=150, batch_size=128, lr=1e-2, generator=g)
    assert sp.history_[-1] < sp.history_[0]
    zt = z[:200]
    added = sp.do(zt, "a", 1.0, mode="contrastive")
    assert float((added[:, 0] > 0).float().mean()) > 0.9
    sp.save_pretrained(tmp_path / "sp")
    back = ShiftPredictor.from_pretrained(tmp_path / "sp", classifier=clf)
    assert back.names_ == ["a", "b", "c"]
    torch.testing.assert_close(back.do(zt, "a", 1.0, mode="contrastive"), added)
    c = torch.zeros(200, 3)
    c[:, 2] = -1
    torch.testing.assert_close(back.apply(zt, c), sp.apply(zt, c))
    # without a classifier, the contrastive mode needs the current state
    bare = ShiftPredictor.from_pretrained(tmp_path / "sp")
    with pytest.raises(ValueError, match="`state` is required"):
        bare.do(zt, "a", 1.0)
    torch.testing.assert_close(bare.do(zt, "a", 1.0, state=(zt > 0).float()), added)


# ---------------------------------------------------------------------- scores
def test_scores_match_the_hand_computed_world(fitted):
    res = _scores(fitted)
    assert isinstance(res, SufficiencyNecessityOutput)
    # a decides the model: removing it always flips a positive, adding it always flips a negative
    assert float(res.nec[0]) == 1.0 and float(res.suf[0]) == 1.0 and float(res.nesuf[0]) == 1.0
    # b and c are irrelevant (their fitted normals are not exactly orthogonal to a's: a few boundary cases flip)
    assert float(res.nec[1:].max()) <= 0.05 and float(res.suf[1:].max()) <= 0.05
    assert float(res.kept.min()) > 0.95
    lo, hi = res.suf_ci[:, 0], res.suf_ci[:, 1]
    assert bool(((lo <= res.suf) & (res.suf <= hi)).all())
    assert int(res.n_nec[0]) == int((res.state[:, 0] & (res.prob > 0.5)).sum())


def test_confidence_intervals_shrink_with_more_samples():
    # a model that follows attribute a only half of the time: scores near 0.5 with real uncertainty
    g = torch.Generator().manual_seed(0)
    z = torch.randn(600, D, generator=g)
    lin = LinearDirections(LatentProbes().fit(z, (z > 0).float(), ["a", "b", "c"]), z)
    gen, _, oracle = _world()
    model = lambda x: torch.stack([torch.zeros(len(x)), 8 * x.flatten(1)[:, 0] * torch.sign(x.flatten(1)[:, 2])], 1)  # noqa: E731
    cf = CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle)
    widths = []
    for n in (60, 1500):
        zz = torch.randn(n, D, generator=torch.Generator().manual_seed(5))
        r = cf.estimate(latents=zz, target=1, n_bootstrap=300, generator=torch.Generator().manual_seed(3))
        widths.append(float(r.nesuf_ci[0, 1] - r.nesuf_ci[0, 0]))
        assert 0.2 < float(r.nesuf[0]) < 0.8
    assert widths[1] < 0.5 * widths[0]


def test_validity_filter_drops_interventions_the_oracle_rejects(fitted):
    _, _, lin = fitted
    gen, model, _ = _world()
    # this oracle never sees attribute c present: every added c fails the filter
    oracle = lambda x: torch.sigmoid(8 * x.flatten(1)) * torch.tensor([1.0, 1.0, 0.0])  # noqa: E731
    cf = CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle)
    z = torch.randn(200, D, generator=torch.Generator().manual_seed(1))
    res = cf.estimate(latents=z, target=1, n_bootstrap=50)
    assert float(res.kept_add[2]) == 0.0 and float(res.kept_add[0]) > 0.95
    assert int(res.n_nesuf[2]) == 0 and torch.isnan(res.nesuf[2])
    assert not bool(res.valid_add[:, 2].any())


def test_modes_and_causal_graph(fitted):
    # b := a in the graph: the graph-following causal mode redraws b when a is set; contrastive keeps it
    _, _, lin = fitted
    gen, _, oracle = _world()
    model = lambda x: torch.stack([torch.zeros(len(x)), 8 * x.flatten(1)[:, 1]], 1)  # noqa: E731  uses b only
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, generator=g)
    z = torch.stack([a, a + 0.1 * torch.randn(400, generator=g), torch.randn(400, generator=g)], 1)
    graph = {"a": (), "b": ("a",), "c": ()}
    cf = CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle, causal_graph=graph)
    assert cf.descendants("a") == ["b"]
    con = cf.estimate(latents=z, target=1, n_bootstrap=100, generator=torch.Generator().manual_seed(1))
    cau = cf.estimate(latents=z, target=1, n_bootstrap=100, mode="causal", generator=torch.Generator().manual_seed(1))
    assert float(con.suf[0]) < 0.05 < 0.8 < float(cau.suf[0])
    # c has no descendants: both modes make the same requests
    torch.testing.assert_close(con.suf[2], cau.suf[2], equal_nan=True)


def test_prior_samples_attribute_and_figures(fitted):
    _, _, lin = fitted
    gen, model, oracle = _world()
    cf = CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle)
    res = cf.estimate(n_samples=64, target=1, n_bootstrap=20, generator=torch.Generator().manual_seed(0))
    assert res.latents.shape == (64, D) and res.latents_add.shape == (64, D, D)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(10, 1, 1, D, generator=g)
    x[..., 0] = torch.sign(x[..., 0]) * (0.5 + torch.rand(10, 1, 1, generator=g))  # away from a's boundary
    eff = cf.attribute(x, target=1)
    assert eff.shape == (10, D)
    torch.testing.assert_close(eff[:, 0], torch.ones(10), atol=0.01, rtol=0)
    assert float(eff[:, 1:].abs().max()) < 0.01
    assert cf.attribute.__wrapped__ is not None  # Captum's log_usage wrapper
    fig = plot_sufficiency_necessity({"contrastive": res, "again": res})
    assert len(fig.axes) == 2
    fig = cf.plot_examples(res, ["a"], n=2, target=1)
    assert len(fig.axes) == 4
    d = res.to_dict()
    assert set(d) == {"a", "b", "c"} and {"nec", "suf_ci", "kept_add"} <= set(d["a"])


# ---------------------------------------------------------------------- bad inputs
def test_bad_inputs(fitted, tmp_path):
    z, probes, lin = fitted
    gen, model, oracle = _world()
    with pytest.raises(TypeError, match="`intervention` must be a LatentIntervention"):
        CounterfactualSufficiencyNecessity(model, gen, probes, oracle=oracle)
    with pytest.raises(TypeError, match="`oracle` must be callable"):
        CounterfactualSufficiencyNecessity(model, gen, lin, oracle="oracle")
    with pytest.raises(ValueError, match="`thresholds` must name attributes"):
        CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle, thresholds={"zz": 0.1})
    with pytest.raises(ValueError, match="`causal_graph` must be acyclic"):
        CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle, causal_graph={"a": ("b",), "b": ("a",)})
    cf = CounterfactualSufficiencyNecessity(model, gen, lin, oracle=oracle)
    with pytest.raises(ValueError, match="give exactly one of `inputs`"):
        cf.estimate(target=1)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        cf.estimate(latents=z[:5], mode="both")
    with pytest.raises(ValueError, match="`confidence` must be a float in"):
        cf.estimate(latents=z[:5], confidence=95)
    with pytest.raises(TypeError, match="`target` must be an int"):
        cf.estimate(latents=z[:5], target=1.0)
    with pytest.raises(ValueError, match=r"`target` must have one entry per example \(5\)"):
        cf.estimate(latents=z[:5], target=[1, 1])
    with pytest.raises(ValueError, match="`target` must be a class index"):
        cf.estimate(latents=z[:5], target=7)
    bad = CounterfactualSufficiencyNecessity(model, gen, lin, oracle=lambda x: x.flatten(1)[:, :2])
    with pytest.raises(ValueError, match=r"`oracle` must return \(5, 3\) readings"):
        bad.estimate(latents=z[:5], target=1)
    with pytest.raises(ValueError, match="`attribute` must be a name from"):
        lin.do(z[:5], "zz", 1.0)
    with pytest.raises(ValueError, match="`value` must be a presence in"):
        lin.do(z[:5], "a", 2.0)
    with pytest.raises(ValueError, match="`latents` must have 3 latent features"):
        lin.do(torch.randn(5, 4), "a", 1.0)
    with pytest.raises(ValueError, match="`requests` must only hold"):
        lin.apply(z[:5], torch.full((5, 3), 0.5))
    with pytest.raises(ValueError, match=r"`state` must be an \(5, 3\) tensor"):
        lin.do(z[:5], "a", 1.0, state=torch.ones(5, 2))
    with pytest.raises(TypeError, match="`probes` must be fitted LatentProbes"):
        LinearDirections("probes")
    with pytest.raises(NotFittedError, match="not fitted"):
        ShiftPredictor().do(z[:5], "a", 1.0)
    with pytest.raises(ValueError, match="`hidden` must be a positive int"):
        ShiftPredictor(hidden=0)
    with pytest.raises(ValueError, match=r"`classifier` must return \(N, k\) presence logits"):
        ShiftPredictor().fit(z, lambda zz: zz[:, 0], steps=1)
    with pytest.raises(ValueError, match="`directory` must hold config.json"):
        ShiftPredictor.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="`results` must be a SufficiencyNecessityOutput"):
        plot_sufficiency_necessity({})


def test_shift_predictor_trains_through_a_decoder_quickly():
    # the paper's setting in miniature: S is trained against an image classifier behind a decoder
    torch.manual_seed(0)
    dec = nn.Linear(D, 8)
    clf = nn.Linear(8, D)
    with torch.no_grad():
        clf.weight.copy_(6 * torch.linalg.pinv(dec.weight))
        clf.bias.copy_(-clf.weight @ dec.bias)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, D, generator=g)
    sp = ShiftPredictor(hidden=32).fit(z, lambda zz: clf(dec(zz)), ["a", "b", "c"], steps=150, batch_size=64,
                                       lr=1e-2, generator=g)
    out = clf(dec(sp.do(z, "b", 0.0, mode="causal")))
    assert float((out[:, 1] < 0).float().mean()) > 0.9
