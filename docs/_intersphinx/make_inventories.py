"""Write the intersphinx inventories the docs link through, without network access.

CI builds the site offline, so ``objects.inv`` cannot be fetched from docs.python.org,
trio.readthedocs.io or anyio.readthedocs.io at build time. This script writes minimal
inventories holding just the names the site and the docstrings refer to, with the anchors
those sites use. Run it after referring to a new outside name (a nitpicky build says which):

    python docs/_intersphinx/make_inventories.py

It needs ``sphobjinv`` (``pip install sphobjinv``), which the build itself does not.
"""

from __future__ import annotations

from pathlib import Path

import sphobjinv as soi

HERE = Path(__file__).resolve().parent

# (name, role, page) -- the anchor on the page is the name itself ("$" in the inventory),
# unless the page gives one.
PYTHON: list[tuple[str, str, str]] = [
    # builtins and exceptions
    *[
        (n, "class", "library/functions.html")
        for n in ("bool", "int", "float", "str", "bytes", "dict", "list", "tuple", "object", "type")
    ],
    *[
        (n, "exception", "library/exceptions.html")
        for n in (
            "BaseException",
            "Exception",
            "KeyError",
            "ValueError",
            "TypeError",
            "RuntimeError",
            "TimeoutError",
            "PermissionError",
            "KeyboardInterrupt",
            "AttributeError",
        )
    ],
    ("None", "data", "library/constants.html"),
    ("True", "data", "library/constants.html"),
    ("False", "data", "library/constants.html"),
    # asyncio
    ("asyncio.run", "function", "library/asyncio-runner.html"),
    ("asyncio.gather", "function", "library/asyncio-task.html"),
    ("asyncio.wait_for", "function", "library/asyncio-task.html"),
    ("asyncio.timeout", "function", "library/asyncio-task.html"),
    ("asyncio.sleep", "function", "library/asyncio-task.html"),
    ("asyncio.run_coroutine_threadsafe", "function", "library/asyncio-task.html"),
    ("asyncio.to_thread", "function", "library/asyncio-task.html"),
    ("asyncio.wrap_future", "function", "library/asyncio-future.html"),
    ("asyncio.Task", "class", "library/asyncio-task.html"),
    ("asyncio.Task.cancel", "method", "library/asyncio-task.html"),
    ("asyncio.CancelledError", "exception", "library/asyncio-exceptions.html"),
    ("asyncio.TimeoutError", "exception", "library/asyncio-exceptions.html"),
    ("asyncio.AbstractEventLoop", "class", "library/asyncio-eventloop.html"),
    ("asyncio.loop.call_soon_threadsafe", "method", "library/asyncio-eventloop.html"),
    ("asyncio.loop.run_in_executor", "method", "library/asyncio-eventloop.html"),
    ("asyncio.eager_task_factory", "function", "library/asyncio-task.html"),
    # threads, processes, futures, context
    ("threading.Thread", "class", "library/threading.html"),
    ("threading.Lock", "function", "library/threading.html"),
    ("threading.enumerate", "function", "library/threading.html"),
    ("os.fork", "function", "library/os.html"),
    ("os.register_at_fork", "function", "library/os.html"),
    ("atexit", "module", "library/atexit.html"),
    ("multiprocessing", "module", "library/multiprocessing.html"),
    ("concurrent.futures.Future", "class", "library/concurrent.futures.html"),
    ("concurrent.futures.ThreadPoolExecutor", "class", "library/concurrent.futures.html"),
    ("concurrent.futures.CancelledError", "exception", "library/concurrent.futures.html"),
    ("contextvars", "module", "library/contextvars.html"),
    ("contextvars.ContextVar", "class", "library/contextvars.html"),
    ("contextvars.Context", "class", "library/contextvars.html"),
    # typing and collections
    ("typing.Any", "data", "library/typing.html"),
    ("typing.Literal", "data", "library/typing.html"),
    ("typing.TypeVar", "class", "library/typing.html"),
    ("typing.Protocol", "class", "library/typing.html"),
    ("collections.abc.Callable", "class", "library/collections.abc.html"),
    ("collections.abc.Awaitable", "class", "library/collections.abc.html"),
    ("collections.abc.Coroutine", "class", "library/collections.abc.html"),
    ("collections.abc.Iterable", "class", "library/collections.abc.html"),
    ("collections.abc.Mapping", "class", "library/collections.abc.html"),
    ("collections.abc.Sequence", "class", "library/collections.abc.html"),
    ("types.ModuleType", "class", "library/types.html"),
    ("types.TracebackType", "class", "library/types.html"),
    ("inspect.Signature", "class", "library/inspect.html"),
    ("dataclasses.dataclass", "function", "library/dataclasses.html"),
    # Where a class is defined, as annotations name it, anchored at its documented name.
    ("asyncio.events.AbstractEventLoop", "class", "library/asyncio-eventloop.html#asyncio.AbstractEventLoop"),
    (
        "concurrent.futures._base.CancelledError",
        "exception",
        "library/concurrent.futures.html#concurrent.futures.CancelledError",
    ),
]

TRIO: list[tuple[str, str, str]] = [
    ("trio.run", "function", "reference-core.html"),
    ("trio.open_nursery", "function", "reference-core.html"),
    ("trio.Nursery", "class", "reference-core.html"),
    ("trio.fail_after", "function", "reference-core.html"),
    ("trio.move_on_after", "function", "reference-core.html"),
    ("trio.CancelScope", "class", "reference-core.html"),
    ("trio.Cancelled", "exception", "reference-core.html"),
    ("trio.TooSlowError", "exception", "reference-core.html"),
    ("trio.to_thread.run_sync", "function", "reference-core.html"),
    ("trio.from_thread.run", "function", "reference-core.html"),
    ("trio.lowlevel.TrioToken", "class", "reference-lowlevel.html"),
    ("trio.lowlevel.TrioToken.run_sync_soon", "method", "reference-lowlevel.html"),
    ("trio.lowlevel.current_trio_token", "function", "reference-lowlevel.html"),
]

ANYIO: list[tuple[str, str, str]] = [
    ("anyio.run", "function", "api.html"),
    ("anyio.from_thread.start_blocking_portal", "function", "api.html"),
    ("anyio.from_thread.BlockingPortal", "class", "api.html"),
    ("anyio.from_thread.BlockingPortal.call", "method", "api.html"),
    ("anyio.to_thread.run_sync", "function", "api.html"),
]


def write(path: Path, project: str, version: str, entries: list[tuple[str, str, str]]) -> None:
    inv = soi.Inventory()
    inv.project = project
    inv.version = version
    for name, role, page in entries:
        uri = page if "#" in page else f"{page}#$"
        inv.objects.append(soi.DataObjStr(name=name, domain="py", role=role, priority="1", uri=uri, dispname="-"))
    soi.writebytes(str(path), soi.compress(inv.data_file(contract=True)))
    print(f"wrote {path.name}: {len(entries)} names")


if __name__ == "__main__":
    write(HERE / "python.inv", "Python", "3.13", PYTHON)
    write(HERE / "trio.inv", "Trio", "0.30", TRIO)
    write(HERE / "anyio.inv", "AnyIO", "4", ANYIO)
