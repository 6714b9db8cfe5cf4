"""Every Python code block in the README runs, so the docs cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_one_example_per_kind_of_caller() -> None:
    """A plain thread, another asyncio loop and trio: the README's examples, one each.

    The other examples (streams, the peers' calls, tools, host integration) live once, on the
    site, where tests/test_docs_examples.py runs them.
    """
    assert len(BLOCKS) >= 3
    asyncio_callers = [b for b in BLOCKS if "asyncio.run(" in b]
    trio_callers = [b for b in BLOCKS if "trio.run(" in b]
    thread_callers = [b for b in BLOCKS if b not in asyncio_callers and b not in trio_callers]
    assert asyncio_callers, "the README lost its asyncio caller's example"
    assert trio_callers, "the README lost its trio caller's example"
    assert thread_callers, "the README lost its plain thread's example"


def test_readme_is_short_and_points_to_the_site() -> None:
    """One home per text: the README says what agybridge is and points to the site for the rest."""
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for page in ("docs/guarantees.md", "docs/performance.md", "docs/explanation/architecture.md"):
        assert page in text, f"the README does not point to {page}"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (README.parent / link).is_file(), f"the README links to {link}, which does not exist"


def test_readme_keeps_the_two_set_up_commands() -> None:
    """Users copy these two and CI runs the same steps: a reworded README must not lose them."""
    text = README.read_text()
    assert "python3 -m venv .venv && .venv/bin/pip install '.[demo]' && .venv/bin/agybridge demo" in text
    assert "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/pytest" in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    if "pydantic_ai" in BLOCKS[index]:
        pytest.importorskip("pydantic_ai", reason="this example needs the pydantic-ai extra (Python 3.11+)")
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(BLOCKS[index])
    # Run outside the source tree so the installed package is what the example imports.
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{proc.stderr}"
