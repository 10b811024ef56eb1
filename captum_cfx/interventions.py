"""Interventions on named attributes inside a generator's latent space: ``do(latents, attribute, value)``.

Alipour et al. (2022) intervene on human attributes (smile, age, eyeglasses, ...) of images by moving their
codes in a pretrained generator's latent space, without retraining the generator. Two ways to move are offered
behind one interface, :meth:`LatentIntervention.do`:

- :class:`LinearDirections`: the normals of latent probes (:class:`~captum_cfx.descriptors.LatentProbes`), with
  a closed-form step that brings the probe of the attribute to the requested value (the simple alternative);
- :class:`ShiftPredictor`: an MLP ``S(z, c)`` from a latent and a requested change ``c in {-1, 0, +1}^k`` to a
  latent shift, trained against an attribute classifier with binary cross-entropy on the constrained attributes
  (``c != 0``) plus ``0.05 * ||S(z, c)||`` (the paper's shift predictor).

Every intervention has two **modes**:

- ``"contrastive"``: the other attributes are pinned to their current state (``c_j = +1`` if present,
  ``-1`` if absent; for linear directions, the other probes' scores are held exactly);
- ``"causal"``: the other attributes are left free (``c_j = 0``; for linear directions, a plain step along the
  attribute's normal), so that what the latent space ties to the attribute follows it.

This mapping of the paper's contrastive/causal reading onto ``c`` is ours; the paper's code does not settle it.

An attribute's *value* is its requested **presence**: ``1`` adds it, ``0`` removes it; a number in ``(0, 1)``
asks for that presence probability. Continuous attributes (e.g. age) are present above a threshold.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from captum_cfx._io import load_safetensors
from captum_cfx._validation import check_fitted
from captum_cfx.descriptors.probes import LatentProbes

__all__ = ["MODES", "LatentIntervention", "LinearDirections", "ShiftPredictor", "probe_presence_logits"]

MODES = ("contrastive", "causal")


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}")
    return mode


def _as_flat(latents: Any, dim: int | None, argument: str = "latents") -> Tensor:
    if hasattr(latents, "free") and not isinstance(latents, Tensor):  # a captum_cfx Latent
        latents = latents.free
    if not isinstance(latents, Tensor):
        raise TypeError(f"`{argument}` must be a torch.Tensor or a Latent; got {type(latents).__name__}")
    if latents.dim() < 2 or not latents.is_floating_point():
        raise ValueError(f"`{argument}` must be a floating (N, d) tensor; got shape {tuple(latents.shape)} "
                         f"and dtype {latents.dtype}")
    z = latents.flatten(1)
    if dim is not None and z.shape[1] != dim:
        raise ValueError(f"`{argument}` must have {dim} latent features per row; got {z.shape[1]} "
                         f"(shape {tuple(latents.shape)})")
    return z


def probe_presence_logits(probes: LatentProbes, thresholds: Mapping[str, float] | None = None,
                          scale: float = 4.0) -> tuple[Tensor, Tensor]:
    """The presence logits of fitted probes as one affine map ``z -> z @ weight.T + bias``.

    Binary probes give their logit. A continuous probe (standardised regression) counts as present above
    ``thresholds[name]`` (raw descriptor units, default: the training mean); its presence logit is
    ``scale * (standardised prediction - standardised threshold)``.

    Returns:
        ``(weight (k, d), bias (k,))`` float64.
    """
    probes.check_fitted()
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - set(probes.names_)
    if unknown:
        raise ValueError(f"`thresholds` must name probes from {probes.names_}; got unknown {sorted(unknown)}")
    w, b = probes.weight_.clone(), probes.bias_.clone()
    for j, (name, kind) in enumerate(zip(probes.names_, probes.kinds_)):
        if kind == "continuous":
            t = (thresholds.get(name, float(probes.y_mean_[j])) - float(probes.y_mean_[j])) / float(probes.y_std_[j])
            w[j], b[j] = scale * w[j], scale * (b[j] - t)
        elif name in thresholds:
            raise ValueError(f"`thresholds` applies to continuous probes only; {name!r} is binary")
    return w, b


class LatentIntervention(ABC):
    """Base class: named attributes that can be set in latent space with :meth:`do`.

    Subclasses hold :attr:`names_` (the attributes), :attr:`latent_dim_` and implement :meth:`_shift`.
    """

    names_: list[str]
    latent_dim_: int

    def check_fitted(self) -> None:
        """Raise :class:`~captum_cfx.descriptors.NotFittedError` unless ``fit`` (or ``from_pretrained``) ran."""
        check_fitted(self, "names_", "`fit(...)` or `from_pretrained(dir)`")

    def index(self, attribute: str | int) -> int:
        """Column of an attribute given by name or index."""
        self.check_fitted()
        if isinstance(attribute, str) and attribute in self.names_:
            return self.names_.index(attribute)
        if isinstance(attribute, int) and not isinstance(attribute, bool) and 0 <= attribute < len(self.names_):
            return attribute
        raise ValueError(f"`attribute` must be a name from {self.names_} or an index in "
                         f"[0, {len(self.names_) - 1}]; got {attribute!r}")

    @abstractmethod
    def presence_logits(self, latents: Tensor) -> Tensor | None:
        """The intervention's own reading of every attribute, ``(N, k)`` presence logits (``None`` if it has none)."""

    @abstractmethod
    def _shift(self, z: Tensor, requests: Tensor, values: dict[int, Tensor] | None = None) -> Tensor:
        """Latent shift ``(N, d)`` that meets ``requests`` (``(N, k)`` in {-1, 0, +1}); ``values`` optionally
        gives exact presence probabilities for some columns."""

    @torch.no_grad()
    def apply(self, latents: Tensor, requests: Tensor) -> Tensor:
        """Meet a request per attribute: ``+1`` present, ``-1`` absent, ``0`` free (the paper's ``c``).

        :meth:`do` builds ``requests`` from a mode; call this directly for joint interventions (e.g. an
        attribute and its causal descendants).

        Shape:
            - latents: ``(N, d)``; requests: ``(N, k)`` with values in {-1, 0, +1}; returns ``(N, d)``.
        """
        self.check_fitted()
        z = _as_flat(latents, self.latent_dim_)
        k = len(self.names_)
        if not isinstance(requests, Tensor) or requests.shape != (z.shape[0], k):
            raise ValueError(f"`requests` must be an ({z.shape[0]}, {k}) tensor with values in {{-1, 0, 1}}; "
                             f"got {getattr(requests, 'shape', type(requests).__name__)}")
        c = requests.to(z)
        if bool(((c != -1) & (c != 0) & (c != 1)).any()):
            raise ValueError("`requests` must only hold -1 (absent), 0 (free) and +1 (present)")
        return z + self._shift(z, c)

    @torch.no_grad()
    def do(self, latents: Tensor, attribute: str | int, value: float | Tensor, *, mode: str = "contrastive",
           state: Tensor | None = None) -> Tensor:
        """Set ``attribute`` to presence ``value`` in every latent.

        Args:
            latents: ``(N, d)`` latent codes (or a :class:`~captum_cfx.generators.Latent`, whose free part is used).
            attribute: name or index of the attribute.
            value: requested presence: ``1`` adds the attribute, ``0`` removes it; a float in ``[0, 1]`` or an
                ``(N,)`` tensor of them.
            mode: ``"contrastive"`` pins the other attributes at ``state``; ``"causal"`` leaves them free.
            state: ``(N, k)`` current presence (0/1) of every attribute, used by the contrastive mode. Default: the
                intervention's own reading of ``latents`` (its probes or classifier).

        Returns:
            ``(N, d)`` intervened latents, same dtype and device as ``latents``.

        Shape:
            - latents: ``(N, d)``; value: scalar or ``(N,)`` in ``[0, 1]``; state: ``(N, k)``; returns ``(N, d)``.
        """
        self.check_fitted()
        z = _as_flat(latents, self.latent_dim_)
        j = self.index(attribute)
        _check_mode(mode)
        v = torch.as_tensor(value, dtype=z.dtype, device=z.device)
        if v.dim() == 0:
            v = v.expand(z.shape[0])
        if v.shape != (z.shape[0],) or bool(((v < 0) | (v > 1) | ~torch.isfinite(v)).any()):
            raise ValueError(f"`value` must be a presence in [0, 1] (a scalar or one per latent, ({z.shape[0]},)); "
                             f"got {value!r}")
        if state is not None:
            if not isinstance(state, Tensor) or state.shape != (z.shape[0], len(self.names_)):
                raise ValueError(f"`state` must be an ({z.shape[0]}, {len(self.names_)}) tensor of 0/1 presences; "
                                 f"got {getattr(state, 'shape', type(state).__name__)}")
            state = (state > 0.5).to(z.dtype)
        if mode == "contrastive":
            c = 2 * self._state(z, state) - 1
        else:
            c = z.new_zeros(z.shape[0], len(self.names_))
        c[:, j] = torch.where(v > 0.5, 1.0, -1.0).to(z)
        return z + self._shift(z, c, {j: v})

    def _state(self, z: Tensor, state: Tensor | None) -> Tensor:
        if state is not None:
            return state
        logits = self.presence_logits(z)
        if logits is None:
            raise ValueError(f"`state` is required for the contrastive mode of this {type(self).__name__}: it has "
                             "no attribute classifier of its own; pass the (N, k) current presences")
        return (logits > 0).to(z.dtype)


class LinearDirections(LatentIntervention):
    r"""Interventions along the normals of latent probes, with a closed-form step.

    With the probes' presence logits ``l(z) = W z + b`` (:func:`probe_presence_logits`), a request on the
    attributes ``C`` (``c_j != 0``) that the probes do not already see met moves their logits to targets ``t_j``
    by the shortest step that keeps the logits of the other requested attributes (pinned ones):
    ``z' = z + W_C^T (W_C W_C^T)^{-1} (t - l(z))_C``. Hence

    - **contrastive** mode (every other attribute pinned) steps along the part of ``w_j`` orthogonal to the
      other normals, so no other probe moves;
    - **causal** mode (the others free) steps along the normal ``w_j`` itself:
      ``z' = z + w_j (t_j - l_j(z)) / ||w_j||^2``; the other probes move as much as their normals align with
      ``w_j``.

    Targets: by default ``±logit(confidence)``. Given ``latents`` (e.g. the probes' training latents), the
    ``quantile`` of the logits of latents with (without) the attribute, when more extreme: linear probes on
    well-separated data are overconfident, and a step that only reaches ``p = 0.95`` often leaves the image
    unchanged. A value strictly inside ``(0, 1)`` given to :meth:`do` is aimed at exactly.

    Args:
        probes: fitted :class:`~captum_cfx.descriptors.LatentProbes` (one probe per attribute).
        latents: ``(N, d)`` latents to calibrate the targets on (optional).
        thresholds: presence thresholds of continuous probes, in raw descriptor units (default: the mean).
        confidence: presence probability of the default targets.
        scale: presence-logit slope of continuous probes per standard deviation.
        quantile: which quantile of the calibration logits is the target (0.5: the median).

    Attributes:
        weight_, bias_: the presence-logit map ``(k, d)``, ``(k,)``.
        target_logits: ``target_logits_``, ``(k, 2)`` absent and present targets.
        metric: ``metric_``, the ``(d, d)`` latent covariance the steps are measured in (identity without
            ``latents``).

    Examples::

        >>> import torch
        >>> from captum_cfx.descriptors import LatentProbes
        >>> from captum_cfx.interventions import LinearDirections
        >>> z = torch.randn(400, 4)
        >>> probes = LatentProbes().fit(z, torch.stack([(z[:, 0] > 0), (z[:, 1] > 0)], 1).float(), ["a", "b"])
        >>> z1 = LinearDirections(probes).do(z[:5], "a", 1.0)
        >>> bool((probes.predict(z1)[:, 0] > 0.5).all())
        True
    """

    def __init__(self, probes: LatentProbes, latents: Tensor | None = None,
                 thresholds: Mapping[str, float] | None = None, *, confidence: float = 0.95, scale: float = 4.0,
                 quantile: float = 0.5) -> None:
        if not isinstance(probes, LatentProbes):
            raise TypeError(f"`probes` must be fitted LatentProbes; got {type(probes).__name__}")
        probes.check_fitted()
        if not (isinstance(confidence, float) and 0.5 < confidence < 1.0):
            raise ValueError(f"`confidence` must be a float in (0.5, 1); got {confidence!r}")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"`scale` must be a number > 0; got {scale!r}")
        if not (isinstance(quantile, float) and 0.0 < quantile < 1.0):
            raise ValueError(f"`quantile` must be a float in (0, 1); got {quantile!r}")
        self.probes = probes
        self.thresholds = dict(thresholds or {})
        self.confidence = confidence
        self.scale = float(scale)
        self.quantile = quantile
        self.weight_, self.bias_ = probe_presence_logits(probes, self.thresholds, self.scale)
        self.names_ = list(probes.names_)
        self.latent_dim_ = probes.latent_dim_
        k = len(self.names_)
        t = math.log(confidence / (1 - confidence))
        self.target_logits_ = torch.tensor([[-t, t]] * k, dtype=torch.float64)
        self.metric_ = torch.eye(self.latent_dim_, dtype=torch.float64)
        if latents is not None:
            zc = _as_flat(latents, self.latent_dim_).detach().double().cpu()
            if zc.shape[0] < 2:
                raise ValueError(f"`latents` must hold at least 2 rows to calibrate on; got {zc.shape[0]}")
            cov = torch.cov(zc.T)
            self.metric_ = cov + 1e-6 * cov.diagonal().mean() * self.metric_
            lg = self.presence_logits(zc)
            for j in range(k):
                pos, neg = lg[lg[:, j] > 0, j], lg[lg[:, j] <= 0, j]
                if len(pos) and len(neg):
                    # typical logits of latents without / with the attribute (more extreme than the default)
                    self.target_logits_[j, 0] = min(-t, float(neg.quantile(1 - quantile)))
                    self.target_logits_[j, 1] = max(t, float(pos.quantile(quantile)))

    def presence_logits(self, latents: Tensor) -> Tensor:
        z = _as_flat(latents, self.latent_dim_)
        return z @ self.weight_.to(z).T + self.bias_.to(z)

    def _targets(self, requests: Tensor, values: dict[int, Tensor] | None, z: Tensor) -> Tensor:
        """Target presence logits ``(N, k)``: the absent-side target where ``requests < 0``, else the present side."""
        lo, hi = self.target_logits_[:, 0].to(z), self.target_logits_[:, 1].to(z)
        return torch.where(requests > 0, hi, lo)

    def _shift(self, z: Tensor, requests: Tensor, values: dict[int, Tensor] | None = None) -> Tensor:
        logits = self.presence_logits(z)
        # a request the probe already sees met keeps its logit (pinned); the others step to their target
        state = torch.where(logits > 0, 1.0, -1.0).to(z)
        gap = torch.where(requests == state, 0.0, self._targets(requests, None, z) - logits)
        for j, v in (values or {}).items():
            exact = (v - 0.5).abs() < 0.5 - 1e-9  # presences strictly inside (0, 1) are aimed at exactly
            c = self.confidence
            gap[:, j] = torch.where(exact, torch.logit(v.clamp(1 - c, c)) - logits[:, j], gap[:, j])
        on = requests != 0
        w = self.weight_.to(z)  # (k, d)
        sw = w @ self.metric_.to(z)  # (k, d): the normals in the latent's data metric
        gram = sw @ w.T  # (k, k)
        eye = torch.eye(gram.shape[0], dtype=z.dtype, device=z.device)
        m = on[:, :, None] & on[:, None, :]
        a = torch.where(m, gram.expand(z.shape[0], -1, -1), eye.expand(z.shape[0], -1, -1))
        a = a + 1e-6 * gram.diagonal().mean() * eye
        alpha = torch.linalg.solve(a, torch.where(on, gap, 0.0)[:, :, None])[:, :, 0]
        return torch.where(on, alpha, 0.0) @ sw

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.names_)} attributes on d={self.latent_dim_}: {self.names_})"


class _ShiftMLP(nn.Module):
    def __init__(self, latent_dim: int, num_attributes: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim + num_attributes, hidden), nn.ELU(),
                                 nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, latent_dim))

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat([z, c], 1))


class ShiftPredictor(LatentIntervention):
    r"""The shift predictor of Alipour et al. (2022): an MLP ``S(z, c)`` trained to make requested attribute changes.

    ``c in {-1, 0, +1}^k`` requests, per attribute, "absent", "free" or "present"; the intervened latent is
    ``z + S(z, c)``. :meth:`fit` trains ``S`` against a differentiable attribute classifier ``f`` (presence
    logits ``(N, k)``, on latents directly or through the generator's decoder):

    .. math::
        L = \operatorname{BCE}\big(f(z + S(z, c))_{c \neq 0}, (c_{c \neq 0} + 1) / 2\big)
            + \lambda \, \lVert S(z, c) \rVert_2, \qquad \lambda = 0.05.

    Training requests flip one random attribute and, for each other attribute, either pin it to its current
    state (probability ``pin_prob``) or leave it free, so that both modes of :meth:`do` are in distribution.

    Args:
        hidden: width of the two hidden layers.
        penalty: weight ``lambda`` of the shift norm.
        pin_prob: probability that a non-flipped attribute is pinned in a training request.

    Attributes:
        names_: the attribute names.
        latent_dim_: ``d``.
        net: ``net_``, the MLP.
        history: ``history_``, the training loss every 50 steps.

    Examples::

        >>> import torch
        >>> from captum_cfx.interventions import ShiftPredictor
        >>> z = torch.randn(512, 4)
        >>> clf = lambda z: 4 * z[:, :2]                # presence logits of two attributes
        >>> g = torch.Generator().manual_seed(0)
        >>> sp = ShiftPredictor(hidden=32).fit(z, clf, ["a", "b"], steps=200, generator=g)
        >>> z1 = sp.do(z[:64], "a", 1.0, mode="causal")
        >>> bool((clf(z1)[:, 0] > 0).float().mean() > 0.9)
        True
    """

    def __init__(self, hidden: int = 256, penalty: float = 0.05, pin_prob: float = 0.5) -> None:
        if not (isinstance(hidden, int) and not isinstance(hidden, bool) and hidden > 0):
            raise ValueError(f"`hidden` must be a positive int; got {hidden!r}")
        if not (isinstance(penalty, (int, float)) and penalty >= 0):
            raise ValueError(f"`penalty` must be a number >= 0; got {penalty!r}")
        if not (isinstance(pin_prob, (int, float)) and 0 <= pin_prob <= 1):
            raise ValueError(f"`pin_prob` must be in [0, 1]; got {pin_prob!r}")
        self.hidden = hidden
        self.penalty = float(penalty)
        self.pin_prob = float(pin_prob)
        self.classifier: Callable[[Tensor], Tensor] | None = None

    def fit(self, latents: Tensor, classifier: Callable[[Tensor], Tensor] | LatentProbes,
            names: Sequence[str] | None = None, *, steps: int = 1000, batch_size: int = 256, lr: float = 1e-3,
            generator: torch.Generator | None = None, thresholds: Mapping[str, float] | None = None) -> ShiftPredictor:
        """Train ``S`` on shifts of ``latents`` judged by ``classifier``.

        Args:
            latents: ``(N, d)`` training latents (encoded data or prior draws).
            classifier: differentiable map from latents ``(B, d)`` to presence logits ``(B, k)`` (e.g. an image
                attribute classifier composed with the generator's decoder), or fitted
                :class:`~captum_cfx.descriptors.LatentProbes` (their presence logits, :func:`probe_presence_logits`).
            names: ``k`` attribute names (default: the probes' names, else ``"a0", ...``).
            steps: Adam steps.
            batch_size: latents per step.
            lr: Adam learning rate.
            generator: ``torch.Generator`` for batches, requests and the initial weights.
            thresholds: presence thresholds of continuous probes (only with ``classifier=LatentProbes``).

        Returns:
            ``self``.
        """
        z_all = _as_flat(latents, None).detach()
        if z_all.shape[0] < 2:
            raise ValueError(f"`latents` must hold at least 2 rows; got {z_all.shape[0]}")
        for arg, v in (("steps", steps), ("batch_size", batch_size)):
            if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
                raise ValueError(f"`{arg}` must be a positive int; got {v!r}")
        if isinstance(classifier, LatentProbes):
            w, b = probe_presence_logits(classifier, thresholds)
            w, b = w.to(z_all), b.to(z_all)
            names = list(classifier.names_) if names is None else names
            clf: Callable[[Tensor], Tensor] = lambda z: z @ w.T + b  # noqa: E731
        elif callable(classifier):
            clf = classifier
        else:
            raise TypeError(f"`classifier` must be callable (latents -> presence logits) or LatentProbes; "
                            f"got {type(classifier).__name__}")
        with torch.no_grad():
            probe = clf(z_all[:2])
        if not isinstance(probe, Tensor) or probe.dim() != 2:
            raise ValueError(f"`classifier` must return (N, k) presence logits; got "
                             f"{getattr(probe, 'shape', type(probe).__name__)}")
        k, d = probe.shape[1], z_all.shape[1]
        names = [f"a{j}" for j in range(k)] if names is None else list(names)
        if len(names) != k or len(set(names)) != k:
            raise ValueError(f"`names` must be {k} distinct names, one per classifier output; got {names!r}")
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _ShiftMLP(d, k, self.hidden).to(z_all)
        # start from a zero shift: S(z, c) = 0 before training
        nn.init.zeros_(net.net[-1].weight)
        nn.init.zeros_(net.net[-1].bias)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        history: list[float] = []
        with torch.enable_grad():
            for step in range(steps):
                idx = torch.randint(0, z_all.shape[0], (batch_size,), generator=generator).to(z_all.device)
                z = z_all[idx]
                with torch.no_grad():
                    cur = (clf(z) > 0).to(z)
                c = self._requests(cur, generator)
                shift = net(z, c)
                logits = clf(z + shift)
                on = c != 0
                bce = F.binary_cross_entropy_with_logits(logits[on], (c[on] + 1) / 2)
                loss = bce + self.penalty * shift.norm(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if step % 50 == 0 or step == steps - 1:
                    history.append(float(loss.detach()))
        self.net_ = net.eval()
        for p in self.net_.parameters():
            p.requires_grad_(False)
        self.names_, self.latent_dim_, self.history_ = names, d, history
        self.classifier = clf
        return self

    def _requests(self, cur: Tensor, generator: torch.Generator | None) -> Tensor:
        """Training requests: flip one random attribute; pin each other one with ``pin_prob``, else free."""
        n, k = cur.shape
        dev = cur.device
        sign = 2 * cur - 1
        pin = (torch.rand(n, k, generator=generator).to(dev) < self.pin_prob).to(cur)
        c = sign * pin
        j = torch.randint(0, k, (n,), generator=generator).to(dev)
        # the flipped attribute: mostly the opposite of its state, sometimes (1/4) a request it already meets
        keep = (torch.rand(n, generator=generator).to(dev) < 0.25).to(cur)
        target = sign.gather(1, j[:, None])[:, 0] * (2 * keep - 1)
        return c.scatter(1, j[:, None], target[:, None])

    def presence_logits(self, latents: Tensor) -> Tensor | None:
        if self.classifier is None:
            return None
        return self.classifier(_as_flat(latents, self.latent_dim_))

    def _shift(self, z: Tensor, requests: Tensor, values: dict[int, Tensor] | None = None) -> Tensor:
        net = self.net_
        dtype = next(net.parameters()).dtype
        return net(z.to(dtype), requests.to(dtype)).to(z.dtype)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (the MLP); the training classifier is not saved."""
        self.check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = {"class": type(self).__name__, "hidden": self.hidden, "penalty": self.penalty,
               "pin_prob": self.pin_prob, "names": self.names_, "latent_dim": self.latent_dim_,
               "history": self.history_}
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.net_.state_dict().items()},
                  str(d / "model.safetensors"))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, classifier: Callable[[Tensor], Tensor] | None = None
                        ) -> ShiftPredictor:
        """Load a predictor written by :meth:`save_pretrained` (safetensors only; nothing is unpickled).

        ``classifier`` (optional) restores the default ``state`` reading of the contrastive mode.
        """
        d = Path(directory)
        if not (d / "config.json").is_file():
            raise ValueError(f"`directory` must hold config.json and model.safetensors; {str(d)!r} has no config.json")
        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("class") != cls.__name__:
            raise ValueError(f"`directory` holds a {cfg.get('class')!r}, not a {cls.__name__}")
        obj = cls(hidden=cfg["hidden"], penalty=cfg["penalty"], pin_prob=cfg["pin_prob"])
        net = _ShiftMLP(cfg["latent_dim"], len(cfg["names"]), cfg["hidden"])
        net.load_state_dict(load_safetensors(d / "model.safetensors", argument="directory"))
        obj.net_ = net.eval()
        for p in obj.net_.parameters():
            p.requires_grad_(False)
        obj.names_, obj.latent_dim_, obj.history_ = list(cfg["names"]), int(cfg["latent_dim"]), list(cfg["history"])
        obj.classifier = classifier
        return obj

    def __repr__(self) -> str:
        if not hasattr(self, "names_"):
            return f"{type(self).__name__}(hidden={self.hidden}, penalty={self.penalty}) [not fitted]"
        return f"{type(self).__name__}({len(self.names_)} attributes on d={self.latent_dim_}: {self.names_})"
