"""captum_cfx: counterfactual explanations in generative latent spaces, as Captum attributions.

The public names below are imported on first use (PEP 562), so ``import captum_cfx`` is cheap: the methods,
Captum, plotting and scipy load only when a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "CounterfactualDescriptorAttribution": "captum_cfx.attr",
    "CounterfactualOutput": "captum_cfx.attr",
    "CounterfactualSufficiencyNecessity": "captum_cfx.attr",
    "DiffusionPixelCounterfactual": "captum_cfx.attr",
    "GlobalCounterfactualDirections": "captum_cfx.attr",
    "InterFaceGANEdit": "captum_cfx.attr",
    "LatentAttackConfig": "captum_cfx.attr",
    "LatentCounterfactualAttack": "captum_cfx.attr",
    "LatentCoordinateSearch": "captum_cfx.attr",
    "CoordinateSearchConfig": "captum_cfx.attr",
    "LatentIntegratedGradients": "captum_cfx.attr",
    "PixelCounterfactualConfig": "captum_cfx.attr",
    "LatentProbes": "captum_cfx.descriptors",
    "Morphometry": "captum_cfx.descriptors",
    "AutoencoderGenerator": "captum_cfx.generators",
    "DDIMGenerator": "captum_cfx.generators",
    "DiffusersVAEGenerator": "captum_cfx.generators",
    "DiffusionAutoencoder": "captum_cfx.generators",
    "GANGenerator": "captum_cfx.generators",
    "Latent": "captum_cfx.generators",
    "LatentGenerator": "captum_cfx.generators",
    "VAEGenerator": "captum_cfx.generators",
    "LatentIntervention": "captum_cfx.interventions",
    "LinearDirections": "captum_cfx.interventions",
    "ShiftPredictor": "captum_cfx.interventions",
    "Flip": "captum_cfx.objectives",
    "LogitMargin": "captum_cfx.objectives",
    "Objective": "captum_cfx.objectives",
    "ProbabilityThreshold": "captum_cfx.objectives",
    "RegressionTarget": "captum_cfx.objectives",
    "TargetClass": "captum_cfx.objectives",
    "LatentAdam": "captum_cfx.optim",
    "LatentOptimizer": "captum_cfx.optim",
    "NormalizedGradient": "captum_cfx.optim",
    "SignGradient": "captum_cfx.optim",
}
_SUBPACKAGES = ("attr", "datasets", "descriptors", "generators", "interventions", "metrics", "objectives", "optim",
                "visualization", "zoo")

__all__ = [
    "CounterfactualSufficiencyNecessity",
    "LatentIntervention",
    "LinearDirections",
    "ShiftPredictor",
    "CounterfactualDescriptorAttribution",
    "InterFaceGANEdit",
    "GlobalCounterfactualDirections",
    "LatentIntegratedGradients",
    "LatentProbes",
    "Morphometry",
    "AutoencoderGenerator",
    "DDIMGenerator",
    "DiffusionAutoencoder",
    "CounterfactualOutput",
    "DiffusionPixelCounterfactual",
    "DiffusersVAEGenerator",
    "Flip",
    "GANGenerator",
    "Latent",
    "LatentAdam",
    "LatentAttackConfig",
    "LatentCounterfactualAttack",
    "LatentCoordinateSearch",
    "CoordinateSearchConfig",
    "PixelCounterfactualConfig",
    "LatentGenerator",
    "LatentOptimizer",
    "LogitMargin",
    "NormalizedGradient",
    "Objective",
    "ProbabilityThreshold",
    "RegressionTarget",
    "SignGradient",
    "TargetClass",
    "VAEGenerator",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"captum_cfx.{name}")
    else:
        raise AttributeError(f"module 'captum_cfx' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from captum_cfx.attr import (
        CoordinateSearchConfig,
        CounterfactualDescriptorAttribution,
        CounterfactualOutput,
        CounterfactualSufficiencyNecessity,
        DiffusionPixelCounterfactual,
        GlobalCounterfactualDirections,
        InterFaceGANEdit,
        LatentAttackConfig,
        LatentCoordinateSearch,
        LatentCounterfactualAttack,
        LatentIntegratedGradients,
        PixelCounterfactualConfig,
    )
    from captum_cfx.descriptors import LatentProbes, Morphometry
    from captum_cfx.generators import (
        AutoencoderGenerator,
        DDIMGenerator,
        DiffusersVAEGenerator,
        DiffusionAutoencoder,
        GANGenerator,
        Latent,
        LatentGenerator,
        VAEGenerator,
    )
    from captum_cfx.interventions import LatentIntervention, LinearDirections, ShiftPredictor
    from captum_cfx.objectives import (
        Flip,
        LogitMargin,
        Objective,
        ProbabilityThreshold,
        RegressionTarget,
        TargetClass,
    )
    from captum_cfx.optim import LatentAdam, LatentOptimizer, NormalizedGradient, SignGradient
