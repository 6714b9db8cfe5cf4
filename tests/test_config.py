"""RuntimeConfig and the timeout policy: defaults, env overrides, validation."""

from __future__ import annotations

import math

import pytest

from agybridge import ConfigError, RuntimeConfig, default_chat_timeout, default_operation_timeout
from agybridge.config import (
    CHAT_TIMEOUT_ENV,
    DEFAULT_CHAT_TIMEOUT_SECS,
    DEFAULT_INTER_AGENT_DELAY,
    DEFAULT_THREAD_NAME,
    OPERATION_TIMEOUT_ENV,
    OPERATION_TIMEOUT_MARGIN_SECS,
)


def test_defaults() -> None:
    assert DEFAULT_CHAT_TIMEOUT_SECS == 120
    assert default_chat_timeout({}) == 120.0
    assert default_operation_timeout(environ={}) == 120.0 + OPERATION_TIMEOUT_MARGIN_SECS
    assert default_operation_timeout(10.0, environ={}) > 10.0
    assert 0 < DEFAULT_INTER_AGENT_DELAY < 1
    assert DEFAULT_THREAD_NAME == "agy-bridge-python-runtime"


def test_chat_timeout_from_env() -> None:
    assert default_chat_timeout({CHAT_TIMEOUT_ENV: "7.5"}) == 7.5
    assert default_chat_timeout({CHAT_TIMEOUT_ENV: " 3 "}) == 3.0
    assert default_chat_timeout({CHAT_TIMEOUT_ENV: ""}) == 120.0


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "nan", "inf", "-inf", "1e400", "12s"])
@pytest.mark.parametrize("variable", [CHAT_TIMEOUT_ENV, OPERATION_TIMEOUT_ENV])
def test_bad_env_values_raise_naming_variable_and_value(variable: str, bad: str) -> None:
    fn = default_chat_timeout if variable == CHAT_TIMEOUT_ENV else default_operation_timeout
    with pytest.raises(ConfigError) as info:
        fn(environ={variable: bad})  # type: ignore[operator]
    assert variable in str(info.value)
    assert repr(bad) in str(info.value)


def test_bad_env_reaches_runtime_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHAT_TIMEOUT_ENV, "-5")
    with pytest.raises(ConfigError, match=CHAT_TIMEOUT_ENV):
        RuntimeConfig()
    monkeypatch.setenv(CHAT_TIMEOUT_ENV, "4")
    config = RuntimeConfig()
    assert config.chat_timeout == 4.0
    assert config.operation_timeout == 4.0 + OPERATION_TIMEOUT_MARGIN_SECS


def test_operation_timeout_env_overrides_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPERATION_TIMEOUT_ENV, "300")
    assert RuntimeConfig(chat_timeout=5).operation_timeout == 300.0


def test_operation_timeout_is_derived_from_the_given_chat_timeout() -> None:
    config = RuntimeConfig(chat_timeout=500)
    assert config.operation_timeout == 500 + OPERATION_TIMEOUT_MARGIN_SECS
    assert config.round_trip_timeout == config.operation_timeout


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chat_timeout", 0),
        ("chat_timeout", -1),
        ("chat_timeout", math.nan),
        ("chat_timeout", math.inf),
        ("chat_timeout", "10"),
        ("chat_timeout", True),
        ("operation_timeout", 0),
        ("operation_timeout", math.inf),
        ("inter_agent_delay", -0.1),
        ("inter_agent_delay", math.nan),
        ("shutdown_grace", -1),
        ("thread_name", ""),
        ("thread_name", None),
        ("use_uvloop", "yes"),
        ("max_in_flight", 0),
        ("max_in_flight", 1.5),
        ("worker_threads", 0),
        ("caller_spin", -1e-6),
        ("caller_spin", 0.5),
        ("loop_spin", math.nan),
    ],
)
def test_invalid_fields_raise_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        RuntimeConfig(**{field: value})  # type: ignore[arg-type]


def test_zero_delay_and_grace_are_allowed() -> None:
    config = RuntimeConfig(inter_agent_delay=0, shutdown_grace=0)
    assert config.inter_agent_delay == 0.0 and config.shutdown_grace == 0.0


def test_config_is_frozen() -> None:
    config = RuntimeConfig()
    with pytest.raises(AttributeError):
        config.chat_timeout = 1  # type: ignore[misc]
