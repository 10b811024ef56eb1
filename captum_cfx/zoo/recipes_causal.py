"""Training recipes for the causal-score checks (merged into `python -m captum_cfx.zoo.train`).

Models:

- ``world-vae-disjoint``: a second :class:`~captum_cfx.zoo.world_models.WorldVAE` for the attribute
  world, trained with the ``world-vae`` recipe on another seed, i.e. on a disjoint stream of fresh draws
  (and on none of the smile classifiers' fixed splits). The sufficiency/necessity benchmark uses it to
  test the claim that the generator need not be trained on the classifier's data: the scores computed
  in its latent space should rank the attributes as those computed with ``world-vae`` do.
"""

from __future__ import annotations

from captum_cfx.zoo.recipes_worlds import eval_world_vae, train_world_vae
from captum_cfx.zoo.train import Recipe

__all__ = ["RECIPES"]


RECIPES: dict[str, Recipe] = {
    "world-vae-disjoint": Recipe(
        "WorldVAE", {"latent_dim": 64, "width": 16}, seed=141, epochs=25,
        train=train_world_vae, evaluate=eval_world_vae,
        targets={"oracle_factor_agreement_on_reconstructions": 0.90},
        generator={"wrapper": "VAEGenerator", "input_range": [0, 1], "image_shape": [3, 32, 32]},
    ),
}
