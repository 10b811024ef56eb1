"""The project's own tooling (not installed with the package): run from a source checkout.

- ``python tools/gallery.py``: regenerate every gallery image of the README and the user guide.
- ``python tools/update_readme.py``: paste a ``captum-cfx compare`` report into the README.
"""
