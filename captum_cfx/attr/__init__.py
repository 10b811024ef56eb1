"""Counterfactual attribution methods, one per module."""

from captum_cfx.attr.descriptor import (
    CounterfactualDescriptorAttribution,
    DescriptorAttributionOutput,
    GlobalDescriptorAttribution,
)
from captum_cfx.attr.global_directions import (
    GlobalCounterfactualDirections,
    GlobalityResult,
    OracleFeatureDistance,
    TransferOutput,
)
from captum_cfx.attr.interfacegan import InterFaceGANEdit, interfacegan_step
from captum_cfx.attr.latent_attack import LatentCounterfactualAttack
from captum_cfx.attr.latent_ig import LatentIGOutput, LatentIntegratedGradients
from captum_cfx.attr.output import CounterfactualOutput

__all__ = [
    "CounterfactualDescriptorAttribution",
    "DescriptorAttributionOutput",
    "GlobalDescriptorAttribution",
    "InterFaceGANEdit",
    "interfacegan_step",
    "CounterfactualOutput",
    "LatentCounterfactualAttack",
    "GlobalCounterfactualDirections",
    "GlobalityResult",
    "OracleFeatureDistance",
    "TransferOutput",
    "LatentIGOutput",
    "LatentIntegratedGradients",
]
