"""Refilling (continuous batching), compaction every k steps and mixed precision in the search engine.

Per-sample results must not depend on when a sample entered the batch nor on who else is in it. On the
CPU, BLAS takes other kernels for one or two rows, so ``nn.Linear`` rows depend (in the last bit) on the
batch size; the bit-for-bit checks therefore use layers whose rows cannot depend on the batch
(a product and a sum per row), and the ``nn.Linear``/``Conv2d`` models are checked within float tolerance.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from captum_cfx import LatentCounterfactualAttack, VAEGenerator
from captum_cfx._search import ActiveSet, Entrants, Step

DATA = Path(__file__).parent / "data"
FIELDS = ("counterfactuals", "predictions", "success", "n_steps", "nonfinite", "reconstructions",
          "original_predictions", "goals")


class RowLinear(nn.Module):
    """``x @ W.T + b`` as a product and a sum per row: no BLAS kernel whose choice depends on the batch size."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)
        self.b = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, None, :] * self.w).sum(-1) + self.b


class RowVAE(nn.Module):
    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.enc, self.dec = RowLinear(64, 2 * d), RowLinear(d, 64)

    def encode(self, x):
        return self.enc(x.flatten(1)).chunk(2, dim=1)

    def decode(self, z):
        return torch.sigmoid(4 * self.dec(z)).view(-1, 1, 8, 8)


class RowClassifier(nn.Module):
    """Three classes; rows whose ``poison`` is 1 give NaN logits (non-finite isolation under refilling)."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = RowLinear(64, 8), RowLinear(8, 3)

    def forward(self, x, poison):
        out = 10 * self.l2(torch.tanh(self.l1(x.flatten(1) - 0.5)))
        return out + torch.where(poison[:, None] > 0, torch.nan, 0.0)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(((a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else a == b).all())


@pytest.fixture(scope="module")
def row_world():
    torch.manual_seed(0)
    gen = VAEGenerator(RowVAE(), image_shape=(1, 8, 8)).double()
    clf = RowClassifier().double()
    x = torch.rand(23, 1, 8, 8, dtype=torch.float64)
    tgt = torch.randint(0, 3, (23,), generator=torch.Generator().manual_seed(1))
    poison = torch.zeros(23, dtype=torch.float64)
    poison[6] = 1.0
    attack = LatentCounterfactualAttack(clf, gen)
    kw = dict(target=tgt, additional_forward_args=(poison,), max_steps=25, lr=0.05, margin=4.0)
    return attack, x, kw, attack.generate(x, **kw)


def test_reference_run_has_early_stops_failures_and_a_nonfinite_sample(row_world):
    *_, ref = row_world
    assert ref.nonfinite.tolist().count(True) == 1 and bool(ref.nonfinite[6])
    assert (ref.success & (ref.n_steps < 25)).sum() >= 3  # early stops, at several steps
    assert len(set(ref.n_steps[ref.success].tolist())) >= 3
    assert (~ref.success & ~ref.nonfinite).sum() >= 3  # failures run to the step limit (the tail)
    assert (ref.n_steps[~ref.success & ~ref.nonfinite] == 25).all()


@pytest.mark.parametrize("opts", [dict(max_batch=1), dict(max_batch=4), dict(max_batch=9), dict(max_batch=100),
                                  dict(check_every=3), dict(max_batch=5, check_every=4)])
def test_refilling_and_check_every_are_bit_identical_in_float64(row_world, opts):
    attack, x, kw, ref = row_world
    out = attack.generate(x, **kw, **opts)
    differ = [f for f in FIELDS if not _same(getattr(out, f), getattr(ref, f))]
    assert differ == []
    assert _same(out.latents.free, ref.latents.free) and _same(out.original_latents.free, ref.original_latents.free)
    sizes = [s for s, _ in out.active_batch_sizes]
    if "max_batch" in opts:
        b = opts["max_batch"]
        assert max(sizes) <= b
        if b < len(x):  # refilling keeps the batch full while samples wait: fewer passes than chunks would take
            assert sizes[0] == b
            chunked = attack.generate(x, **kw, internal_batch_size=b)
            assert len(sizes) < len(chunked.active_batch_sizes) or b == 1
            assert all(_same(getattr(chunked, f), getattr(out, f)) for f in FIELDS)


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_search_golden", DATA / "make_search_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_refilling_within_float_tolerance_with_blas_layers_in_float32():
    # the engine's golden models: nn.Linear and Conv2d, float32; rows depend on the batch in the last bits
    m = _golden_module().models()
    torch.manual_seed(4)
    x = torch.rand(30, 1, 8, 8)
    tgt = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(2))
    attack = LatentCounterfactualAttack(m["clf"], m["vae"])
    kw = dict(target=tgt, max_steps=30, lr=0.2, margin=1.0)
    ref = attack.generate(x, **kw)
    assert 0 < ref.success.sum() < 30
    for opts in (dict(max_batch=4), dict(max_batch=11, check_every=2)):
        out = attack.generate(x, **kw, **opts)
        assert torch.equal(out.success, ref.success) and torch.equal(out.n_steps, ref.n_steps)
        torch.testing.assert_close(out.latents.free, ref.latents.free, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.counterfactuals, ref.counterfactuals, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.predictions, ref.predictions, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_runs_in_low_precision_and_returns_full_precision():
    mod = _golden_module()
    m = mod.models()
    seen = []

    def spy(img):
        seen.append(img.dtype)
        return m["clf"](img)

    x, tgt = m["x"], [1, 2, 0, 1, 2, 0, 1]
    kw = dict(target=tgt, max_steps=40, lr=0.2, margin=1.0)
    ref = LatentCounterfactualAttack(m["clf"], m["vae"]).generate(x, **kw)
    out = LatentCounterfactualAttack(spy, m["vae"]).generate(x, **kw, autocast=torch.bfloat16)
    # the encoding (outside the search) in full precision, the search's decodes under autocast in bf16
    assert seen[0] == torch.float32 and set(seen[1:]) == {torch.bfloat16}
    assert out.counterfactuals.dtype == out.latents.free.dtype == out.predictions.dtype == torch.float32
    assert out.nonfinite.sum() == 0
    # low precision changes the bits, not the outcome of most searches
    assert (out.success == ref.success).float().mean() >= 0.7
    assert not torch.equal(out.latents.free, ref.latents.free)


def test_active_set_admits_in_row_order_and_counts_steps_per_sample():
    # z_i counts down by 1 per step from its start value; done at <= 0; at most 2 in flight
    start = torch.tensor([1.0, 3.0, 0.0, 2.0, 9.0])
    entered = []

    def admit(a: ActiveSet, lo: int, hi: int) -> Entrants:
        entered.append((a.t, lo, hi))
        return Entrants(vars={"z": start[lo:hi, None].clone()}, results={"z": start[lo:hi, None].clone()})

    def step(a: ActiveSet, last: bool) -> Step:
        z = a.vars["z"]
        return Step(done=z[:, 0] <= 0, finite=torch.ones(len(a), dtype=torch.bool), values={"z": z},
                    grad=torch.ones_like(z))

    def update(a: ActiveSet, grad: torch.Tensor) -> None:
        a.vars["z"] = a.vars["z"] - grad

    a = ActiveSet(5, torch.device("cpu")).run(step, update, max_steps=4, admit=admit, max_batch=2)
    # rows 0, 1 at pass 0; row 0 stops at pass 1, so row 2 enters at pass 2 (and stops at once, z = 0); ...
    assert entered == [(0, 0, 2), (2, 2, 3), (3, 3, 4), (4, 4, 5)]
    assert a.n_steps.tolist() == [1, 3, 0, 2, 4]
    assert a.success.tolist() == [True, True, True, True, False]
    assert a.results["z"].flatten().tolist() == [0.0, 0.0, 0.0, 0.0, 5.0]
    assert [s for s, _ in a.sizes] == [2, 2, 2, 2, 2, 2, 1, 1, 1]  # row 4 alone at the end, stopped at 4 steps


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_batch=0), "`max_batch`"),
    (dict(max_batch=2.5), "`max_batch` must be an int"),
    (dict(check_every=0), "`check_every`"),
    (dict(autocast=torch.float64), "`autocast`"),
])
def test_bad_throughput_settings(row_world, kwargs, match):
    attack, x, kw, _ = row_world
    with pytest.raises((ValueError, TypeError), match=match):
        attack.generate(x[:2], **{**kw, "target": kw["target"][:2],
                                  "additional_forward_args": (kw["additional_forward_args"][0][:2],)}, **kwargs)


# ----------------------------------------------------------------- the data-set runner
def test_runner_refilling_groups_resume_byte_identical_and_match_per_shard_runs(tmp_path, mnist_test, shipped):
    import json
    import shutil

    import numpy as np

    from captum_cfx.runner import RunConfig, make_explain_fn, run_sharded

    clf, _, gen = shipped
    x, y = mnist_test
    np.savez(tmp_path / "d.npz", images=x[:24].numpy(), labels=y[:24].numpy())
    base = dict(data=str(tmp_path / "d.npz"), shard_size=6, max_steps=30)
    plain = RunConfig(**base)
    refill = RunConfig(**base, max_batch=4, group_shards=2)
    run_sharded(plain, tmp_path / "plain", make_explain_fn(clf, gen, None, plain), progress=False)
    assert "max_batch" not in json.loads((tmp_path / "plain" / "run.json").read_text())  # default run.json as before

    fn = make_explain_fn(clf, gen, None, refill)
    groups = []
    many = fn.many
    fn.many = lambda items: groups.append([s for *_, s in items]) or many(items)
    run_sharded(refill, tmp_path / "a", fn, progress=False)
    assert groups == [[0, 1], [2, 3]]  # one search per group of two shards
    # a kill: group 0 half-written (shard 1 has no sidecar), group 1 with a corrupted shard
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "shard_00001.json").unlink()
    (tmp_path / "b" / "shard_00002.safetensors").write_bytes(b"garbage")
    before = (tmp_path / "b" / "shard_00000.json").stat().st_mtime_ns
    groups.clear()
    run_sharded(refill, tmp_path / "b", fn, resume=True, progress=False)
    assert groups == [[0, 1], [2, 3]]  # half-written groups are recomputed whole
    assert (tmp_path / "b" / "shard_00000.json").stat().st_mtime_ns == before  # done shards are not rewritten
    for k in range(4):
        name = f"shard_{k:05d}.safetensors"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the same searches as shard by shard without refilling, up to float32 rounding: other batch sizes take
    # other conv/matmul kernels, so a sample that crosses the margin right at a step may stop one step apart
    from safetensors.torch import load_file

    p, r = ({key: torch.cat([load_file(str(tmp_path / d / f"shard_{k:05d}.safetensors"))[key] for k in range(4)])
             for key in ("success", "n_steps", "targets", "latents")} for d in ("plain", "a"))
    assert torch.equal(p["targets"], r["targets"]) and torch.equal(p["success"], r["success"])
    assert 0 < int(r["success"].sum()) < 24
    same = p["n_steps"] == r["n_steps"]
    assert same.float().mean() >= 0.9 and ((p["n_steps"] - r["n_steps"]).abs() <= 1).all()
    torch.testing.assert_close(p["latents"][same], r["latents"][same], rtol=1e-3, atol=1e-3)


def test_runner_ranks_take_whole_groups(tmp_path, monkeypatch):
    from captum_cfx import runner
    from captum_cfx.runner import RunConfig, run_sharded

    calls = []

    def compute(x, y, seed):
        raise AssertionError("groups of several shards go through `many`")

    def many(items):
        calls.append([s for *_, s in items])
        return [{"success": torch.ones(len(x), dtype=torch.bool), "mean": x.flatten(1).mean(1)} for x, _, _ in items]

    compute.many = many
    cfg = RunConfig(data="mnist-test", shard_size=10, limit=70, group_shards=3)
    monkeypatch.setattr(runner, "_init_distributed", lambda: False)
    for rank in (1, 0):
        monkeypatch.setattr(runner, "rank_info", lambda r=rank: (r, 2))
        calls.clear()
        run_sharded(cfg, tmp_path / "run", compute, progress=False, resume=True)
        assert calls == ([[0, 1, 2], [6]] if rank == 0 else [[3, 4, 5]])
    with pytest.raises(ValueError, match="`group_shards`"):
        RunConfig(data="mnist-test", group_shards=0).check()
    with pytest.raises(ValueError, match="`max_batch`"):
        RunConfig(data="mnist-test", max_batch=0).check()


@pytest.mark.parametrize("flag, match", [("--max-batch", "`max_batch`"), ("--group-shards", "`group_shards`")])
def test_cli_refilling_flags_are_checked(flag, match, tmp_path, capsys):
    from captum_cfx.cli import main

    code = main(["explain", "--data", "mnist-test", "--limit", "4", flag, "0", "--out", str(tmp_path / "o"),
                 "--no-progress"])
    assert code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is written
