"""The new calls' types, checked by mypy --strict on tests/typing/check_calls.py.

That file states what must type-check (``assert_type``) and what must NOT (each
``# type: ignore[code]`` line): with --strict's ``warn_unused_ignores``, a wrong call that
mypy accepts leaves its ignore unused and fails this test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ROOT / "tests" / "typing" / "check_calls.py"


@pytest.mark.timeout(300)
def test_new_calls_are_typed_for_mypy_strict() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test and lint extras)")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(CHECKED)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=280,
    )
    assert proc.returncode == 0, f"mypy --strict {CHECKED.name}:\n{proc.stdout}{proc.stderr}"
