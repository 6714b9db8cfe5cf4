"""OpenAI Agents SDK agents on the agybridge runtime (``pip install 'agybridge[openai-agents]'``).

:class:`OpenAIAgentsAgent` runs an ``agents.Agent`` with ``Runner.run`` (``chat``) or
``Runner.run_streamed`` (``chat_stream``) on the runtime loop, so it satisfies agybridge's agent
protocol; :func:`openai_agents_agent` is the factory to pass to ``register_agent``. The SDK's own
sync entry, ``Runner.run_sync``, makes a new event loop per call and refuses a thread whose loop
is running; through the bridge every thread, asyncio loop and trio run drives the agent on one
loop, where its model client's connection pool lives.

Host tools. At every chat, each tool of the agent's :class:`~agybridge.AgentBridgeState` is added
to the SDK agent (a clone of it: the agent given is never changed) as a ``FunctionTool`` whose
schema is the bridge tool's parameter description and whose body is
:func:`~agybridge.dispatch_tool`: sync tools run in the runtime's workers with the caller's
context, async tools on the host loop that registered the agent, thread-sensitive ones on the
caller's thread. A tool that raises reaches the model as the SDK reports a failed function tool
(its ``default_tool_error_function``, or the ``failure_error_function`` given), and ``on_error``
fires; a failure of the bridge itself (the agent unregistered, the caller or the host loop gone, a
broken policy) ends the chat with that error instead.

Policies. If the agent has policies, its host tools are declared ``needs_approval`` to the SDK:
a call the model asks for pauses the run on an interruption; the adapter decides it on the host
side with :func:`~agybridge.dispatch_policy_confirm` and resumes the run from its state
(``RunState.approve`` or ``RunState.reject``). A denial reaches the model as that call's rejection,
worded with the policy's reason, and the run goes on; the approved call then runs without asking
the policies again (``dispatch_tool(..., confirmed=True)``), so each call is confirmed exactly once.
A policy that raises refuses the call and ends the chat with :class:`~agybridge.PolicyError`
(policies fail closed, as for every agent). Any other approval the SDK asks for (a tool of the SDK
agent's own declared ``needs_approval``) is decided the same way, by the agent's policies.

Hooks. The bridge fires ``before_chat``/``after_chat`` around every chat, as for every agent: they
are the chat's agent start and end. (The SDK's own ``on_agent_start`` runs once per model turn,
and again when a run resumes after an approval, so it is not a chat boundary and fires no
bridge hook.) ``before_tool``/``after_tool`` fire once per tool call: for host tools from inside
:func:`~agybridge.dispatch_tool`, with the arguments and the result; for the SDK agent's own
tools from the SDK's ``on_tool_start``/``on_tool_end`` (see :class:`BridgeRunHooks`), never both.

The conversation. Successive chats with one agent continue one conversation, carried as the
previous turn's items (``RunResult.to_input_list()``), not as an SDK ``Session``: the items are
the SDK's own replayable form of a turn, kept in memory on the agent object that lives on the
runtime loop, with no storage to open, lock or clean up; the runtime already takes one agent's
chats one at a time, in order. A turn is recorded only when it completes (a failed turn, or a
stream the consumer left early, is not). Pass ``session=`` for an SDK session instead
(persistence across restarts); the adapter then keeps no items itself.

Tracing. The SDK's tracing exports to OpenAI's servers by default; pass
``run_config=RunConfig(tracing_disabled=True)`` (or call ``agents.set_tracing_disabled(True)``)
to keep every byte local, as the tests, the demo and the documentation's examples do.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

try:
    import agents  # noqa: F401 - the SDK's import name
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "agybridge.adapters.openai_agents needs the OpenAI Agents SDK: pip install 'agybridge[openai-agents]'"
    ) from exc

from agents import (
    Agent,
    FunctionTool,
    Model,
    ModelResponse,
    RunConfig,
    RunHooks,
    Runner,
    RunResult,
    RunResultStreaming,
    RunState,
    ToolApprovalItem,
    UserError,
    default_tool_error_function,
)
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.memory import Session
from agents.run import DEFAULT_MAX_TURNS
from agents.run_context import RunContextWrapper
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool import Tool as SDKTool
from agents.tool import ToolErrorFunction
from agents.tool_context import ToolContext
from openai.types.responses import (
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)

from agybridge import AgyBridgeError, ContextError, PolicyDeniedError, ToolError, UnknownToolError
from agybridge.adapters.base import ConversationAgent, HostTool, confirm_call, fire_hook, host_tools
from agybridge.testing import plan_from_message

__all__ = [
    "BridgeRunHooks",
    "HostFunctionTool",
    "OpenAIAgentsAgent",
    "PlanningModel",
    "bridge_tools",
    "demo_agent_factory",
    "openai_agents_agent",
]

# The bridge's own failures end the chat; these are the tool's (or the model's) and reach the model.
_MODEL_VISIBLE_BRIDGE_ERRORS = (ToolError, ContextError, UnknownToolError)


class HostFunctionTool(FunctionTool):
    """A ``FunctionTool`` whose body is a host tool of the bridge (see :func:`bridge_tools`).

    Its own class, so that :class:`BridgeRunHooks` knows the SDK's tool start and end of these
    calls are already reported by :func:`~agybridge.dispatch_tool` (a copy the SDK makes keeps the
    class).
    """


async def _failure_message(fn: ToolErrorFunction, ctx: ToolContext[Any], error: Exception) -> str:
    message = fn(ctx, error)
    if inspect.isawaitable(message):
        message = await message
    return str(message)


def _function_tool(host: HostTool, approved: set[str], failure_error_function: ToolErrorFunction) -> FunctionTool:
    """*host* as an SDK function tool; *approved* holds the call ids this chat's approval step let through."""

    async def invoke(ctx: ToolContext[Any], arguments: str) -> Any:
        try:
            try:
                args = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ContextError(f"the arguments of tool {host.name!r} are not valid JSON: {exc}") from None
            if not isinstance(args, dict):
                raise ContextError(f"the arguments of tool {host.name!r} must be a JSON object, not {arguments!r}")
            # A call this chat's approval step let through is confirmed; any other is asked here.
            return await host.call(args, confirmed=ctx.tool_call_id in approved)
        except PolicyDeniedError as denial:
            return str(denial)  # refused inside dispatch_tool: still a rejection the model reads
        except Exception as exc:
            if isinstance(exc, AgyBridgeError) and not isinstance(exc, _MODEL_VISIBLE_BRIDGE_ERRORS):
                raise  # the bridge failed, not the tool: the chat ends with this error
            return await _failure_message(failure_error_function, ctx, exc)

    return HostFunctionTool(
        name=host.name,
        description=host.description,
        params_json_schema=dict(host.json_schema),
        on_invoke_tool=invoke,
        # As the bridge describes it: strict mode would make every parameter required.
        strict_json_schema=False,
        needs_approval=host.needs_confirmation,
    )


def bridge_tools(
    agent_id: str,
    *,
    approved: set[str] | None = None,
    failure_error_function: ToolErrorFunction = default_tool_error_function,
) -> list[FunctionTool]:
    """The agent's host tools (from ``BRIDGE_STATE``) as SDK function tools.

    :param agent_id: the agent whose tools these are.
    :param approved: the call ids the caller's own approval step approved through
        :func:`~agybridge.dispatch_policy_confirm`; those run without asking the policies again
        (default: none, so :func:`~agybridge.dispatch_tool` asks them).
    :param failure_error_function: turns a tool's exception into the text the model reads (default:
        the SDK's ``default_tool_error_function``, as for its own function tools).
    """
    calls = approved if approved is not None else set()
    return [_function_tool(host, calls, failure_error_function) for host in host_tools(agent_id)]


def _arguments(context: RunContextWrapper[Any]) -> dict[str, Any]:
    raw = getattr(context, "tool_arguments", None)
    if not isinstance(raw, str):
        return {}
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {"arguments": raw}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


class BridgeRunHooks(RunHooks[Any]):
    """The SDK's run hooks, reporting tool calls to the host's hooks, then to *inner*.

    The SDK's tool start and end of a tool that is not a host tool (one of the SDK agent's own)
    fire the host's ``before_tool`` and ``after_tool`` hooks through
    :func:`~agybridge.dispatch_hook`, with the tool's name, its arguments and (at the end) its
    result. For a host tool (:class:`HostFunctionTool`) they fire nothing, because
    :func:`~agybridge.dispatch_tool` fires both around the call itself: each event reaches the
    host's hooks once. Every event is passed on to *inner*, the SDK hooks given to the adapter.

    :param agent_id: the agent whose hooks fire.
    :param inner: more SDK run hooks, called after the bridge's (None: none).
    """

    def __init__(self, agent_id: str, inner: RunHooks[Any] | None = None) -> None:
        self.agent_id = agent_id
        self.inner = inner

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Agent[Any], tool: SDKTool) -> None:
        if not isinstance(tool, HostFunctionTool):
            await fire_hook(self.agent_id, "before_tool", {"tool": tool.name, "args": _arguments(context)})
        if self.inner is not None:
            await self.inner.on_tool_start(context, agent, tool)

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: SDKTool, result: object
    ) -> None:
        if not isinstance(tool, HostFunctionTool):
            context_ = {"tool": tool.name, "args": _arguments(context), "result": result}
            await fire_hook(self.agent_id, "after_tool", context_)
        if self.inner is not None:
            await self.inner.on_tool_end(context, agent, tool, result)

    async def on_agent_start(self, context: Any, agent: Agent[Any]) -> None:
        if self.inner is not None:
            await self.inner.on_agent_start(context, agent)

    async def on_agent_end(self, context: Any, agent: Agent[Any], output: Any) -> None:
        if self.inner is not None:
            await self.inner.on_agent_end(context, agent, output)

    async def on_handoff(self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]) -> None:
        if self.inner is not None:
            await self.inner.on_handoff(context, from_agent, to_agent)

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        if self.inner is not None:
            await self.inner.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        if self.inner is not None:
            await self.inner.on_llm_end(context, agent, response)


def _bridge_cause(error: BaseException) -> AgyBridgeError | None:
    """The bridge's own failure an SDK error wraps (the SDK re-raises a tool's exception as
    ``UserError(...) from exc``), or None."""
    cause = error.__cause__
    if isinstance(error, UserError) and isinstance(cause, AgyBridgeError):
        return cause
    return None


def _text(output: Any) -> str:
    return output if isinstance(output, str) else str(output)


class OpenAIAgentsAgent(ConversationAgent[TResponseInputItem]):
    """An OpenAI Agents SDK ``Agent`` that satisfies agybridge's agent protocol.

    Create it on the runtime loop (through :func:`openai_agents_agent`, a factory for
    ``register_agent``), like every agent object: the SDK agent's model client, and its
    connection pool, then belong to the runtime loop. Its ``history`` is the conversation so far,
    as SDK input items (``RunResult.to_input_list()`` of the last completed chat).

    :param agent_id: the id it is registered under (its tool calls, policies and hooks name it).
    :param agent: the SDK agent; each chat runs a clone of it with the host tools added.
    :param run_config: the SDK's run configuration for every run (pass
        ``RunConfig(tracing_disabled=True)`` to keep traces local).
    :param max_turns: the SDK's bound on model turns per run.
    :param hooks: more SDK run hooks, called after the bridge's own (:class:`BridgeRunHooks`).
    :param session: an SDK session to carry the conversation instead of the adapter's items.
    :param context: the SDK run context object handed to every run.
    :param failure_error_function: the text a failed host tool returns to the model (default: the
        SDK's ``default_tool_error_function``).
    """

    def __init__(
        self,
        agent_id: str,
        agent: Agent[Any],
        *,
        run_config: RunConfig | None = None,
        max_turns: int = DEFAULT_MAX_TURNS,
        hooks: RunHooks[Any] | None = None,
        session: Session | None = None,
        context: Any = None,
        failure_error_function: ToolErrorFunction = default_tool_error_function,
    ) -> None:
        super().__init__(agent_id)
        self.agent = agent
        self.run_config = run_config
        self.max_turns = max_turns
        self.hooks = hooks
        self.session = session
        self.context = context
        self.failure_error_function = failure_error_function

    def _prepare(self, message: str, approved: set[str]) -> tuple[Agent[Any], Any, dict[str, Any]]:
        # Built per chat, so tools added to the bridge state later are offered too.
        tools = bridge_tools(self.agent_id, approved=approved, failure_error_function=self.failure_error_function)
        agent = self.agent.clone(tools=[*self.agent.tools, *tools])
        options: dict[str, Any] = {
            "context": self.context,
            "max_turns": self.max_turns,
            "hooks": BridgeRunHooks(self.agent_id, self.hooks),
            "run_config": self.run_config,
            "session": self.session,
        }
        if self.session is not None or not self._history:
            return agent, message, options
        return agent, [*self._history, {"role": "user", "content": message}], options

    async def _decide(
        self, state: RunState[Any], interruptions: Sequence[ToolApprovalItem], approved: set[str]
    ) -> None:
        """Decide every pending approval with the agent's policies, on the host side."""
        for item in interruptions:
            name = item.name or item.tool_name or ""
            call_id = item.call_id
            args = _parsed(item.arguments)
            denial = await confirm_call(self.agent_id, name, args, call_id=call_id)
            if denial is None:
                state.approve(item)
                if call_id is not None:
                    approved.add(call_id)
            else:
                state.reject(item, rejection_message=str(denial))

    def _record(self, result: RunResult | RunResultStreaming) -> None:
        if self.session is None:
            self._keep(result.to_input_list())

    async def chat(self, message: str) -> str:
        """One chat turn: run the SDK agent on *message* with ``Runner.run``, continuing the conversation.

        Awaited on the runtime loop by the bridge (through :meth:`~agybridge.PythonRuntime.chat` and
        friends). Each approval the run stops for is decided by the agent's policies and the run
        resumed, until it has a final output.

        :param message: the user's message.
        :returns: the run's final output (``str()`` of it if it is not text).
        :raises Exception: whatever the SDK raises (``MaxTurnsExceeded``, a model error, ...), or
            the bridge's own error that ended a tool call (:class:`~agybridge.CallerGoneError`,
            :class:`~agybridge.PolicyError`, ...), unwrapped from the SDK's ``UserError``.
        """
        async with self._turn:
            approved: set[str] = set()
            agent, run_input, options = self._prepare(message, approved)
            try:
                result = await Runner.run(agent, run_input, **options)
                while result.interruptions:
                    state = result.to_state()
                    await self._decide(state, result.interruptions, approved)
                    result = await Runner.run(agent, state, **options)
            except UserError as exc:
                cause = _bridge_cause(exc)
                if cause is None:
                    raise
                raise cause  # noqa: B904 - "from exc" would overwrite its own __cause__
            self._record(result)
        return _text(result.final_output)

    async def chat_stream(self, message: str) -> AsyncIterator[str]:
        """The reply's text deltas as the model streams them (``Runner.run_streamed``).

        Tool calls and approvals happen between the model's responses, as in :meth:`chat`; the
        conversation is recorded once the run completes. A consumer that leaves early cancels the
        SDK's run, and the turn is not recorded.
        """
        async with self._turn:
            approved: set[str] = set()
            agent, run_input, options = self._prepare(message, approved)
            while True:
                result = Runner.run_streamed(agent, run_input, **options)
                try:
                    async for event in result.stream_events():
                        data = getattr(event, "data", None)
                        if isinstance(data, ResponseTextDeltaEvent) and data.delta:
                            yield data.delta
                except UserError as exc:
                    cause = _bridge_cause(exc)
                    if cause is None:
                        raise
                    raise cause  # noqa: B904 - "from exc" would overwrite its own __cause__
                finally:
                    if not result.is_complete:
                        result.cancel()  # the consumer left early, or the run failed
                if not result.interruptions:
                    break
                state = result.to_state()
                await self._decide(state, result.interruptions, approved)
                run_input = state
            self._record(result)


def _parsed(arguments: str | None) -> dict[str, Any]:
    if not arguments:
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def openai_agents_agent(
    agent_id: str, make_agent: Callable[[], Agent[Any]], **options: Any
) -> Callable[[], OpenAIAgentsAgent]:
    """A factory for ``register_agent``: the SDK agent (and its model client) is built on the runtime loop.

    :param agent_id: the id the agent is registered under.
    :param make_agent: builds the ``agents.Agent``; called on the runtime loop.
    :param options: passed on to :class:`OpenAIAgentsAgent` (``run_config``, ``max_turns``, ...).
    """
    return lambda: OpenAIAgentsAgent(agent_id, make_agent(), **options)


# ------------------------------------------------------------------------------------------
# An offline model for the demo and for tests: plans like agybridge.testing.ScriptedAgent
# ------------------------------------------------------------------------------------------

_DENIAL = re.compile(r"^policy '.*' denied tool '")


def _item(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    dump = getattr(item, "model_dump", None)
    return dump(exclude_unset=True) if callable(dump) else {}


class PlanningModel(Model):
    """An offline SDK ``Model`` that plans like :class:`~agybridge.testing.ScriptedAgent`.

    It calls the tools written in the latest user message (``name(k=v)``, see
    :func:`~agybridge.testing.plan_from_message`), then answers from their outputs, reporting a
    rejected call as ``name denied (reason)``, after *latency* seconds of simulated model time per
    request. Streamed, the answer comes word by word, the words after the first spread over another
    *latency*. Each response is made by a one-step ``agents.testing.ScriptedModel``, so the SDK's
    own test double shapes every item and stream event.

    :param latency: the simulated model time per request, in seconds.
    """

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    def plan(self, input: str | list[TResponseInputItem]) -> list[TResponseOutputItem]:
        """The response to *input*: the tool calls to make first, or the answer."""
        items = [{"role": "user", "content": input}] if isinstance(input, str) else [_item(i) for i in input]
        prompts = [str(i.get("content", "")) for i in items if i.get("role") == "user"]
        turn = len(prompts)
        names = {i.get("call_id"): i.get("name") for i in items if i.get("type") == "function_call"}
        outputs: list[dict[str, Any]] = []
        for item in reversed(items):
            if item.get("type") != "function_call_output":
                break
            outputs.insert(0, item)
        if outputs:
            summary = []
            for item in outputs:
                name, output = names.get(item.get("call_id"), "?"), str(item.get("output", ""))
                summary.append(f"{name} denied ({output})" if _DENIAL.match(output) else f"{name} -> {output}")
            return [_answer(f"turn {turn}: " + "; ".join(summary))]
        calls = plan_from_message(prompts[-1] if prompts else "")
        if not calls:
            return [_answer(f"turn {turn}: no tools needed")]
        return [function_call(name, args, call_id=f"call-{turn}-{i}") for i, (name, args) in enumerate(calls)]

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        """The planned response, after *latency* seconds (the SDK's arguments are passed on)."""
        await asyncio.sleep(self.latency)
        return await ScriptedModel([self.plan(input)]).get_response(system_instructions, input, *args, **kwargs)

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """The planned response as the SDK's stream events, the answer's words spread over *latency*."""
        await asyncio.sleep(self.latency)
        output = self.plan(input)
        parts = sum(len(getattr(item, "content", ())) for item in output)
        inner = ScriptedModel([output])
        first = True
        async for event in inner.stream_response(system_instructions, input, *args, **kwargs):
            if isinstance(event, ResponseTextDeltaEvent):
                if not first:
                    await asyncio.sleep(self.latency / max(parts, 1))
                first = False
            yield event


def _answer(text: str) -> TResponseOutputItem:
    """An assistant message with one text part per word, so that it streams word by word."""
    words = re.findall(r"\S+\s*", text) or [text]
    if len(words) == 1:
        return assistant_message(text)
    content: list[ResponseOutputText | ResponseOutputRefusal] = [
        ResponseOutputText(text=word, type="output_text", annotations=[], logprobs=[]) for word in words
    ]
    return ResponseOutputMessage(
        id="planned-message", type="message", role="assistant", status="completed", content=content
    )


def demo_agent_factory(agent_id: str, *, latency: float = 0.0) -> Callable[[], OpenAIAgentsAgent]:
    """The demo's agent: a real SDK ``Agent`` driven by :class:`PlanningModel`, tracing off."""
    return openai_agents_agent(
        agent_id,
        lambda: Agent(name=agent_id, model=PlanningModel(latency)),
        run_config=RunConfig(tracing_disabled=True),
    )
