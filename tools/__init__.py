"""The project's own tooling (not installed with the package): run from a source checkout.

- ``python tools/gallery.py``: regenerate every gallery image of the README and the user guide.
- ``python tools/update_readme.py``: paste a ``captum-cfx compare`` report into the README.
- ``python tools/draw_architecture.py``: draw ``docs/images/architecture.png`` (the layers of ``docs/architecture.md``).
- ``python tools/make_diffae_golden.py``: record the official Diffusion Autoencoder's outputs for the tests.
"""
