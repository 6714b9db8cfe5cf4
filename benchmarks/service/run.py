"""A real service under load: gunicorn (WSGI, threaded) and uvicorn (ASGI) asking an agent, driven by wrk.

For every agent delay (answering at once, or after awaiting ~1 ms) and every connection count,
each mode gets its own fresh server on 127.0.0.1 (a free port), is warmed up, then loaded by
``wrk --latency`` from another process; the server is always stopped afterwards. Modes:

- WSGI, gunicorn, 1 worker, gthread, 16 threads: ``none`` (no agent: the ceiling),
  ``agybridge`` (``runtime.chat``), ``rcts`` (``run_coroutine_threadsafe`` into a loop
  thread), ``async_to_sync`` (asgiref);
- ASGI, uvicorn, 1 worker, asyncio loop: ``direct`` (await the agent on the server's loop)
  and ``achat`` (``await runtime.achat``);
- the uvloop rows, when uvloop is installed: ``agybridge+uvloop`` and ``rcts+uvloop`` (WSGI, the
  bridge's loop on uvloop), ``direct+uvloop`` and ``achat+uvloop`` (uvicorn ``--loop uvloop``,
  the runtime on uvloop too). Each bridged server reports its loop's kind; a mismatch fails.

Prints a table and the targets of issues 17 and 23 (met or missed, by how much), and writes
``service.json`` and ``service.md`` into ``--out``. Timings are not asserted unless ``--strict``.

    python benchmarks/service/run.py --quick
    python benchmarks/service/run.py --connections 4,16,64 --duration 10 --out /tmp/service
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WSGI_MODES = ("none", "agybridge", "rcts", "async_to_sync")
ASGI_MODES = ("direct", "achat")
UVLOOP = "+uvloop"
#: The uvloop rows (issue 23, point 6: "uvloop rows for both"), run when uvloop is installed.
WSGI_UVLOOP_MODES = ("agybridge+uvloop", "rcts+uvloop")
ASGI_UVLOOP_MODES = ("direct+uvloop", "achat+uvloop")
GUNICORN_THREADS = 16
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Targets of issue 23, point 6, and those of issue 17, point 5, that it does not replace.
CEILING_TARGET = 0.9  # agybridge req/s >= 0.9x the no-bridge ceiling
RCTS_TARGET = 1.3  # agybridge req/s >= 1.3x run_coroutine_threadsafe (issue 23)
A2S_RPS_TARGET = 2.5  # agybridge req/s >= 2.5x async_to_sync (issue 17)
A2S_P99_TARGET = 3.0  # async_to_sync p99 >= 3x agybridge p99
ASGI_TARGET = 0.9  # achat req/s >= 0.9x awaiting the agent directly, when the agent awaits 1 ms
ASGI_AT_ONCE_TARGET = 0.5  # ... and >= 0.5x when it answers at once (issue 23)


@dataclass
class Result:
    server: str  # "wsgi" or "asgi"
    mode: str
    delay_ms: float
    connections: int
    rps: float
    requests: int
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # socket errors plus non-2xx responses
    non_2xx: int  # answers other than 200: the handler failed (a socket timeout may just be load)
    cpu_us_per_request: float  # server CPU (all its processes, user + system) per request
    wakeups_per_command: float | None  # agybridge runtime wake-ups per command (bridged modes)
    repeats: list[float] = field(default_factory=list)  # req/s of every repeat (the median is kept)


# ----------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def server_command(server: str, port: int, mode: str = "") -> list[str]:
    if server == "wsgi":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(HERE / "gunicorn_conf.py"),
            "--pythonpath",
            str(HERE),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            str(GUNICORN_THREADS),
            "--log-level",
            "warning",
            "wsgi_app:app",
        ]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop" if mode.endswith(UVLOOP) else "asyncio",
        "--http",
        "httptools",
        "--lifespan",
        "on",
        "--no-access-log",
        "--log-level",
        "warning",
        "asgi_app:app",
    ]


def fetch(port: int, message: str, timeout: float = 2.0) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", f"/chat?m={message}")
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]}")
        return body
    finally:
        conn.close()


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU of every live process in session *sid* (the server and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # After the command: state ppid pgrp session ... utime(12) stime(13) counting from state=0.
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


@contextlib.contextmanager
def running_server(
    server: str, mode: str, delay: float, log_path: Path, runtime_options: dict[str, Any]
) -> Iterator[tuple[int, int]]:
    """Start one server (its own session, loopback only), wait until it answers, always stop it."""
    port = free_port()
    env = dict(os.environ, AGY_SERVICE_MODE=mode, AGY_SERVICE_DELAY=repr(delay), PYTHONUNBUFFERED="1")
    env["AGY_SERVICE_RUNTIME_OPTIONS"] = json.dumps(runtime_options)
    env["AGY_SERVICE_METRICS_FILE"] = str(log_path.with_suffix(".metrics.json"))
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            server_command(server, port, mode), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{server}/{mode} exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    body = fetch(port, "probe")
                    break
                except (OSError, http.client.HTTPException) as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{server}/{mode} did not answer within {STARTUP_TIMEOUT} s: {exc}") from exc
                    time.sleep(0.1)
            if body != "reply to probe":
                raise RuntimeError(f"{server}/{mode} answered {body!r}, expected 'reply to probe'")
            yield port, proc.pid
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful: worker_exit / lifespan shutdown run), then SIGKILL the server's group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group is the server's own (start_new_session)
    proc.wait()


# ----------------------------------------------------------------------------------------
# wrk
# ----------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, request count, latency percentiles (ms) and errors from ``wrk --latency``."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    parsed: dict[str, float] = {"rps": float(rps.group(1)), "requests": float(total.group(1))}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE):
        parsed[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    errors = 0
    parsed["non_2xx"] = 0.0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
        parsed["non_2xx"] = float(non_2xx.group(1))
    parsed["errors"] = float(errors)
    return parsed


def wrk(port: int, connections: int, seconds: float, threads: int) -> str:
    cmd = [
        "wrk",
        "--latency",
        "-t",
        str(max(1, min(threads, connections))),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",  # wrk takes whole seconds
        "--timeout",
        "5s",
        f"http://127.0.0.1:{port}/chat?m=hello",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}")
    return done.stdout


def measure(
    server: str, mode: str, *, delay: float, connections: int, args: argparse.Namespace, logs: Path
) -> dict[str, float]:
    log_path = logs / f"{server}-{mode}-{delay * 1e3:g}ms-c{connections}.log"
    with running_server(server, mode, delay, log_path, args.runtime_options) as (port, sid):
        if args.warmup > 0:
            wrk(port, connections, args.warmup, args.wrk_threads)
        cpu_before = session_cpu_seconds(sid)
        output = wrk(port, connections, args.duration, args.wrk_threads)
        cpu = session_cpu_seconds(sid) - cpu_before
    (logs / (log_path.stem + ".wrk.txt")).write_text(output)
    parsed = parse_wrk(output)
    parsed["cpu_us_per_request"] = cpu / max(parsed["requests"], 1.0) * 1e6
    metrics_path = log_path.with_suffix(".metrics.json")
    if metrics_path.exists():  # bridged modes: queue wake-ups per command, over the server's life
        counters = json.loads(metrics_path.read_text())
        parsed["wakeups_per_command"] = counters["wakeups"] / max(counters["submitted"], 1)
        expected = "uvloop" if mode.endswith(UVLOOP) else "asyncio"
        if counters.get("loop") != expected:
            raise RuntimeError(f"{server}/{mode}: the runtime ran on {counters.get('loop')!r}, not {expected}")
    return parsed


# ----------------------------------------------------------------------------------------
# Verdicts and reporting
# ----------------------------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    delay_ms: float
    connections: int
    ratio: float
    target: float

    @property
    def met(self) -> bool:
        return self.ratio >= self.target

    def describe(self) -> str:
        gap = (self.ratio - self.target) / self.target * 100
        state = "met" if self.met else "MISSED"
        return (
            f"{state:6s} {self.name:56s} agent {self.delay_ms:g} ms, c={self.connections:<3d} "
            f"{self.ratio:5.2f}x (target >= {self.target:g}x, {gap:+.0f}%)"
        )


def verdicts(results: list[Result]) -> list[Verdict]:
    """Every target at every point, for the stock rows and again for the uvloop rows."""
    index = {(r.server, r.mode, r.delay_ms, r.connections): r for r in results}
    out: list[Verdict] = []
    for delay_ms, conns in sorted({(r.delay_ms, r.connections) for r in results}):

        def get(server: str, mode: str, d: float = delay_ms, c: int = conns) -> Result | None:
            return index.get((server, mode, d, c))

        for loop in ("", UVLOOP):
            tag = " (uvloop)" if loop else ""
            bridge, ceiling, a2s = get("wsgi", "agybridge" + loop), get("wsgi", "none"), get("wsgi", "async_to_sync")
            rcts = get("wsgi", "rcts" + loop)
            if bridge and ceiling:
                out.append(
                    Verdict(
                        f"WSGI agybridge{tag} / no bridge, req/s",
                        delay_ms,
                        conns,
                        bridge.rps / ceiling.rps,
                        CEILING_TARGET,
                    )
                )
            if bridge and rcts:
                out.append(
                    Verdict(
                        f"WSGI agybridge{tag} / rcts{tag}, req/s", delay_ms, conns, bridge.rps / rcts.rps, RCTS_TARGET
                    )
                )
            if bridge and a2s:
                out.append(
                    Verdict(
                        f"WSGI agybridge{tag} / async_to_sync, req/s",
                        delay_ms,
                        conns,
                        bridge.rps / a2s.rps,
                        A2S_RPS_TARGET,
                    )
                )
                out.append(
                    Verdict(
                        f"WSGI async_to_sync p99 / agybridge{tag} p99",
                        delay_ms,
                        conns,
                        a2s.p99_ms / bridge.p99_ms,
                        A2S_P99_TARGET,
                    )
                )
            achat, direct = get("asgi", "achat" + loop), get("asgi", "direct" + loop)
            if achat and direct:
                out.append(
                    Verdict(
                        f"ASGI achat{tag} / direct on the server loop, req/s",
                        delay_ms,
                        conns,
                        achat.rps / direct.rps,
                        ASGI_TARGET if delay_ms >= 1 else ASGI_AT_ONCE_TARGET,
                    )
                )
    return out


def table(results: list[Result]) -> list[str]:
    header = (
        "| server | mode | agent | conns | req/s | p50 ms | p90 ms | p99 ms | CPU us/req | wake-ups/chat "
        "| vs ceiling | errors |"
    )
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    # The ceiling of a row: no bridge (WSGI), or the agent awaited on the server's own loop of
    # the same kind (ASGI: a uvloop row against uvicorn on uvloop).
    ceilings = {
        (r.server, r.mode.endswith(UVLOOP) and r.server == "asgi", r.delay_ms, r.connections): r.rps
        for r in results
        if r.mode in ("none", "direct", "direct" + UVLOOP)
    }
    for r in results:
        ceiling = ceilings.get((r.server, r.mode.endswith(UVLOOP) and r.server == "asgi", r.delay_ms, r.connections))
        vs = f"{r.rps / ceiling:.2f}x" if ceiling else "-"
        wakeups = "-" if r.wakeups_per_command is None else f"{r.wakeups_per_command:.2f}"
        lines.append(
            f"| {r.server} | {r.mode} | {r.delay_ms:g} ms | {r.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} | "
            f"{r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us_per_request:.0f} | {wakeups} | {vs} | {r.errors} |"
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="CI mode: 16 connections, 3 s runs, 1 s warm-up")
    parser.add_argument("--connections", help="comma-separated wrk connection counts (default 4,16,64)")
    parser.add_argument("--duration", type=float, help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--warmup", type=float, help="seconds of wrk warm-up before each run (default 2)")
    parser.add_argument("--delays", default="0,1", help="agent delays in ms, comma-separated (default 0,1)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per point; the median req/s is kept")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: the machine is small)")
    parser.add_argument("--only", default="", help="comma-separated modes to run (default all)")
    parser.add_argument("--out", default="service-bench", help="directory for service.json, service.md and logs")
    parser.add_argument(
        "--runtime-option",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a RuntimeConfig field for the bridged modes, e.g. loop_spin=5e-05 (repeatable)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.connections = [int(c) for c in (args.connections or ("16" if args.quick else "4,16,64")).split(",")]
    args.duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.delays = [float(d) / 1e3 for d in args.delays.split(",")]
    args.runtime_options = {}
    for option in args.runtime_option:
        name, _, value = option.partition("=")
        args.runtime_options[name] = json.loads(value)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    wsgi_modes, asgi_modes = list(WSGI_MODES), list(ASGI_MODES)
    if uvloop_installed():
        wsgi_modes += WSGI_UVLOOP_MODES
        asgi_modes += ASGI_UVLOOP_MODES
    else:
        print("uvloop is not installed: the uvloop rows are left out (pip install '.[service]')", flush=True)
    modes = [("wsgi", m) for m in wsgi_modes] + [("asgi", m) for m in asgi_modes]
    if args.only:
        wanted = set(args.only.split(","))
        modes = [(s, m) for s, m in modes if m in wanted]
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    results: list[Result] = []
    # Modes run back to back at each point, so that their ratios are taken minutes apart at
    # most on a shared machine; the order alternates between repeats.
    for delay in args.delays:
        for conns in args.connections:
            runs: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in modes}
            for rep in range(args.repeat):
                for server, mode in modes if rep % 2 == 0 else modes[::-1]:
                    got = measure(server, mode, delay=delay, connections=conns, args=args, logs=logs)
                    runs[(server, mode)].append(got)
                    print(
                        f"  {server:4s} {mode:16s} agent {delay * 1e3:g} ms  c={conns:<3d} "
                        f"{got['rps']:8,.0f} req/s  p99 {got.get('p99_ms', float('nan')):7.2f} ms  "
                        f"CPU {got['cpu_us_per_request']:5.0f} us/req  errors {got['errors']:g}",
                        flush=True,
                    )
            for (server, mode), samples in runs.items():
                samples.sort(key=lambda s: s["rps"])
                mid = samples[len(samples) // 2]
                results.append(
                    Result(
                        server=server,
                        mode=mode,
                        delay_ms=delay * 1e3,
                        connections=conns,
                        rps=mid["rps"],
                        requests=int(mid["requests"]),
                        p50_ms=mid.get("p50_ms", float("nan")),
                        p75_ms=mid.get("p75_ms", float("nan")),
                        p90_ms=mid.get("p90_ms", float("nan")),
                        p99_ms=mid.get("p99_ms", float("nan")),
                        errors=int(sum(s["errors"] for s in samples)),
                        non_2xx=int(sum(s["non_2xx"] for s in samples)),
                        cpu_us_per_request=mid["cpu_us_per_request"],
                        wakeups_per_command=mid.get("wakeups_per_command"),
                        repeats=[s["rps"] for s in samples],
                    )
                )
    elapsed = time.monotonic() - started
    found = verdicts(results)
    import agybridge

    load = os.getloadavg()
    setup = (
        f"gunicorn 1 worker gthread {GUNICORN_THREADS} threads; uvicorn 1 worker asyncio loop httptools; "
        f"wrk {args.wrk_threads} thread(s), {args.duration:g} s runs after {args.warmup:g} s warm-up, "
        f"median of {args.repeat}; {os.cpu_count()} CPUs shared by server and wrk; "
        f"Python {platform.python_version()}, agybridge core {agybridge.IMPLEMENTATION}; "
        f"runtime options {args.runtime_options or 'default'}; load average at start {load_at_start:.1f}, "
        f"at end {load[0]:.1f}"
    )
    lines = [f"Setup: {setup}", "", *table(results), "", "Targets (issue 23 point 6, issue 17 point 5):", ""]
    lines += [f"- {v.describe()}" for v in found]
    errors = sum(r.errors for r in results)
    failed_answers = sum(r.non_2xx for r in results)
    if errors:
        lines += ["", f"wrk reported {errors} errors ({failed_answers} non-2xx answers); see {logs}"]
    report = "\n".join(lines)
    print()
    print(report)
    print(f"\n{sum(v.met for v in found)}/{len(found)} targets met; {elapsed:.0f} s; results in {out}")
    (out / "service.md").write_text(report + "\n")
    payload: dict[str, Any] = {
        "setup": setup,
        "results": [asdict(r) for r in results],
        "verdicts": [dict(asdict(v), met=v.met) for v in found],
        "elapsed_s": elapsed,
    }
    (out / "service.json").write_text(json.dumps(payload, indent=2) + "\n")
    if failed_answers:  # a handler failed; socket errors alone can be the machine's load
        return 1
    return 1 if args.strict and not all(v.met for v in found) else 0


if __name__ == "__main__":
    sys.exit(main())
