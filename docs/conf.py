"""Sphinx configuration: offline (no intersphinx), warnings are errors in CI (`sphinx-build -W`)."""

import captum_cfx

project = "captum_cfx"
author = "captum_cfx developers"
release = captum_cfx.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_custom_sections = ["Shape"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "myst.xref_missing"]
html_theme = "alabaster"
