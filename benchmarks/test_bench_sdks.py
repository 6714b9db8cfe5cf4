"""Real agent SDKs (pytest-benchmark): a chat that calls one host tool, pydantic-ai and OpenAI Agents
SDK agents through the bridge against each SDK's own ``run_sync`` from a plain thread, in one run
(see bench_sdks.py, which prints the four side by side from interleaved rounds)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bench_sdks import REPLY, Contender, contenders

from agybridge import PythonRuntime, RuntimeConfig

NAMES = ["pydantic-ai via agybridge", "pydantic-ai run_sync", "openai-agents via agybridge", "openai-agents run_sync"]


@pytest.fixture(scope="module")
def sdk_contenders() -> Iterator[dict[str, Contender]]:
    with PythonRuntime(RuntimeConfig(inter_agent_delay=0)) as runtime:
        yield contenders(runtime)


@pytest.mark.parametrize("name", NAMES)
def test_chat_with_one_host_tool(benchmark: Any, sdk_contenders: dict[str, Contender], name: str) -> None:
    if name not in sdk_contenders:
        pytest.skip(f"{name.split(maxsplit=1)[0]} is not installed")
    benchmark.group = "a chat calling one host tool"
    assert benchmark(sdk_contenders[name]) == REPLY
