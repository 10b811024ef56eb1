"""Embedded and procedurally generated data sets (nothing is downloaded)."""

from captum_cfx.datasets.attribute_world import CAUSAL_GRAPH, AttributeWorld, WorldSample
from captum_cfx.datasets.mnist import interleaved_mnist, load_mnist
from captum_cfx.datasets.squares import Squares, SquaresSample

__all__ = ["CAUSAL_GRAPH", "AttributeWorld", "Squares", "SquaresSample", "WorldSample", "interleaved_mnist",
           "load_mnist"]
