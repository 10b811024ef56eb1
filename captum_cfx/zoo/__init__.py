"""Small trained models shipped with captum_cfx (safetensors + JSON config), loaded by name."""
from captum_cfx.zoo._registry import MODEL_CLASSES, available, load_generator, load_pretrained, register_model

__all__ = ["MODEL_CLASSES", "available", "load_generator", "load_pretrained", "register_model"]
