"""Counterfactual metrics that need no download: validity, oracle agreement, proximity, sparsity, realism
(FID, sFID, manifold distance), COUT, cost, and ground truth in the synthetic worlds (MNAC)."""

from captum_cfx.metrics.basic import (
    MetricResult,
    latent_proximity,
    oracle_agreement,
    proximity,
    seconds_per_counterfactual,
    sparsity,
    steps_per_counterfactual,
    validity,
)
from captum_cfx.metrics.cout import cout, cout_curves
from captum_cfx.metrics.ground_truth import (
    FactorChanges,
    factor_changes,
    intervention_effects,
    mnac,
    right_factor_rate,
)
from captum_cfx.metrics.realism import (
    FeatureNet,
    domain_fid,
    fid,
    knn_distance,
    manifold_distance,
    pooled_pixels,
    sfid,
)

__all__ = [
    "FactorChanges",
    "FeatureNet",
    "MetricResult",
    "cout",
    "cout_curves",
    "domain_fid",
    "factor_changes",
    "fid",
    "intervention_effects",
    "knn_distance",
    "latent_proximity",
    "manifold_distance",
    "mnac",
    "oracle_agreement",
    "pooled_pixels",
    "proximity",
    "right_factor_rate",
    "seconds_per_counterfactual",
    "sfid",
    "sparsity",
    "steps_per_counterfactual",
    "validity",
]
