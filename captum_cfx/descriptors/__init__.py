"""Descriptor data and models: latent probes, image measurements (Morpho-MNIST), concept export."""

from captum_cfx.descriptors.agreement import sign_agreement
from captum_cfx.descriptors.concepts import LatentInputModel, ProbeConceptClassifier
from captum_cfx.descriptors.morphometry import MORPHOMETRY_NAMES, Morphometry, measure_morphometry
from captum_cfx.descriptors.plotting import plot_descriptor_bars, plot_global_descriptors
from captum_cfx.descriptors.probes import LatentProbes, NotFittedError

__all__ = [
    "MORPHOMETRY_NAMES",
    "LatentInputModel",
    "LatentProbes",
    "Morphometry",
    "NotFittedError",
    "ProbeConceptClassifier",
    "measure_morphometry",
    "plot_descriptor_bars",
    "plot_global_descriptors",
    "sign_agreement",
]
