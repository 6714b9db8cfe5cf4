"""Parsing of agybridge's boolean environment switches.

This module imports nothing from the package, because ``setup.py`` loads it by path
before the package exists: the build and the import must read ``AGYBRIDGE_NO_EXTENSIONS``
through the *same* function, otherwise ``=0`` could build the extension and then import
the pure twin (a real bug in other projects' selectors).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


class EnvFlagError(ValueError):
    """A boolean environment variable holds a word that is neither true nor false."""


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Return the boolean value of environment variable *name* (unset means False).

    Accepted (case-insensitive, surrounding blanks ignored): ``1 true yes on`` for True,
    ``"" 0 false no off`` for False. Anything else raises :class:`EnvFlagError` naming the
    variable, because silently reading a typo as False hides a misconfiguration.
    """
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise EnvFlagError(
        f"environment variable {name}={raw!r} is not a boolean; "
        f"use one of {sorted(TRUE_WORDS)} or {sorted(FALSE_WORDS - {''})} (or leave it unset)"
    )


NO_EXTENSIONS_VAR = "AGYBRIDGE_NO_EXTENSIONS"
REQUIRE_EXTENSIONS_VAR = "AGYBRIDGE_REQUIRE_EXTENSIONS"


def no_extensions_requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when the user asked for the pure-Python twin (build and import alike)."""
    return env_flag(NO_EXTENSIONS_VAR, environ)
