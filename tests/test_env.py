"""AGYBRIDGE_NO_EXTENSIONS: one parser for the build and the import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agybridge
from agybridge._env import NO_EXTENSIONS_VAR, EnvFlagError, env_flag, no_extensions_requested

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "on", " On "])
def test_true_words_force_the_twin(word: str) -> None:
    assert no_extensions_requested({NO_EXTENSIONS_VAR: word}) is True


@pytest.mark.parametrize("word", ["", "0", "false", "no", "off", "OFF"])
def test_false_words_do_not(word: str) -> None:
    assert no_extensions_requested({NO_EXTENSIONS_VAR: word}) is False


def test_unset_is_false() -> None:
    assert env_flag("AGYBRIDGE_SURELY_UNSET_VARIABLE", {}) is False


@pytest.mark.parametrize("word", ["maybe", "2", "enable", "y"])
def test_anything_else_is_an_error_naming_the_variable(word: str) -> None:
    with pytest.raises(EnvFlagError) as info:
        no_extensions_requested({NO_EXTENSIONS_VAR: word})
    assert NO_EXTENSIONS_VAR in str(info.value) and repr(word) in str(info.value)


def test_setup_py_parses_with_the_same_function() -> None:
    source = (ROOT / "setup.py").read_text()
    assert '"agybridge" / "_env.py"' in source and "no_extensions_requested()" in source


def _import_implementation(tmp_path: Path, value: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **{NO_EXTENSIONS_VAR: value})
    env.pop("AGYBRIDGE_REQUIRE_EXTENSIONS", None)
    return subprocess.run(
        [sys.executable, "-c", "import agybridge; print(agybridge.IMPLEMENTATION)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )


def test_import_honours_the_variable(tmp_path: Path) -> None:
    forced = _import_implementation(tmp_path, "yes")
    assert forced.returncode == 0 and forced.stdout.strip() == "python"
    default = _import_implementation(tmp_path, "off")
    assert default.returncode == 0 and default.stdout.strip() == agybridge.IMPLEMENTATION


def test_import_rejects_a_bad_value(tmp_path: Path) -> None:
    bad = _import_implementation(tmp_path, "maybe")
    assert bad.returncode != 0 and NO_EXTENSIONS_VAR in bad.stderr
