"""Sphinx configuration of the agybridge documentation site.

Built in CI with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (warnings are
errors, and the build is nitpicky, so a broken cross-reference or a stale autodoc target
fails it). Autodoc imports the *installed* agybridge: install it first with
``pip install -e '.[docs]'``.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx import addnodes

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
    ("py:class", "agybridge._caller.streams.S"),
    ("py:class", "A"),
    ("py:class", "P"),
    ("py:class", "~P"),
    ("py:obj", "typing.~P"),
    ("py:class", "HeldCount"),
    ("py:class", "RemoteContextSource"),
    ("py:class", "agybridge._caller.futures.T"),
    ("py:class", "agybridge._caller.handles.A"),
    ("py:class", "agybridge._caller.handles.T"),
    ("py:class", "agybridge._caller.wrap.T"),
    ("py:class", "agybridge.runtime.A"),
    ("py:class", "contextlib.AbstractAsyncContextManager"),
    ("py:class", "collections.abc.AsyncIterator"),
    ("py:class", "agybridge._caller.streams.T"),
    ("py:class", "agybridge.state.HostLoop"),
    ("py:class", "agybridge._backends._common.HostLoop"),
    ("py:class", "FunctionModel"),
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
    ("py:class", "ToolCall"),
    ("py:class", "Agent"),
    ("py:class", "kind"),
    ("py:class", "types.Annotated"),
    # The caller's wing's send path: the faces' constructors take one, users never make one.
    ("py:class", "Sender"),
    ("py:class", "agybridge._caller.send.Sender"),
]
# pydantic-ai's and pydantic's own types (in the adapter's signatures) have no inventory here.
nitpick_ignore_regex = [
    ("py:class", r"pydantic(_ai)?\..*"),
    # The OpenAI Agents SDK's and the openai client's types (in that adapter's signatures) neither.
    ("py:class", r"(agents|openai)\..*"),
    ("py:class", r"(Agent|RunHooks|RunConfig|RunContextWrapper|RunState|Session|ToolContext|ToolErrorFunction)"),
    ("py:class", r"(ToolApprovalItem|ModelResponse|FunctionTool|TResponse\w+|PropertyInfo|\w+=.*)"),
    ("py:class", r"agybridge\.adapters\.base\.Item"),
]

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


def _public_bases(app: Any, name: str, obj: type, options: Any, bases: list[type]) -> None:
    """Show a private base class (``_KeyErrorMessage``) as the public bases it stands for."""
    public: list[type] = []
    for base in bases:
        origin = getattr(base, "__origin__", base)  # a parametrized generic such as _StreamBase[T]
        private = getattr(origin, "__name__", "").startswith("_")
        for shown in getattr(origin, "__orig_bases__", origin.__bases__) if private else (base,):
            if shown not in public:
                public.append(shown)
    bases[:] = public


def _drop_constructor_return_type(app: Any, doctree: nodes.document) -> None:
    """Drop the "Return type: None" autodoc derives from ``__init__`` for classes and exceptions."""
    for desc in doctree.findall(addnodes.desc):
        if desc.get("objtype") not in ("class", "exception"):
            continue
        content = desc.children[-1]
        for field_list in [child for child in content.children if isinstance(child, nodes.field_list)]:
            for field in list(field_list.children):
                if field[0].astext() == "Return type" and field[1].astext().strip() == "None":
                    field_list.remove(field)
            if not field_list.children:
                content.remove(field_list)


def setup(app: Any) -> None:
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("doctree-read", _drop_constructor_return_type)
