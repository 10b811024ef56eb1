"""Descriptor probes as Captum concept vectors (the ``captum.concept`` ``Classifier`` protocol).

What this means: TCAV asks a ``Classifier`` for one vector per concept in an experimental set
(``weights()``, ordered like ``classes()``) and uses it as the concept activation vector (CAV) in a
layer's activation space. :class:`ProbeConceptClassifier` answers with the *latent probes' normals*
instead of training a new linear classifier on TCAV's concept examples. The vectors live in the
generator's latent space, so they are CAVs only for a layer whose activations **are** that latent:
explain ``model(generator.decode(z))`` with :class:`LatentInputModel` and pass ``layers=["latent"]``.

What it does not mean: the probes were fitted on the auxiliary descriptor data, not on TCAV's concept
example sets, so the concept examples only tell the classifier which concept ids are asked for.
A TCAV score computed this way measures the model's sensitivity to the probe direction in latent space,
which is not the same as a CAV learnt in one of the classifier's own layers; the two can disagree
when the classifier and the generator organise the descriptor differently.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.concept._utils.classifier import Classifier
from torch import Tensor, nn

from captum_cfx.descriptors.probes import LatentProbes

__all__ = ["LatentInputModel", "ProbeConceptClassifier"]


class ProbeConceptClassifier(Classifier):
    """A Captum concept ``Classifier`` that returns fitted probe normals instead of training.

    Args:
        probes: fitted :class:`~captum_cfx.descriptors.LatentProbes`.
        concepts: maps Captum concept ids to descriptors (name or column index). In an experimental set
            of two concepts, at most one id may be unmapped (e.g. a random concept); it gets the negated
            normal of the other, as Captum's binary classifiers do.

    Examples::

        >>> import tempfile, torch
        >>> from captum.concept import TCAV
        >>> from captum_cfx.descriptors import LatentInputModel, LatentProbes
        >>> from captum_cfx.zoo import load_generator, load_pretrained
        >>> z = torch.randn(400, 32, generator=torch.Generator().manual_seed(0))   # mnist-vae's latent size
        >>> probes = LatentProbes().fit(z, (z[:, :2] > 0).float(), ["first", "second"])
        >>> clf = probes.to_concept_classifier({0: "first"})
        >>> bool(clf.train_and_eval([(z[:4], torch.tensor([0, 0, 1, 1]))])["accs"] > 0.9)  # concept 0, random 1
        True
        >>> clf.weights().shape              # the probe's unit normal, and its negation for the random concept
        torch.Size([2, 32])
        >>> model = LatentInputModel(load_pretrained("mnist-classifier"), load_generator("mnist-vae"))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     tcav = TCAV(model, layers=["latent"], classifier=clf, save_path=tmp)
    """

    def __init__(self, probes: LatentProbes, concepts: dict[int, str | int]) -> None:
        if not isinstance(probes, LatentProbes):
            raise TypeError(f"`probes` must be fitted LatentProbes; got {type(probes).__name__}")
        probes.check_fitted()
        if not isinstance(concepts, dict) or not concepts:
            raise TypeError(f"`concepts` must be a non-empty dict {{concept_id: descriptor}}; got {concepts!r}")
        self.probes = probes
        self.concepts = {int(c): probes.index(d) for c, d in concepts.items()}
        self._classes: list[int] = []

    def train_and_eval(self, dataloader: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Read which concept ids the experimental set holds; nothing is trained.

        Returns ``{"accs": ...}``: the mean held-out probe score of the mapped descriptors (from ``fit``).
        """
        ids: set[int] = set()
        feat = None
        for _, labels in dataloader:
            ids.update(int(v) for v in torch.as_tensor(labels).flatten().tolist())
        for x, _ in dataloader:
            feat = x.flatten(1).shape[1]
            break
        if feat is not None and feat != self.probes.latent_dim_:
            raise ValueError(f"the concept activations have {feat} features but the probes expect latents of "
                             f"{self.probes.latent_dim_}; use a layer whose activations are the latent "
                             "(see LatentInputModel)")
        classes = sorted(ids)
        unmapped = [c for c in classes if c not in self.concepts]
        if len(unmapped) > 1 or (unmapped and len(classes) != 2):
            raise ValueError(f"concept ids {unmapped} have no descriptor in `concepts` {self.concepts}; only one "
                             "unmapped (random) concept is allowed, in a pair")
        self._classes = classes
        mapped = [self.probes.names_[self.concepts[c]] for c in classes if c in self.concepts]
        acc = sum(self.probes.scores_[n] for n in mapped) / max(len(mapped), 1)
        return {"accs": torch.tensor(acc)}

    def weights(self) -> Tensor:
        """``C x d``: one unit probe normal per concept of the last experimental set."""
        if not self._classes:
            raise ValueError("`weights()` needs `train_and_eval(dataloader)` first (TCAV calls it)")
        normals = self.probes.normals()
        rows = []
        for c in self._classes:
            if c in self.concepts:
                rows.append(normals[self.concepts[c]])
            else:
                other = next(o for o in self._classes if o != c)
                rows.append(-normals[self.concepts[other]])
        return torch.stack(rows)

    def classes(self) -> list[int]:
        return list(self._classes)


class LatentInputModel(nn.Module):
    """``z -> model(generator.decode(z))`` with an identity layer ``latent`` on ``z`` for TCAV.

    Args:
        model: the classifier.
        generator: a :class:`~captum_cfx.generators.LatentGenerator` (its ``decode`` takes ``(N, d)``).

    Shape:
        - input: ``(N, d)`` latents; output: the model's output on the decoded images.
    """

    def __init__(self, model: Any, generator: Any) -> None:
        super().__init__()
        self.model = model
        self.generator = generator
        self.latent = nn.Identity()

    def forward(self, z: Tensor) -> Tensor:
        return self.model(self.generator.decode(self.latent(z)))
