"""Training recipes for the worlds models (merged into `python -m captum_cfx.zoo.train`)."""

from __future__ import annotations

from captum_cfx.zoo.train import Recipe

RECIPES: dict[str, Recipe] = {}
