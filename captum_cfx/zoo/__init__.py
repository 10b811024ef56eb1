"""Small trained models shipped with captum_cfx (safetensors + JSON config), loaded by name, and the presets
that wire them into the generic classes (MNIST / world / squares feature networks and distances)."""
from captum_cfx.zoo._registry import MODEL_CLASSES, available, load_generator, load_pretrained, register_model
from captum_cfx.zoo.presets import mnist_distance, mnist_features, squares_features, world_features

__all__ = ["MODEL_CLASSES", "available", "load_generator", "load_pretrained", "mnist_distance", "mnist_features",
           "register_model", "squares_features", "world_features"]
