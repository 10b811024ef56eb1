"""COUT, the counterfactual transition score: does inserting the counterfactual's changes, largest first,
move the model from the source class to the target class early?

Khorram & Fuxin, *Cycle-Consistent Counterfactuals by Latent Transformations* (CVPR 2022): order the
pixels by how much the counterfactual changed them, ``sum_c |x'_c - x_c|``, largest first; insert the
counterfactual's pixels into the original in ``n_chunks`` equal chunks; after every chunk read the model's
probability of the target class and of the source class. COUT is the area under the target curve minus the
area under the source curve, both over the inserted fraction ``[0, 1]``, so it lies in ``[-1, 1]``: high when
a few of the most-changed pixels already carry the decision (a compact, relevant change), near 0 or negative
when they do not.

How this differs from the reference evaluation code: exactly ``n_chunks`` chunks whose boundaries are
``round(k * P / n_chunks)`` (``P`` pixel positions), so the last point is the counterfactual itself; ties in
``|x' - x|`` are broken by pixel index (a stable sort), which makes the score deterministic; and both
softmax models (``(N, K)`` logits) and one-logit binary models (``(N,)`` or ``(N, 1)``, sigmoid) are read.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from captum_cfx.metrics.basic import MetricResult

__all__ = ["cout", "cout_curves"]


def _probs(model: Callable[[Tensor], Tensor], x: Tensor, source: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    out = model(x)
    if out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1):
        p1 = torch.sigmoid(out.reshape(-1))
        probs = torch.stack([1 - p1, p1], 1)
    elif out.dim() == 2:
        probs = torch.softmax(out, 1)
    else:
        raise ValueError(f"`model` must return (N, K) logits or (N,) / (N, 1) binary logits; got {tuple(out.shape)}")
    k = probs.shape[1]
    if int(source.max()) >= k or int(target.max()) >= k or int(source.min()) < 0 or int(target.min()) < 0:
        raise ValueError(f"`source` and `target` must be class indices in [0, {k - 1}]")
    return probs.gather(1, target[:, None])[:, 0], probs.gather(1, source[:, None])[:, 0]


def _check(originals: Tensor, counterfactuals: Tensor, source: Tensor, target: Tensor, n_chunks: int) -> None:
    for name, t in (("originals", originals), ("counterfactuals", counterfactuals), ("source", source),
                    ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor; got {type(t).__name__}")
    if originals.dim() != 4:
        raise ValueError(f"`originals` must be images (N, C, H, W); got shape {tuple(originals.shape)}")
    if counterfactuals.shape != originals.shape:
        raise ValueError(f"`counterfactuals` must have the shape of `originals` {tuple(originals.shape)}; got "
                         f"{tuple(counterfactuals.shape)}")
    n = originals.shape[0]
    for name, t in (("source", source), ("target", target)):
        if t.shape != (n,) or t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"`{name}` must be ({n},) integer class indices; got {t.dtype} of shape {tuple(t.shape)}")
    if isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < 1:
        raise ValueError(f"`n_chunks` must be a positive int; got {n_chunks!r}")


@torch.no_grad()
def cout_curves(model: Callable[[Tensor], Tensor], originals: Tensor, counterfactuals: Tensor, source: Tensor,
                *, target: Tensor, n_chunks: int = 50, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """The insertion curves behind :func:`cout`: target and source probabilities after each chunk.

    Args:
        model: a classifier, ``(N, C, H, W) -> (N, K)`` logits, or a one-logit binary model.
        originals, counterfactuals: paired images.
        source: the class each original is moved away from; target: the class it is moved to.
        n_chunks: number of insertion chunks (the reference uses 50).
        batch_size: images per model call.

    Shape:
        - originals, counterfactuals: ``(N, C, H, W)``; source, target: ``(N,)``.
        - returns two ``(N, n_chunks + 1)`` tensors in ``[0, 1]``: column ``k`` is read after ``k``
          chunks (column 0: the original, column ``n_chunks``: the counterfactual).
    """
    _check(originals, counterfactuals, source, target, n_chunks)
    n, c, h, w = originals.shape
    pix = h * w
    bounds = [round(k * pix / n_chunks) for k in range(n_chunks + 1)]
    tgt_curves, src_curves = [], []
    for lo in range(0, n, batch_size):
        x = originals[lo : lo + batch_size]
        xc = counterfactuals[lo : lo + batch_size].to(x)
        s, t = source[lo : lo + batch_size].to(x.device), target[lo : lo + batch_size].to(x.device)
        m = x.shape[0]
        change = (xc - x).abs().sum(1).reshape(m, pix)
        order = torch.sort(-change, dim=1, stable=True).indices  # largest change first, ties by pixel index
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(pix, device=x.device).expand(m, pix))
        pt, ps = [], []
        for k in range(n_chunks + 1):
            mask = (rank < bounds[k]).reshape(m, 1, h, w).to(x.dtype)
            a, b = _probs(model, x + mask * (xc - x), s, t)
            pt.append(a)
            ps.append(b)
        tgt_curves.append(torch.stack(pt, 1))
        src_curves.append(torch.stack(ps, 1))
    if not tgt_curves:
        return originals.new_zeros(0, n_chunks + 1), originals.new_zeros(0, n_chunks + 1)
    return torch.cat(tgt_curves), torch.cat(src_curves)


def cout(model: Callable[[Tensor], Tensor], originals: Tensor, counterfactuals: Tensor, source: Tensor,
         *, target: Tensor, n_chunks: int = 50, batch_size: int = 256) -> MetricResult:
    """COUT per sample: ``AUC(p_target) - AUC(p_source)`` over the insertion curve; aggregate: mean.

    The areas use the trapezoid rule over the inserted fraction ``k / n_chunks``; the value lies in
    ``[-1, 1]``. Source: Khorram & Fuxin (CVPR 2022); see the module docstring for how this differs from
    their code.

    Args:
        model, originals, counterfactuals, source, target, n_chunks, batch_size: as in :func:`cout_curves`.

    Shape:
        - originals, counterfactuals: ``(N, C, H, W)``; source, target: ``(N,)``; ``values``: ``(N,)``.

    Examples::

        >>> import torch
        >>> from captum_cfx.metrics import cout
        >>> def model(x):   # class 1 exactly when pixel (0, 0) is bright
        ...     return torch.stack([torch.zeros(len(x)), 100 * (x[:, 0, 0, 0] - 0.5)], 1)
        >>> x, xc = torch.zeros(1, 1, 10, 10), torch.full((1, 1, 10, 10), 0.5)
        >>> xc[0, 0, 0, 0] = 1.0                      # the decisive pixel changed most: inserted first
        >>> round(cout(model, x, xc, torch.tensor([0]), target=torch.tensor([1])).value, 4)
        0.98
    """
    pt, ps = cout_curves(model, originals, counterfactuals, source, target=target, n_chunks=n_chunks,
                         batch_size=batch_size)

    def auc(p: Tensor) -> Tensor:
        return (p[:, :-1] + p[:, 1:]).sum(1) / (2 * n_chunks)

    return MetricResult.of(auc(pt) - auc(ps))
