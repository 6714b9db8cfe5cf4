"""Every Python code block in the README runs, so the docs cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    if "pydantic_ai" in BLOCKS[index]:
        pytest.importorskip("pydantic_ai", reason="this example needs the pydantic-ai extra (Python 3.11+)")
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(BLOCKS[index])
    # Run outside the source tree so the installed package is what the example imports.
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{proc.stderr}"
