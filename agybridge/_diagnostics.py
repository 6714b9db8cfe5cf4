"""Where errors that have no caller to go to are reported.

A done callback runs on whichever thread completed the oneshot, so an exception escaping
it has nobody to raise to; it is logged here instead of tearing down the completer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("agybridge")


def report_callback_error(callback: Callable[..., Any], exc: BaseException) -> None:
    """Log an exception that escaped a done callback, with its traceback."""
    logger.error("exception in oneshot done callback %r", callback, exc_info=(type(exc), exc, exc.__traceback__))
