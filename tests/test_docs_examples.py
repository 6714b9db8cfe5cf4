"""Every Python code block of the documentation site runs, so no example can rot.

Blocks are the fenced ```python blocks of ``docs/**/*.md``. Each runs as a script in a
subprocess, outside the source tree, so it imports the installed package as a reader would.
Blocks that need a framework the ``docs`` extra installs (Flask, Django, Starlette, FastAPI,
pydantic-ai, the OpenAI Agents SDK) are skipped when it is missing, unless ``AGYBRIDGE_REQUIRE_DOCS_DEPS=1`` (CI's
docs step sets it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agybridge

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
OPTIONAL = ("flask", "django", "starlette", "fastapi", "httpx", "pydantic_ai", "trio", "agents", "openai")


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" in page.parts:
            continue
        for index, block in enumerate(FENCE.findall(page.read_text())):
            found.append((str(page.relative_to(DOCS)), index, block))
    return found


BLOCKS = _blocks()


def test_docs_have_examples() -> None:
    assert len(BLOCKS) >= 10


def test_every_public_name_is_in_the_api_reference() -> None:
    api = (DOCS / "reference" / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. (?:auto)?(?:class|exception|function|data):: (\w+)", api, re.M))
    missing = sorted(set(agybridge.__all__) - documented - {"__version__"})
    assert not missing, f"public names missing from docs/reference/api.rst: {missing}"


def test_every_lowlevel_name_is_in_the_api_reference() -> None:
    """agybridge.lowlevel has its section, naming each of its names (documented under agybridge)."""
    import agybridge.lowlevel

    api = (DOCS / "reference" / "api.rst").read_text()
    assert ".. automodule:: agybridge.lowlevel" in api
    section = api.split(".. automodule:: agybridge.lowlevel", 1)[1].split("\n---", 1)[0]
    listed = set(re.findall(r"`~agybridge\.(\w+)`", section))
    missing = sorted(set(agybridge.lowlevel.__all__) - listed)
    assert not missing, f"agybridge.lowlevel names missing from its section of docs/reference/api.rst: {missing}"
    assert set(agybridge.lowlevel.__all__) <= set(agybridge.__all__)


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS, ids=[f"{p}#{i}" for p, i, _ in BLOCKS])
def test_docs_block_runs(page: str, index: int, block: str, tmp_path: Path) -> None:
    imported = set(re.findall(r"^\s*(?:from|import) (\w+)", block, re.M))
    for module in sorted(imported & set(OPTIONAL)):
        if importlib.util.find_spec(module) is None:
            if os.environ.get("AGYBRIDGE_REQUIRE_DOCS_DEPS") == "1":
                pytest.fail(f"{page} block {index} needs {module}, which is not installed (pip install '.[docs]')")
            pytest.skip(f"{page} block {index} needs {module} (pip install '.[docs]')")
    script = tmp_path / f"docs_block_{index}.py"
    script.write_text(block)
    # Outside the source tree, so the installed package is what the example imports.
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"{page} block {index} failed:\n{block}\n{proc.stderr}"


def test_every_test_the_guarantees_page_names_exists() -> None:
    tests_dir = Path(__file__).resolve().parent
    page = (DOCS / "guarantees.md").read_text()
    named = re.findall(r"`(test_[\w*]+\.py)(?:::(test_[\w*]+))?`", page)
    assert len(named) >= 10
    missing = []
    for file_pattern, test_pattern in named:
        files = sorted(tests_dir.glob(file_pattern))
        if not files:
            missing.append(file_pattern)
            continue
        if test_pattern:
            wanted = re.compile(r"^\s*(?:async )?def " + test_pattern.replace("*", r"\w*") + r"\(", re.M)
            if not any(wanted.search(f.read_text()) for f in files):
                missing.append(f"{file_pattern}::{test_pattern}")
    assert not missing, f"docs/guarantees.md names tests that do not exist: {missing}"
