"""Build script: declares the optional compiled core ``agybridge._core``.

The extension is optional. With ``AGYBRIDGE_NO_EXTENSIONS`` set to a true word, or when
compiling fails (no compiler, no Python headers), the install still succeeds and the
package runs on the pure-Python twin ``agybridge._core_py``; a failed build prints one
clear warning instead of failing the install.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


def _load_env_module():
    # Load agybridge/_env.py by path: the package itself cannot be imported before it is built,
    # and the build must parse AGYBRIDGE_NO_EXTENSIONS with the very function the import uses.
    spec = importlib.util.spec_from_file_location("_agybridge_env", HERE / "agybridge" / "_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_env = _load_env_module()

WARNING = (
    "\n" + "*" * 78 + "\n"
    "WARNING: agybridge's compiled core (agybridge._core) could not be built:\n  {error}\n"
    "agybridge is installed anyway and runs on its pure-Python twin (slower hot path).\n"
    "Install a C compiler and the Python headers, then reinstall, to get the compiled core.\n" + "*" * 78 + "\n"
)


class OptionalBuildExt(build_ext):
    """build_ext that turns a compile failure into a warning, never a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure means "fall back to the twin"
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        sys.stderr.write(WARNING.format(error=f"{type(exc).__name__}: {exc}"))


def extensions() -> list[Extension]:
    if _env.no_extensions_requested():
        sys.stderr.write(f"{_env.NO_EXTENSIONS_VAR} is set: building the pure-Python agybridge only.\n")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        sys.stderr.write(WARNING.format(error=f"Cython is not available ({exc})"))
        return []
    ext = Extension("agybridge._core", ["agybridge/_core.pyx"], extra_compile_args=["-O2"])
    return cythonize([ext], compiler_directives={"language_level": "3"}, quiet=True)


ext_modules = extensions()
# pip builds a local directory in place: give the pure build its own build folder so a
# compiled _core left in build/ by an earlier install can never end up in a pure wheel.
options = {} if ext_modules else {"build": {"build_base": "build/pure-python"}}
setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt}, options=options)
