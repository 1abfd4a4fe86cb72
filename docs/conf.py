"""Sphinx configuration of the sparsevae documentation (``sphinx-build -W docs docs/_build``)."""

from __future__ import annotations

from importlib import metadata

project = "sparsevae"
author = "sparsevae developers"
copyright = "2026, sparsevae developers"  # noqa: A001
release = metadata.version("sparsevae")
version = release

extensions = [
    "myst_nb",  # Markdown pages and the committed notebooks, rendered without re-running them
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # NumPy-style docstrings
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "results/**", "tutorials/README.md", "**/.ipynb_checkpoints"]
nb_execution_mode = "off"  # tutorials are committed with the outputs of a full run
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
# SparseVAE's methods come from its mixins: document those, not scvi-tools', Lightning's or
# torch's (listed in the autosummary tables, documented in their own projects).
_UPSTREAM = [
    "BaseModelClass",
    "VAEMixin",
    "UnsupervisedTrainingMixin",
    "TrainingPlan",
    "LightningModule",
    "_DeviceDtypeModuleMixin",
    "HyperparametersMixin",
    "ModelHooks",
    "DataHooks",
    "CheckpointHooks",
    "Module",
    "ABC",
    "object",
    "Exception",
    "BaseException",
]
autodoc_default_options = {"members": True, "inherited-members": ",".join(_UPSTREAM)}
autodoc_typehints = "none"  # the NumPy docstrings describe every parameter
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"sparsevae {release}"
autodoc_inherit_docstrings = False  # Lightning's hook docstrings use roles Sphinx does not know
