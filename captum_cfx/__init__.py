"""captum_cfx: counterfactual explanations in generative latent spaces, as Captum attributions."""

from captum_cfx.attr import CounterfactualOutput, LatentCounterfactualAttack
from captum_cfx.generators import (
    AutoencoderGenerator,
    DiffusersVAEGenerator,
    Latent,
    LatentGenerator,
    VAEGenerator,
)
from captum_cfx.objectives import (
    Flip,
    LogitMargin,
    Objective,
    ProbabilityThreshold,
    RegressionTarget,
    TargetClass,
)
from captum_cfx.optim import LatentAdam, LatentOptimizer, NormalizedGradient, SignGradient

__version__ = "0.1.0"

__all__ = [
    "AutoencoderGenerator",
    "CounterfactualOutput",
    "DiffusersVAEGenerator",
    "Flip",
    "Latent",
    "LatentAdam",
    "LatentCounterfactualAttack",
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
