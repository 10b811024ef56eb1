"""Small trained models shipped with captum_cfx (safetensors + JSON config), loaded by name."""
from captum_cfx.zoo._registry import available, load_generator, load_pretrained

__all__ = ["available", "load_generator", "load_pretrained"]
