"""A local OpenAI-compatible server for the SDK tests: real HTTP on 127.0.0.1, no internet.

``/v1/chat/completions``, streamed (SSE ``chat.completion.chunk`` deltas) or not (one
``chat.completion`` body), with tool calls, in its own thread and event loop, started and stopped
by the test. HTTP/1.1 keep-alive, so ``connections`` counts the TCP connections a client's pool
opened. What the model says is decided by a *responder*: ``responder(request) -> Reply``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agybridge.testing import plan_from_message


@dataclass
class Reply:
    """What the model answers: text (sent in these chunks when streamed) or tool calls."""

    chunks: list[str] = field(default_factory=list)
    #: (call id, tool name, arguments as a dict)
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def weather_responder(request: dict[str, Any]) -> Reply:
    """A user message asks ``weather(city=<message>)``; a tool result is answered in four deltas."""
    last = request["messages"][-1]
    if last["role"] == "tool":
        return Reply(chunks=["it ", "is ", f"{last['content']} ", "there."])
    return Reply(tool_calls=[("call_1", "weather", {"city": last["content"]})])


def planning_responder(request: dict[str, Any]) -> Reply:
    """Plans like :class:`agybridge.testing.ScriptedAgent`: the calls written in the last user message
    (``name(k=v)``), then ``"turn N: name -> output; ..."`` from the tool results, word by word."""
    messages = request["messages"]
    turn = sum(1 for m in messages if m["role"] == "user")
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.insert(0, message)
    if results:
        names = {
            call["id"]: call["function"]["name"]
            for m in messages
            if m["role"] == "assistant"
            for call in m.get("tool_calls") or ()
        }
        text = f"turn {turn}: " + "; ".join(f"{names.get(r['tool_call_id'], '?')} -> {r['content']}" for r in results)
        return Reply(chunks=[word + " " for word in text.split(" ")[:-1]] + [text.split(" ")[-1]])
    prompt = next(m for m in reversed(messages) if m["role"] == "user")["content"]
    calls = plan_from_message(prompt if isinstance(prompt, str) else json.dumps(prompt))
    if not calls:
        return Reply(chunks=[f"turn {turn}: ", "no tools needed"])
    return Reply(tool_calls=[(f"call_{turn}_{i}", name, args) for i, (name, args) in enumerate(calls)])


class FakeOpenAIServer:
    """``/v1/chat/completions`` on 127.0.0.1, in its own thread and loop.

    :param responder: decides each reply from the request body (default: :func:`weather_responder`).

    Counters (read them once the clients are done): ``connections`` (TCP connections accepted),
    ``requests``, ``streamed`` (requests with ``stream: true``), ``longest_history`` (the most
    messages one request carried), ``tool_names`` (the tools each request declared).
    """

    def __init__(self, responder: Callable[[dict[str, Any]], Reply] = weather_responder) -> None:
        self.responder = responder
        self.connections = 0
        self.requests = 0
        self.streamed = 0
        self.longest_history = 0
        self.tool_names: list[list[str]] = []
        self.port = 0
        self._ready = threading.Event()
        self._stop: Any = None
        self._loop: Any = None
        self._thread = threading.Thread(target=self._main, name="fake-openai-server", daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        assert self._ready.wait(10), "the fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await asyncio.wait_for(self._stop.wait(), 120)  # a bounded lifetime

        asyncio.run(serve())

    @staticmethod
    def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-local",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "local-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    def _events(self, reply: Reply) -> list[bytes]:
        if not reply.tool_calls:
            events = [self._chunk({"role": "assistant", "content": ""})]
            events += [self._chunk({"content": chunk}) for chunk in reply.chunks]
            events.append(self._chunk({}, "stop"))
            return [*events, b"data: [DONE]\n\n"]
        events = []
        for index, (call_id, name, args) in enumerate(reply.tool_calls):
            text = json.dumps(args)
            call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            events.append(self._chunk({"role": "assistant", "tool_calls": [call]}))
            for part in (text[:5], text[5:]):  # the arguments arrive in two deltas
                events.append(self._chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
        events.append(self._chunk({}, "tool_calls"))
        return [*events, b"data: [DONE]\n\n"]

    @staticmethod
    def _completion(reply: Reply) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.chunks) or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                for call_id, name, args in reply.tool_calls
            ]
        body = {
            "id": "chatcmpl-local",
            "object": "chat.completion",
            "created": 0,
            "model": "local-model",
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return json.dumps(body).encode()

    async def _connection(self, reader: Any, writer: Any) -> None:
        import h11

        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.SEND_BODY:
                        return
                    continue
                if isinstance(event, h11.Request):
                    body = b""
                    while not isinstance(event, h11.EndOfMessage):
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            conn.receive_data(await reader.read(65536))
                        elif isinstance(event, h11.Data):
                            body += event.data
                    self.requests += 1
                    request = json.loads(body)
                    self.longest_history = max(self.longest_history, len(request["messages"]))
                    self.tool_names.append([t["function"]["name"] for t in request.get("tools") or ()])
                    reply = self.responder(request)
                    if request.get("stream") is True:
                        self.streamed += 1
                        headers = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
                        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
                        for sse in self._events(reply):
                            writer.write(conn.send(h11.Data(data=sse)))
                            await writer.drain()
                    else:
                        payload = self._completion(reply)
                        headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
                        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
                        writer.write(conn.send(h11.Data(data=payload)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            writer.close()
