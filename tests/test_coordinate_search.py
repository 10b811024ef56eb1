"""LatentCoordinateSearch: the greedy best-first search over latent coordinates (issue R)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captum_cfx import AutoencoderGenerator, LatentCoordinateSearch, LogitMargin
from captum_cfx.objectives import Flip, TargetClass

D, SIDE = 4, 4  # latent coordinates; each paints its own row of a 4x4 image


def _decode(z: Tensor) -> Tensor:
    """Coordinate ``j`` sets row ``j`` of the image to ``sigmoid(z_j)``."""
    return torch.sigmoid(z)[:, None, :, None].expand(-1, 1, D, SIDE).contiguous()


def _encode(x: Tensor) -> Tensor:
    return torch.logit(x[:, 0, :, 0].clamp(1e-4, 1 - 1e-4))


GEN = AutoencoderGenerator(_encode, _decode, (0.0, 1.0), image_shape=(1, D, SIDE))


class RowModel(nn.Module):
    """Two logits; class 1 wins when ``sum_j w_j * mean(row_j) > bias``."""

    def __init__(self, w: list[float], bias: float) -> None:
        super().__init__()
        self.w, self.bias = torch.tensor(w), bias

    def forward(self, x: Tensor) -> Tensor:
        s = x[:, 0].mean(2) @ self.w - self.bias
        return torch.stack([-s, s], 1) * 10


def _images(z: list[list[float]]) -> Tensor:
    return _decode(torch.tensor(z))


def _changed(out) -> Tensor:
    return out.latents.free != out.original_latents.free


VALUES = torch.tensor([-3.0, 0.0, 3.0])


def test_changes_only_the_coordinate_the_model_reads() -> None:
    model = RowModel([0.0, 0.0, 1.0, 0.0], 0.5)
    x = _images([[-3.0, 3.0, -3.0, 0.0], [3.0, -3.0, -3.0, 3.0], [0.0, 0.0, -3.0, -3.0]])
    out = LatentCoordinateSearch(model, GEN).generate(x, target=1, values=VALUES)
    assert out.success.all() and (out.predictions.argmax(1) == 1).all()
    assert _changed(out).tolist() == [[False, False, True, False]] * 3
    assert out.n_steps.tolist() == [1, 1, 1]
    # the other rows of the image are untouched; the attribution map lives on row 2 only
    maps = LatentCoordinateSearch(model, GEN).attribute(x, target=1, values=VALUES)
    assert maps.shape == x.shape and maps[:, :, [0, 1, 3]].abs().max() < 1e-6 and (maps[:, :, 2] > 0.4).all()


def test_two_coordinates_when_one_is_not_enough() -> None:
    model = RowModel([1.0, 1.0, 0.0, 0.0], 1.5)  # needs rows 0 and 1 both bright
    x = _images([[-3.0, -3.0, 0.0, 0.0]])
    out = LatentCoordinateSearch(model, GEN).generate(x, target=1, values=VALUES)
    assert out.success.item() and out.n_steps.item() == 2
    assert _changed(out)[0].tolist() == [True, True, False, False]
    # one change allowed: reported as a failure, with the best single change it found
    one = LatentCoordinateSearch(model, GEN).generate(x, target=1, values=VALUES, max_changes=1)
    assert not one.success.item() and one.n_steps.item() == 1 and int(_changed(one).sum()) == 1


def test_stops_when_no_candidate_improves() -> None:
    model = RowModel([0.0, 0.0, 0.0, 0.0], 1.0)  # blind to the image: nothing can help
    out = LatentCoordinateSearch(model, GEN).generate(_images([[0.0] * 4]), target=1, values=VALUES)
    assert not out.success.item() and out.n_steps.item() == 0 and not _changed(out).any()


def test_select_effect_vs_pixels() -> None:
    # row 0 has the larger weight (the larger effect), but reaching with it takes the larger pixel change
    model = RowModel([2.0, 1.0, 0.0, 0.0], 0.7)
    x = _images([[-3.0, 0.0, 0.0, 0.0]])
    values = torch.tensor([[-3.0, 3.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    effect = LatentCoordinateSearch(model, GEN).generate(x, target=1, values=values)
    pixels = LatentCoordinateSearch(model, GEN).generate(x, target=1, values=values, select="pixels")
    assert effect.success.item() and pixels.success.item()
    assert _changed(effect)[0].tolist() == [True, False, False, False]
    assert _changed(pixels)[0].tolist() == [False, True, False, False]


def test_default_values_are_the_batch_quantiles() -> None:
    model = RowModel([0.0, 1.0, 0.0, 0.0], 0.5)
    z = torch.tensor([[0.0, -2.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    out = LatentCoordinateSearch(model, GEN).generate(_decode(z), target=1)
    # the two dark rows move to a value the batch takes on coordinate 1 (quantiles of -2, -1, 2)
    moved = out.latents.free[:2, 1]
    q = torch.quantile(out.original_latents.free[:, 1], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert out.success.all() and all(bool((q - m).abs().min() < 1e-6) for m in moved)


def test_other_objectives_and_a_one_element_target() -> None:
    model = RowModel([0.0, 0.0, 1.0, 0.0], 0.5)
    x = _images([[0.0, 0.0, -3.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    flip = LatentCoordinateSearch(model, GEN).generate(x, values=VALUES, objective=Flip())
    assert flip.success.all() and (flip.predictions.argmax(1) != model(x).argmax(1)).all()
    tc = LatentCoordinateSearch(model, GEN).generate(x, target=torch.tensor([1]), values=VALUES,
                                                     objective=TargetClass(0.9))
    assert tc.success.all() and (tc.predictions.softmax(1)[:, 1] >= 0.9).all()


def test_objective_scores_are_unclamped() -> None:
    out = torch.tensor([[0.0, 1.0], [0.0, 5.0]])
    goal = torch.tensor([1, 1])
    m = LogitMargin(0.5)
    assert m.loss(out, goal).tolist() == [0.0, 0.0]  # both done: the loss cannot tell them apart
    assert m.score(out, goal).tolist() == [-1.0, -5.0]  # the score can
    assert Flip().score(out, torch.tensor([0, 0])).tolist() == [-1.0, -5.0]


def test_a_failing_sample_does_not_poison_its_batch() -> None:
    class NaNFirst(RowModel):
        def forward(self, x: Tensor) -> Tensor:
            out = super().forward(x)
            return torch.where(x[:, :, 3].mean((1, 2))[:, None] < 0.01, float("nan"), out)

    model = NaNFirst([0.0, 0.0, 1.0, 0.0], 0.5)
    x = _images([[0.0, 0.0, -3.0, -8.0], [0.0, 0.0, -3.0, 0.0]])
    out = LatentCoordinateSearch(model, GEN).generate(x, target=1, values=VALUES)
    assert out.nonfinite.tolist() == [True, False]
    assert out.success.tolist() == [False, True] and _changed(out)[1].tolist() == [False, False, True, False]


def test_candidate_chunks_and_extra_arguments() -> None:
    class Scaled(RowModel):
        def forward(self, x: Tensor, scale: Tensor) -> Tensor:
            return super().forward(x) * scale[:, None]

    model = Scaled([0.0, 1.0, 1.0, 0.0], 0.5)
    x = _images([[0.0, -3.0, -3.0, 0.0], [0.0, 3.0, 3.0, 0.0], [0.0, 3.0, -3.0, 0.0]])
    scale = torch.tensor([1.0, -1.0, 1.0])  # the second sample's logits are mirrored: it must darken both rows
    search = LatentCoordinateSearch(model, GEN)
    a = search.generate(x, target=1, values=VALUES, additional_forward_args=(scale,))
    b = search.generate(x, target=1, values=VALUES, additional_forward_args=(scale,), candidate_batch_size=1)
    assert torch.equal(a.counterfactuals, b.counterfactuals) and torch.equal(a.success, b.success)
    assert a.success.all() and a.n_steps.tolist() == [1, 2, 0]  # the third starts at the target


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"values": torch.zeros(3, 2)}, r"`values` must be \(G,\) or \(4, G\)"),
    ({"values": torch.tensor([0.0, float("nan")])}, "`values` must be finite"),
    ({"values": "abc"}, "`values` must be"),
    ({"max_changes": 0}, "max_changes"),
    ({"candidate_batch_size": 0}, "candidate_batch_size"),
    ({"select": "smallest"}, "`select` must be .effect."),
])
def test_bad_settings_name_the_argument(kwargs: dict, match: str) -> None:
    model = RowModel([0.0, 0.0, 1.0, 0.0], 0.5)
    with pytest.raises((ValueError, TypeError), match=match):
        LatentCoordinateSearch(model, GEN).generate(_images([[0.0] * 4, [1.0] * 4]), target=1, **kwargs)


def test_chunks_of_inputs_share_the_batch_quantiles() -> None:
    model = RowModel([0.0, 1.0, 1.0, 0.0], 1.2)
    z = torch.linspace(-3, 3, 7)[:, None] * torch.tensor([[1.0, -1.0, 0.5, 2.0]])
    search = LatentCoordinateSearch(model, GEN)
    whole = search.generate(_decode(z), target=1)
    chunked = search.generate(_decode(z), target=1, internal_batch_size=2)
    assert whole.success.any() and torch.equal(whole.latents.free, chunked.latents.free)
    assert torch.equal(whole.success, chunked.success) and torch.equal(whole.n_steps, chunked.n_steps)
    # the quantiles of a chunk alone would be other values: the chunked search must not use them
    alone = search.generate(_decode(z[:2]), target=1)
    assert not torch.equal(alone.latents.free, whole.latents.free[:2])


def test_one_input_needs_explicit_values() -> None:
    model = RowModel([0.0, 0.0, 1.0, 0.0], 0.5)
    with pytest.raises(ValueError, match="`values` must be given when explaining fewer than 2 inputs"):
        LatentCoordinateSearch(model, GEN).generate(_images([[0.0] * 4]), target=1)
