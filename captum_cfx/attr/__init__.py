"""Counterfactual attribution methods, one per module."""

from captum_cfx.attr.latent_attack import LatentCounterfactualAttack
from captum_cfx.attr.output import CounterfactualOutput

__all__ = ["CounterfactualOutput", "LatentCounterfactualAttack"]
