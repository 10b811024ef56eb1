"""Linear descriptor probes on latent codes: one logistic or linear regression per descriptor.

Goldwasser & Hooker (2025) fit one logistic regression per descriptor (CelebA's 40 attributes) on the
latent codes of an auxiliary data set; a counterfactual is then described by how much every probe's
output moved, without decoding. :class:`LatentProbes` is that set of probes, scikit-learn style.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from captum_cfx._io import load_safetensors
from captum_cfx._validation import NotFittedError, check_fitted

__all__ = ["LatentProbes", "NotFittedError"]

KINDS = ("binary", "continuous")


def _as_2d(value: Any, argument: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"`{argument}` must be a torch.Tensor or numpy array; got {type(value).__name__}")
    if value.dim() == 1:
        value = value[:, None]
    if value.dim() != 2:
        raise ValueError(f"`{argument}` must be 2-D (N, features); got shape {tuple(value.shape)}")
    return value


class LatentProbes:
    r"""One linear probe per descriptor on latent codes ``z`` (flattened to ``(N, d)``).

    - **binary** descriptors (values 0/1) get an L2-regularised logistic regression (scikit-learn);
      the probe's output is the probability ``sigmoid(w . z + b)``.
    - **continuous** descriptors get a ridge regression on the *standardised* descriptor
      (``(y - mean) / std`` on the training split); the output is in standard deviations.

    Latents are centred (and optionally standardised) for fitting and the result is folded back, so every
    probe is ``w_j . z + b_j`` in the raw latent space: :attr:`weight_` holds the normals ``w_j`` (what
    InterFaceGAN steps along and what :meth:`to_concept_classifier` exports).

    ``fit`` holds out ``test_size`` of the rows and reports each probe's held-out accuracy (binary)
    or R² (continuous) in :attr:`scores_`: a low score says the latent space does not encode that
    descriptor linearly, and its attributions should not be trusted.

    Args:
        C: inverse L2 strength of the logistic regressions (scikit-learn's ``C``).
        alpha: ridge strength of the linear regressions (on standardised latents).
        test_size: fraction of rows held out for :attr:`scores_` (0 < test_size < 1).
        random_state: seed of the split and of the solvers.
        standardize_latents: scale every latent coordinate to unit variance before fitting. Off by default
            (the reference fits on raw latents): with it, coordinates the decoder ignores (near-zero variance in
            a VAE) can receive large weights, and a counterfactual search that moves them (Adam moves every
            coordinate by about ``lr`` per step) then changes the probe a lot without changing the image.

    Attributes:
        names_: descriptor names, one per probe.
        kinds_: ``"binary"`` or ``"continuous"`` per probe.
        weight_: ``(k, d)`` float64 normals in raw latent coordinates; ``bias_``: ``(k,)``.
        y_mean_, y_std_: ``(k,)`` standardisation of continuous descriptors (0 and 1 for binary ones).
        output_std_: ``(k,)`` spread (standard deviation) of each probe's output over the training latents:
            the unit of ``units="spread"`` in :class:`~captum_cfx.CounterfactualDescriptorAttribution`, which
            puts probabilities and standardised values on one scale. ``None`` for probes saved before it existed.
        scores_: ``dict[name, float]``: held-out accuracy (binary) or R² (continuous).
        latent_dim_: ``d``.

    Examples::

        >>> import torch
        >>> from captum_cfx.descriptors import LatentProbes
        >>> z = torch.randn(500, 8)
        >>> probes = LatentProbes().fit(z, torch.stack([(z[:, 0] > 0).float(), z[:, 1]], 1), ["big", "slant"])
        >>> probes.predict(z[:3]).shape
        torch.Size([3, 2])
    """

    def __init__(self, C: float = 1.0, alpha: float = 1.0, test_size: float = 0.2, *, random_state: int = 0,
                 standardize_latents: bool = False) -> None:
        if not (isinstance(C, (int, float)) and C > 0):
            raise ValueError(f"`C` must be a number > 0; got {C!r}")
        if not (isinstance(alpha, (int, float)) and alpha >= 0):
            raise ValueError(f"`alpha` must be a number >= 0; got {alpha!r}")
        if not (isinstance(test_size, float) and 0.0 < test_size < 1.0):
            raise ValueError(f"`test_size` must be a float in (0, 1); got {test_size!r}")
        self.C = float(C)
        self.alpha = float(alpha)
        self.test_size = test_size
        self.random_state = random_state
        self.standardize_latents = bool(standardize_latents)

    # ------------------------------------------------------------------ fitting
    def fit(self, latents: Tensor | np.ndarray, descriptors: Tensor | np.ndarray,
            names: Sequence[str] | None = None, *, kinds: Sequence[str] | str | None = None) -> LatentProbes:
        """Fit one probe per descriptor column.

        Args:
            latents: latent codes, ``(N, *)`` (flattened to ``(N, d)``).
            descriptors: ``(N, k)`` (or ``(N,)``) finite descriptor values.
            names: ``k`` distinct names (default ``"d0", "d1", ...``).
            kinds: ``"binary"``/``"continuous"`` per column, one string for all, or ``None`` to infer
                (binary when the column only holds 0 and 1).

        Returns:
            ``self``.
        """
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.metrics import r2_score

        if isinstance(latents, np.ndarray):
            latents = torch.from_numpy(latents)
        if not isinstance(latents, Tensor):
            raise TypeError(f"`latents` must be a torch.Tensor or numpy array; got {type(latents).__name__}")
        if latents.dim() < 2:
            raise ValueError(f"`latents` must be (N, d) or (N, *); got shape {tuple(latents.shape)}")
        z = latents.detach().flatten(1).to("cpu", torch.float64)
        y = _as_2d(descriptors, "descriptors").detach().to("cpu", torch.float64)
        if y.shape[0] != z.shape[0]:
            raise ValueError(f"`descriptors` must have one row per latent ({z.shape[0]}); got {y.shape[0]} rows")
        if z.shape[0] < 10:
            raise ValueError(f"`latents` must hold at least 10 rows to fit and score probes; got {z.shape[0]}")
        if not torch.isfinite(z).all():
            raise ValueError("`latents` contains NaN or Inf values")
        bad = (~torch.isfinite(y)).any(0).nonzero().flatten().tolist()
        k = y.shape[1]
        names = [f"d{j}" for j in range(k)] if names is None else list(names)
        if len(names) != k or len(set(names)) != k or not all(isinstance(n, str) for n in names):
            raise ValueError(f"`names` must be {k} distinct strings, one per descriptor column; got {names!r}")
        if bad:
            raise ValueError(f"`descriptors` contains NaN or Inf values in columns {[names[j] for j in bad]}; "
                             "drop or impute those rows before fitting")
        if kinds is None:
            kinds = ["binary" if bool(((y[:, j] == 0) | (y[:, j] == 1)).all()) else "continuous" for j in range(k)]
        elif isinstance(kinds, str):
            kinds = [kinds] * k
        kinds = list(kinds)
        if len(kinds) != k or any(kd not in KINDS for kd in kinds):
            raise ValueError(f"`kinds` must be {k} values from {KINDS}; got {kinds!r}")

        g = torch.Generator().manual_seed(self.random_state)
        perm = torch.randperm(z.shape[0], generator=g)
        n_test = max(1, int(round(self.test_size * z.shape[0])))
        te, tr = perm[:n_test], perm[n_test:]
        mu = z[tr].mean(0)
        sd = z[tr].std(0).clamp_min(1e-8) if self.standardize_latents else torch.ones_like(mu)
        zs = ((z - mu) / sd).numpy()
        weight = torch.zeros(k, z.shape[1], dtype=torch.float64)
        bias = torch.zeros(k, dtype=torch.float64)
        y_mean = torch.zeros(k, dtype=torch.float64)
        y_std = torch.ones(k, dtype=torch.float64)
        scores: dict[str, float] = {}
        for j in range(k):
            yj = y[:, j]
            if kinds[j] == "binary":
                if not bool(((yj == 0) | (yj == 1)).all()):
                    raise ValueError(f"`descriptors` column {names[j]!r} is declared binary but holds values "
                                     "other than 0 and 1")
                if yj[tr].unique().numel() < 2:
                    raise ValueError(f"`descriptors` column {names[j]!r} has a single class in the training split")
                lr = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
                lr.fit(zs[tr.numpy()], yj[tr].numpy().astype(int))
                w, b = torch.from_numpy(lr.coef_[0]), float(lr.intercept_[0])
                scores[names[j]] = float(lr.score(zs[te.numpy()], yj[te].numpy().astype(int)))
            else:
                m, s = float(yj[tr].mean()), float(yj[tr].std())
                if not s > 0:
                    raise ValueError(f"`descriptors` column {names[j]!r} is constant; it cannot be probed")
                ys = ((yj - m) / s).numpy()
                rg = Ridge(alpha=self.alpha)
                rg.fit(zs[tr.numpy()], ys[tr.numpy()])
                w, b = torch.from_numpy(np.asarray(rg.coef_, dtype=np.float64)), float(rg.intercept_)
                scores[names[j]] = float(r2_score(ys[te.numpy()], rg.predict(zs[te.numpy()])))
                y_mean[j], y_std[j] = m, s
            # fold the latent standardisation back: w.(z - mu)/sd + b = (w/sd).z + (b - (w/sd).mu)
            weight[j] = w / sd
            bias[j] = b - float((w / sd) @ mu)
        self.names_ = names
        self.kinds_ = kinds
        self.weight_ = weight
        self.bias_ = bias
        self.y_mean_ = y_mean
        self.y_std_ = y_std
        self.scores_ = scores
        self.latent_dim_ = int(z.shape[1])
        self.n_train_ = int(tr.numel())
        self.output_std_ = self.predict(z[tr]).std(0).double().clamp_min(1e-12)
        return self

    # ------------------------------------------------------------------ using
    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless :meth:`fit` (or ``from_pretrained``) has run."""
        check_fitted(self, "weight_", "`fit(latents, descriptors)` or load one with `from_pretrained(dir)`")

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "weight_")

    def _flat(self, latents: Tensor, argument: str) -> Tensor:
        self.check_fitted()
        if hasattr(latents, "free") and not isinstance(latents, Tensor):  # a captum_cfx Latent
            latents = latents.free
        if not isinstance(latents, Tensor):
            raise TypeError(f"`{argument}` must be a torch.Tensor or a Latent; got {type(latents).__name__}")
        if latents.dim() < 2:
            raise ValueError(f"`{argument}` must be (N, d) or (N, *); got shape {tuple(latents.shape)}")
        z = latents.flatten(1)
        if z.shape[1] != self.latent_dim_:
            raise ValueError(f"`{argument}` must have {self.latent_dim_} latent features per row (the size the "
                             f"probes were fitted on); got {z.shape[1]} (shape {tuple(latents.shape)})")
        return z

    def decision_function(self, latents: Tensor, argument: str = "latents") -> Tensor:
        """The linear scores ``w_j . z + b_j``, ``(N, k)`` (logits for binary probes)."""
        z = self._flat(latents, argument)
        dtype = z.dtype if z.is_floating_point() else torch.get_default_dtype()
        w = self.weight_.to(z.device, dtype)
        return z.to(dtype) @ w.T + self.bias_.to(z.device, dtype)

    def predict(self, latents: Tensor, argument: str = "latents") -> Tensor:
        """Probe outputs ``(N, k)``: probabilities for binary probes, standardised values for continuous ones.

        Shape:
            - latents: ``(N, d)`` (or ``(N, *)`` with ``prod(*) == d``) or a ``Latent``.
            - returns: ``(N, k)`` on the latents' device and dtype.
        """
        s = self.decision_function(latents, argument)
        binary = torch.tensor([kd == "binary" for kd in self.kinds_], device=s.device)
        return torch.where(binary, torch.sigmoid(s), s)

    def delta(self, original_latents: Tensor, counterfactual_latents: Tensor) -> Tensor:
        """``predict(counterfactual_latents) - predict(original_latents)``, row by row, ``(N, k)``."""
        a = self._flat(original_latents, "original_latents")
        b = self._flat(counterfactual_latents, "counterfactual_latents")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"`counterfactual_latents` must have one row per original latent ({a.shape[0]}); "
                             f"got {b.shape[0]}")
        return self.predict(b, "counterfactual_latents") - self.predict(a, "original_latents")

    def standardize(self, values: Tensor) -> Tensor:
        """Put raw descriptor values ``(N, k)`` in the probes' units (continuous columns standardised)."""
        self.check_fitted()
        v = _as_2d(values, "values")
        if v.shape[1] != len(self.names_):
            raise ValueError(f"`values` must have {len(self.names_)} columns; got {v.shape[1]}")
        dtype = v.dtype if v.is_floating_point() else torch.get_default_dtype()
        return (v.to(dtype) - self.y_mean_.to(v.device, dtype)) / self.y_std_.to(v.device, dtype)

    def index(self, descriptor: str | int) -> int:
        """Column index of a descriptor given by name or index."""
        self.check_fitted()
        if isinstance(descriptor, str):
            if descriptor not in self.names_:
                raise ValueError(f"`descriptor` must be one of {self.names_}; got {descriptor!r}")
            return self.names_.index(descriptor)
        if isinstance(descriptor, int) and not isinstance(descriptor, bool) and 0 <= descriptor < len(self.names_):
            return descriptor
        raise ValueError(f"`descriptor` must be a name from {self.names_} or an index in "
                         f"[0, {len(self.names_) - 1}]; got {descriptor!r}")

    def normals(self) -> Tensor:
        """Unit normals of the probes' decision hyperplanes, ``(k, d)`` float32."""
        self.check_fitted()
        w = self.weight_
        return (w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)).float()

    def to_concept_classifier(self, concepts: dict[int, str | int]) -> Any:
        """Export probe normals as a Captum ``captum.concept`` :class:`Classifier` (for TCAV).

        See :class:`~captum_cfx.descriptors.ProbeConceptClassifier`.
        """
        from captum_cfx.descriptors.concepts import ProbeConceptClassifier

        return ProbeConceptClassifier(self, concepts)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (names, kinds, scores, settings) and ``model.safetensors`` (the probes)."""
        self.check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = {"class": type(self).__name__, "C": self.C, "alpha": self.alpha, "test_size": self.test_size,
               "random_state": self.random_state, "standardize_latents": self.standardize_latents,
               "names": self.names_, "kinds": self.kinds_,
               "scores": self.scores_, "latent_dim": self.latent_dim_, "n_train": self.n_train_}
        (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        tensors = {"weight": self.weight_.contiguous(), "bias": self.bias_.contiguous(),
                   "y_mean": self.y_mean_.contiguous(), "y_std": self.y_std_.contiguous()}
        if getattr(self, "output_std_", None) is not None:
            tensors["output_std"] = self.output_std_.contiguous()
        save_file(tensors, str(d / "model.safetensors"))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LatentProbes:
        """Load probes written by :meth:`save_pretrained` (safetensors only; nothing is unpickled)."""
        d = Path(directory)
        if not (d / "config.json").is_file():
            raise ValueError(f"`directory` must hold config.json and model.safetensors; {str(d)!r} has no config.json")
        cfg = json.loads((d / "config.json").read_text())
        t = load_safetensors(d / "model.safetensors", argument="directory")
        obj = cls(C=cfg["C"], alpha=cfg["alpha"], test_size=cfg["test_size"], random_state=cfg["random_state"],
                  standardize_latents=cfg.get("standardize_latents", False))
        k = len(cfg["names"])
        if t["weight"].shape != (k, cfg["latent_dim"]):
            raise ValueError(f"`directory`: weight shape {tuple(t['weight'].shape)} does not match config "
                             f"({k} descriptors, latent_dim {cfg['latent_dim']})")
        obj.names_, obj.kinds_, obj.scores_ = list(cfg["names"]), list(cfg["kinds"]), dict(cfg["scores"])
        obj.latent_dim_, obj.n_train_ = int(cfg["latent_dim"]), int(cfg.get("n_train", 0))
        obj.weight_, obj.bias_ = t["weight"].double(), t["bias"].double()
        obj.y_mean_, obj.y_std_ = t["y_mean"].double(), t["y_std"].double()
        obj.output_std_ = t["output_std"].double() if "output_std" in t else None
        return obj

    def __repr__(self) -> str:
        if not self.is_fitted:
            return f"{type(self).__name__}(C={self.C}, alpha={self.alpha}) [not fitted]"
        sc = ", ".join(f"{n}={s:.2f}" for n, s in self.scores_.items())
        return f"{type(self).__name__}({len(self.names_)} probes on d={self.latent_dim_}; held-out: {sc})"


def logit(p: float) -> float:
    """``log(p / (1 - p))`` for ``0 < p < 1``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"`probability` must be in (0, 1); got {p!r}")
    return math.log(p / (1.0 - p))
