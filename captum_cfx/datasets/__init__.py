"""Embedded and procedurally generated data sets (nothing is downloaded)."""

from captum_cfx.datasets.mnist import load_mnist

__all__ = ["load_mnist"]
