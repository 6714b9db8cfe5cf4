"""Checked by mypy --strict (tests/test_typing.py), never run: what the new calls' types promise.

Each ``# type: ignore[...]`` marks a call that MUST be a type error; mypy's
``warn_unused_ignores`` (part of --strict) fails the check if one of them is accepted.
``assert_type`` lines check that the return types are carried.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from typing_extensions import assert_type

from agybridge import AgentHandle, AgentMethod, CommandFuture, PythonRuntime, Wrapped

runtime = PythonRuntime()


async def fetch(url: str, *, retries: int = 3, timeout: float = 1.0) -> bytes:
    return url.encode() * retries


async def add_plain(a: int, b: int) -> int:
    return a + b


# -- wrap: the wrapped function's own parameters and return type --------------------------

fetch_sync = runtime.wrap(fetch)
plain: Wrapped[[int, int], int] = runtime.wrap(add_plain)
wrong: Wrapped[[str], int] = runtime.wrap(add_plain)  # type: ignore[arg-type]
assert_type(fetch_sync("u"), bytes)
assert_type(fetch_sync("u", retries=2, timeout=0.5), bytes)  # fetch's own timeout, not the bridge's
fetch_sync(1)  # type: ignore[arg-type]
fetch_sync("u", retries="2")  # type: ignore[arg-type]
fetch_sync("u", 2)  # type: ignore[call-arg]  # retries is keyword-only
fetch_sync()  # type: ignore[call-arg]
fetch_sync("u", colour=1)  # type: ignore[call-arg]
runtime.wrap(fetch, timeout="5")  # type: ignore[call-overload]


async def aio_face() -> None:
    assert_type(await fetch_sync.aio("u"), bytes)
    await fetch_sync.aio(b"u")  # type: ignore[arg-type]


@runtime.wrap
async def add(a: int, b: int) -> int:
    return a + b


@runtime.wrap(timeout=5)
async def greet(name: str) -> str:
    return f"hello {name}"


assert_type(add(1, 2), int)
assert_type(greet("x"), str)
add(1, "2")  # type: ignore[arg-type]
greet(3)  # type: ignore[arg-type]


# -- methods: the wrapper binds like the function it wraps ---------------------------------


class Store:
    @runtime.wrap
    async def get(self, key: str) -> int:
        return len(key)


store = Store()
assert_type(store.get("k"), int)
store.get(1)  # type: ignore[arg-type]


class Counter:
    async def bump(self, by: int) -> int:
        return by


bump = runtime.wrap(Counter().bump)  # a bound method wraps like a function
assert_type(bump(2), int)
bump("2")  # type: ignore[arg-type]


# -- submit: a concurrent.futures.Future of the return type --------------------------------

future = runtime.submit(fetch, "u", retries=1)
assert_type(future, CommandFuture[bytes])
assert_type(future.result(), bytes)
done, _ = concurrent.futures.wait([future])
runtime.submit(fetch, 1)  # type: ignore[arg-type]
assert_type(fetch_sync.submit("u"), CommandFuture[bytes])
fetch_sync.submit(1)  # type: ignore[arg-type]


# -- enter / aenter: the value of __aenter__ -------------------------------------------------


class Client:
    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def get(self, path: str) -> str:
        return path


@asynccontextmanager
async def session(name: str) -> AsyncIterator[dict[str, str]]:
    yield {"name": name}


with runtime.enter(Client) as client:
    assert_type(client, Client)
with runtime.enter(lambda: session("s")) as value:
    assert_type(value, dict[str, str])
with runtime.enter(session("s")) as value2:
    assert_type(value2, dict[str, str])
runtime.enter(42)  # type: ignore[arg-type]


async def aenter_face() -> None:
    async with runtime.aenter(Client) as aclient:
        assert_type(aclient, Client)


# -- agent handles: generic over the agent type ----------------------------------------------


class Summarizer:
    async def chat(self, message: str) -> str:
        return message

    async def summarize(self, text: str, words: int = 10) -> list[str]:
        return text.split()[:words]


handle = runtime.agent("s1", Summarizer)
assert_type(handle, AgentHandle[Summarizer])
assert_type(handle.chat("hi"), str)
assert_type(handle.call(Summarizer.summarize, "a b c", words=2), list[str])
handle.call(Summarizer.summarize, 3)  # type: ignore[call-overload]
handle.call(Summarizer.summarize, "a", words="2")  # type: ignore[arg-type]
handle.chat(3)  # type: ignore[arg-type]
handle.call("summarize", "a b c")  # by name: allowed, unchecked
untyped = runtime.agent("s2")
assert_type(untyped, AgentHandle[Any])


async def handle_aio() -> None:
    assert_type(await handle.aio.call(Summarizer.summarize, "a"), list[str])
    assert_type(await handle.aio.chat("x"), str)
    await handle.aio.call(Summarizer.summarize, 1)  # type: ignore[call-overload]
    # A method reached by name carries .aio, as a wrapped function does (unchecked: by name).
    assert_type(handle.summarize, AgentMethod)
    assert_type(handle.summarize("a b c"), Any)
    assert_type(await handle.summarize.aio(4), Any)
