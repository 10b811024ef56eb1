"""Counterfactual metrics that need no download: validity, oracle agreement, proximity, realism."""

from captum_cfx.metrics.basic import MetricResult, oracle_agreement, proximity, sparsity, validity
from captum_cfx.metrics.ground_truth import FactorChanges, factor_changes, mnac
from captum_cfx.metrics.realism import FeatureNet, domain_fid, knn_distance, mnist_features

__all__ = [
    "FactorChanges",
    "FeatureNet",
    "MetricResult",
    "domain_fid",
    "factor_changes",
    "knn_distance",
    "mnac",
    "mnist_features",
    "oracle_agreement",
    "proximity",
    "sparsity",
    "validity",
]
