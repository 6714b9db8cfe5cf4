"""One version, everywhere a user reads it: the package, its metadata, the site and the changelog."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import agybridge

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_version() -> str:
    # The [project] table's own line (tomllib is 3.11+; the suite runs on 3.10 too).
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^version = "([^"]+)"$', text, re.M)
    assert found is not None, "pyproject.toml has no version line"
    return found.group(1)


def test_version_of_the_package_is_pyprojects() -> None:
    assert agybridge.__version__ == _pyproject_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", agybridge.__version__)


def test_installed_metadata_agrees() -> None:
    """The installed distribution says the same (a stale install would mislead pip and users)."""
    assert importlib.metadata.version("agybridge") == agybridge.__version__


def test_changelog_leads_with_this_version() -> None:
    headings = re.findall(r"^## (\d+\.\d+\.\d+)\b", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings, "CHANGELOG.md has no version heading"
    assert headings[0] == agybridge.__version__
    assert len(headings) == len(set(headings)), f"a version appears twice in CHANGELOG.md: {headings}"


def test_site_title_and_changelog_page_follow_the_package() -> None:
    """docs/conf.py takes its release from agybridge, and the site's changelog is CHANGELOG.md."""
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert re.search(r"^release = agybridge\.__version__$", conf, re.M)
    assert re.search(r'^html_title = f"agybridge \{release\}"$', conf, re.M)
    assert "../CHANGELOG.md" in (ROOT / "docs" / "changelog.md").read_text()
