"""captum_cfx: counterfactual explanations in generative latent spaces, as Captum attributions."""

from captum_cfx.attr import (
    CounterfactualDescriptorAttribution,
    CounterfactualOutput,
    CounterfactualSufficiencyNecessity,
    DiffusionPixelCounterfactual,
    GlobalCounterfactualDirections,
    InterFaceGANEdit,
    LatentAttackConfig,
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

__version__ = "0.1.0"

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
