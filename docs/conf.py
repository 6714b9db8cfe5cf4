"""Sphinx configuration of the agybridge documentation site.

Built in CI with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (warnings are
errors, and the build is nitpicky, so a broken cross-reference or a stale autodoc target
fails it). Autodoc imports the *installed* agybridge: install it first with
``pip install -e '.[docs]'``.
"""

from __future__ import annotations

import agybridge

project = "agybridge"
author = "agybridge developers"
copyright = "agybridge developers"
release = agybridge.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_intersphinx", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Every cross-reference must resolve: a renamed function or a typo fails the build.
nitpicky = True
nitpick_ignore = [
    # Type variables and private aliases that appear in signatures but are not public names.
    ("py:class", "T"),
    ("py:class", "agybridge.runtime.T"),
    ("py:class", "agybridge.state.HostLoop"),
    ("py:class", "HostLoop"),
    ("py:class", "agybridge.state.BridgeStats"),
    ("py:class", "Hook"),
    ("py:class", "Policy"),
    ("py:class", "agybridge.state.Hook"),
    ("py:class", "agybridge.state.Policy"),
    ("py:class", "Oneshot"),
    ("py:class", "ModuleType"),
    ("py:class", "Implementation"),
    ("py:data", "OPERATION_TIMEOUT_MARGIN_SECS"),
    ("py:class", "agybridge.errors._KeyErrorMessage"),
    ("py:class", "ToolCall"),
    ("py:class", "Agent"),
    ("py:class", "kind"),
    ("py:class", "types.Annotated"),
]
# pydantic-ai's and pydantic's own types (in the adapter's signatures) have no inventory here.
nitpick_ignore_regex = [("py:class", r"pydantic(_ai)?\..*")]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True}
autodoc_preserve_defaults = True

# CI has no network: the inventories of Python, trio and anyio are shipped in the repository
# (docs/_intersphinx, made by docs/_intersphinx/make_inventories.py). The links still point
# at the real sites.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_intersphinx/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_intersphinx/trio.inv"),
    "anyio": ("https://anyio.readthedocs.io/en/stable", "_intersphinx/anyio.inv"),
}
intersphinx_timeout = 1

html_theme = "furo"
html_title = f"agybridge {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
