"""Counterfactual attribution methods, one per module."""

from captum_cfx.attr.causal import (
    CounterfactualSufficiencyNecessity,
    SufficiencyNecessityOutput,
    plot_sufficiency_necessity,
)
from captum_cfx.attr.coordinate_search import CoordinateSearchConfig, LatentCoordinateSearch
from captum_cfx.attr.descriptor import (
    CounterfactualDescriptorAttribution,
    DescriptorAttributionOutput,
    GlobalDescriptorAttribution,
)
from captum_cfx.attr.diffusion_pixel import (
    DiffusionPixelCounterfactual,
    PixelCounterfactualConfig,
    PixelCounterfactualOutput,
)
from captum_cfx.attr.global_directions import (
    GlobalCounterfactualDirections,
    GlobalityResult,
    OracleFeatureDistance,
    TransferOutput,
    pixel_distance,
)
from captum_cfx.attr.interfacegan import InterFaceGANEdit, interfacegan_step
from captum_cfx.attr.latent_attack import LatentAttackConfig, LatentCounterfactualAttack
from captum_cfx.attr.latent_ig import LatentIGOutput, LatentIntegratedGradients
from captum_cfx.attr.output import CounterfactualOutput

__all__ = [
    "CounterfactualSufficiencyNecessity",
    "SufficiencyNecessityOutput",
    "plot_sufficiency_necessity",
    "CounterfactualDescriptorAttribution",
    "DescriptorAttributionOutput",
    "GlobalDescriptorAttribution",
    "InterFaceGANEdit",
    "interfacegan_step",
    "CounterfactualOutput",
    "DiffusionPixelCounterfactual",
    "PixelCounterfactualConfig",
    "PixelCounterfactualOutput",
    "LatentAttackConfig",
    "LatentCounterfactualAttack",
    "LatentCoordinateSearch",
    "CoordinateSearchConfig",
    "GlobalCounterfactualDirections",
    "GlobalityResult",
    "OracleFeatureDistance",
    "pixel_distance",
    "TransferOutput",
    "LatentIGOutput",
    "LatentIntegratedGradients",
]
