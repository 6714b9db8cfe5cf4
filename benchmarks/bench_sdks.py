"""A chat that calls one host tool, with real agent SDKs: through the bridge, and through each SDK's
own ``run_sync`` from a plain thread, in one run.

Four contenders, each one complete chat (a model request that asks for the tool, the tool, a
model request that answers), with the SDKs' offline models (pydantic-ai: ``planning_model``; the
OpenAI Agents SDK: the adapter's ``PlanningModel``) so no provider's latency hides the
difference:

- ``pydantic-ai via agybridge``: ``runtime.chat`` to a :class:`PydanticAIAgent`, the tool a host
  tool (``dispatch_tool``: a worker thread);
- ``pydantic-ai run_sync``: ``Agent.run_sync`` from the same plain thread, the tool a pydantic-ai
  tool;
- ``openai-agents via agybridge``: ``runtime.chat`` to an :class:`OpenAIAgentsAgent`;
- ``openai-agents run_sync``: ``Runner.run_sync``, the tool an SDK ``function_tool``.

The bridged agents keep no conversation between chats here (``run_sync`` has none), so every
chat does the same work. ``python benchmarks/bench_sdks.py [--quick]`` prints the medians of
interleaved rounds; ``benchmarks/test_bench_sdks.py`` runs the same contenders under
pytest-benchmark (CI runs it once, in quick mode, to prove it runs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from agybridge import AgentBridgeState, PythonRuntime, RuntimeConfig

MESSAGE = "weather(city=Lima)"
REPLY = "turn 1: weather -> sunny in Lima"

Contender = Callable[[], str]


def weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny in {city}"


def pydantic_ai_contenders(runtime: PythonRuntime) -> dict[str, Contender]:
    """The two pydantic-ai contenders (empty when pydantic-ai is not installed)."""
    try:
        from pydantic_ai import Agent
    except ImportError:
        return {}
    from agybridge.adapters.pydantic_ai import PydanticAIAgent
    from agybridge.testing import planning_model

    class Stateless(PydanticAIAgent):
        def _keep(self, items: Sequence[Any]) -> None:
            pass  # every chat starts afresh, as run_sync's do

    bridged = "bench-pydantic-ai"
    runtime.register_agent(bridged, lambda: Stateless(bridged, Agent(planning_model())), AgentBridgeState([weather]))
    native = Agent(planning_model(), tools=[weather])

    def own_run_sync() -> str:
        return str(native.run_sync(MESSAGE).output)

    return {
        "pydantic-ai via agybridge": lambda: runtime.chat(bridged, MESSAGE),
        "pydantic-ai run_sync": own_run_sync,
    }


def openai_agents_contenders(runtime: PythonRuntime) -> dict[str, Contender]:
    """The two OpenAI Agents SDK contenders (empty when the SDK is not installed)."""
    try:
        from agents import Agent, RunConfig, Runner, function_tool
    except ImportError:
        return {}
    from agybridge.adapters.openai_agents import OpenAIAgentsAgent, PlanningModel

    offline = RunConfig(tracing_disabled=True)

    class Stateless(OpenAIAgentsAgent):
        def _keep(self, items: Sequence[Any]) -> None:
            pass  # every chat starts afresh, as run_sync's do

    runtime.register_agent(
        "bench-openai-agents",
        lambda: Stateless("bench-openai-agents", Agent(name="bench", model=PlanningModel()), run_config=offline),
        AgentBridgeState([weather]),
    )
    native = Agent(name="bench", model=PlanningModel(), tools=[function_tool(weather)])

    def own_run_sync() -> str:
        return str(Runner.run_sync(native, MESSAGE, run_config=offline).final_output)

    return {
        "openai-agents via agybridge": lambda: runtime.chat("bench-openai-agents", MESSAGE),
        "openai-agents run_sync": own_run_sync,
    }


def contenders(runtime: PythonRuntime) -> dict[str, Contender]:
    """Every contender whose SDK is installed, registered on *runtime*."""
    return {**pydantic_ai_contenders(runtime), **openai_agents_contenders(runtime)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few rounds only (proves it runs)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    with PythonRuntime(RuntimeConfig(inter_agent_delay=0)) as runtime:
        chosen = contenders(runtime)
        if not chosen:
            raise SystemExit("needs pydantic-ai or the OpenAI Agents SDK: pip install '.[pydantic-ai,openai-agents]'")
        samples: dict[str, list[float]] = {name: [] for name in chosen}
        for name, chat in chosen.items():
            assert chat() == REPLY, name  # warm up, and check every contender does the same chat
        for _ in range(rounds):
            for name, chat in chosen.items():  # interleaved: a slow moment of the machine hits all
                started = time.perf_counter()
                chat()
                samples[name].append(time.perf_counter() - started)
    print(f"one chat calling one host tool, median of {rounds} interleaved rounds, {runtime.implementation} core")
    for name, times in samples.items():
        print(f"  {name:<28} {statistics.median(times) * 1e3:8.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
