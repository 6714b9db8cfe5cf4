"""gunicorn, uWSGI, Celery and multiprocessing running the app with its module-level runtime
(issue 24 points 4 and 5). Each server is started here on 127.0.0.1 on a free port, loaded from
another process with a bounded number of requests, and stopped by its pid; a fixture's
finalizer kills whatever is left, so a failing test leaves no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *condition* (a server's port, a file) until true; fail naming *what* after *timeout*."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        threading.Event().wait(0.05)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


class Server:
    """One server process group, its log and its app log."""

    def __init__(self, cmd: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp / "server.log"
        self.app_log = tmp / "app.log"
        self.started_dir = tmp / "started"
        self.started_dir.mkdir()
        full_env = {**os.environ, "AGY_APP_LOG": str(self.app_log), "AGY_STARTED_DIR": str(self.started_dir)}
        full_env["PYTHONPATH"] = str(HERE)
        full_env.update(env or {})
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=HERE, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        app = self.app_log.read_text() if self.app_log.exists() else ""
        return self.log.read_text() + "\n--- app log ---\n" + app

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        else:  # the group may still hold workers of an exited master
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(cmd: list[str], env: dict[str, str] | None = None, name: str = "s") -> Server:
        directory = tmp_path / f"{name}{len(started)}"
        directory.mkdir()
        server = Server(cmd, directory, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def load(port: int, count: int, concurrency: int, *delays: int) -> subprocess.Popen[str]:
    args = [sys.executable, str(HERE / "load.py"), f"http://127.0.0.1:{port}", str(count), str(concurrency)]
    return subprocess.Popen([*args, *map(str, delays)], stdout=subprocess.PIPE, text=True)


def results(proc: subprocess.Popen[str], timeout: float = 120) -> list[tuple[int, dict[str, Any] | str]]:
    out, _ = proc.communicate(timeout=timeout)
    parsed = []
    for status, body in json.loads(out):
        parsed.append((status, json.loads(body) if status == 200 else body))
    return parsed


def all_answered(answers: list[tuple[int, Any]], server: Server) -> list[dict[str, Any]]:
    bad = [a for a in answers if a[0] != 200]
    assert not bad, f"{len(bad)} of {len(answers)} requests not answered: {bad[:3]}\n{server.output()}"
    return [body for _, body in answers]


def worker_pids(server: Server, n: int) -> set[int]:
    wait_for(lambda: len(children(server.pid)) >= n, 30, f"{n} workers of {server.pid}")
    return children(server.pid)


# -- gunicorn ---------------------------------------------------------------------------------


def gunicorn(servers: Callable[..., Server], port: int) -> Server:
    server = servers(
        [str(BIN / "gunicorn"), "--preload", "-c", "gunicorn_conf.py", "-b", f"127.0.0.1:{port}", "app:application"],
        name="gunicorn",
    )
    wait_for(lambda: port_open(port), 60, f"gunicorn on port {port}")
    return server


def test_gunicorn_preload_gthread_every_request_answered_by_every_worker(servers: Callable[..., Server]) -> None:
    port = free_port()
    server = gunicorn(servers, port)
    workers = worker_pids(server, 2)
    bodies = all_answered(results(load(port, 400, 32, 50, 100, 0)), server)
    assert {b["pid"] for b in bodies} == workers, "every worker answered, and only workers"
    assert all(b["agent_made_in"] == b["pid"] for b in bodies), "the agent was made again in each worker"
    assert all(b["pool"] == b["pid"] for b in bodies), "each worker entered its own held pool (post_fork)"


def _in_flight_then(server: Server, port: int, sig: signal.Signals, n: int = 16) -> list[dict[str, Any]]:
    """Send *n* requests whose agents await 100-300 ms; signal the master once half are in flight.

    The other half are accepted too (queued in a worker, or on their way): every one must be
    answered in full.
    """
    client = load(port, n, n, 100, 200, 300)
    wait_for(lambda: len(list(server.started_dir.iterdir())) >= n // 2, 30, f"{n // 2} requests in flight")
    os.kill(server.pid, sig)
    return all_answered(results(client), server)


def _clean_exit(server: Server, old_workers: set[int], within: float) -> None:
    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in old_workers)

    wait_for(gone, within, f"workers {old_workers} to exit within graceful_timeout")
    output = server.output()
    assert "Traceback" not in output, output
    for pid in old_workers:
        assert f"worker {pid} stopped; agybridge threads left: []" in output, output
        assert f"pool of {pid} closed, exception: None" in output, output


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_gunicorn_sigterm_under_load_answers_every_accepted_request(servers: Callable[..., Server]) -> None:
    port = free_port()
    server = gunicorn(servers, port)
    workers = worker_pids(server, 2)
    began = time.monotonic()
    bodies = _in_flight_then(server, port, signal.SIGTERM)
    assert {b["pid"] for b in bodies} <= workers
    server.proc.wait(15)  # graceful_timeout is 10 s
    assert time.monotonic() - began < 15
    _clean_exit(server, workers, 5)


def test_gunicorn_sighup_reload_under_load_answers_every_accepted_request(servers: Callable[..., Server]) -> None:
    port = free_port()
    server = gunicorn(servers, port)
    workers = worker_pids(server, 2)
    bodies = _in_flight_then(server, port, signal.SIGHUP)
    assert {b["pid"] for b in bodies} <= workers
    _clean_exit(server, workers, 15)
    fresh = {b["pid"] for b in all_answered(results(load(port, 100, 16, 20)), server)}
    assert fresh and not fresh & workers, "the reloaded workers answer, with the runtime restarted in them"


# -- uWSGI ------------------------------------------------------------------------------------


def uwsgi(servers: Callable[..., Server], port: int, *extra: str) -> Server:
    cmd = [str(BIN / "uwsgi"), "--ini", "uwsgi.ini", "--http-socket", f"127.0.0.1:{port}", *extra]
    server = servers(cmd, name="uwsgi")
    wait_for(lambda: port_open(port), 60, f"uwsgi on port {port}")
    return server


@pytest.mark.parametrize("mode", ["fork-after-load", "lazy-apps"])
def test_uwsgi_every_request_answered_by_every_worker(servers: Callable[..., Server], mode: str) -> None:
    port = free_port()
    server = uwsgi(servers, port, *(["--lazy-apps"] if mode == "lazy-apps" else []))
    workers = worker_pids(server, 2)
    bodies = all_answered(results(load(port, 400, 16, 50, 100, 0)), server)
    assert {b["pid"] for b in bodies} == workers, "every worker answered, and only workers"
    assert all(b["agent_made_in"] == b["pid"] for b in bodies)


def test_uwsgi_graceful_reload_under_load_answers_every_accepted_request(servers: Callable[..., Server]) -> None:
    port = free_port()
    server = uwsgi(servers, port)
    workers = worker_pids(server, 2)
    bodies = _in_flight_then(server, port, signal.SIGHUP, n=8)  # 2 workers x 4 threads
    assert {b["pid"] for b in bodies} <= workers
    wait_for(lambda: not (workers & children(server.pid)), 20, "the old uWSGI workers to be replaced")
    _clean_exit(server, workers, 5)
    fresh = {b["pid"] for b in all_answered(results(load(port, 100, 8, 20)), server)}
    assert fresh and not fresh & workers


# -- Celery, with redis-server ---------------------------------------------------------------


@pytest.fixture
def redis_url(servers: Callable[..., Server]) -> str:
    redis = shutil.which("redis-server")
    if redis is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server); CI installs it")
    port = free_port()
    servers([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], name="redis")
    wait_for(lambda: port_open(port), 30, f"redis-server on port {port}")
    return f"redis://127.0.0.1:{port}/0"


def test_celery_prefork_tasks_call_agents(servers: Callable[..., Server], redis_url: str) -> None:
    env = {"AGY_BROKER_URL": redis_url}
    cmd = [str(BIN / "celery"), "-A", "celery_app", "worker", "--pool", "prefork", "-c", "2", "--loglevel", "info"]
    server = servers([*cmd, "--without-gossip", "--without-mingle", "--without-heartbeat"], env=env, name="celery")
    wait_for(lambda: "ready." in server.output(), 60, "the celery worker to be ready")
    workers = worker_pids(server, 2)
    script = (
        "import json, celery_app\n"
        "results = [celery_app.ask.delay(50) for _ in range(60)]\n"
        "print(json.dumps([r.get(timeout=60) for r in results]))\n"
    )
    client = subprocess.run(
        [sys.executable, "-c", script], cwd=HERE, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert client.returncode == 0, client.stderr + server.output()
    answers = json.loads(client.stdout)
    assert {a["pid"] for a in answers} == workers, "both pool processes ran tasks"
    assert all(a["agent_made_in"] == a["pid"] == a["pool"] for a in answers)
    os.kill(server.pid, signal.SIGTERM)  # warm shutdown
    server.proc.wait(30)
    output = server.output()
    assert "Traceback" not in output, output


# -- multiprocessing --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_pools_call_agents(method: str) -> None:
    proc = subprocess.run(
        [sys.executable, "mp_main.py", method],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    first, last = proc.stdout.splitlines()[0], proc.stdout.splitlines()[-1]
    assert first == "True"
    report = json.loads(last)
    pids = {a["pid"] for a in report["answers"]}
    assert len(report["answers"]) == 40 and report["parent"] not in pids and 1 <= len(pids) <= 2
    assert all(a["agent_made_in"] == a["pid"] == a["pool"] for a in report["answers"])


def test_a_request_during_shutdown_gets_a_503() -> None:
    """What a worker answers once its runtime began shutting down (the app's mapping)."""
    script = (
        "import app\n"
        "app.runtime.shutdown()\n"
        "statuses = []\n"
        "body = app.application({'QUERY_STRING': 'delay=0'}, lambda status, headers: statuses.append(status))\n"
        "print(statuses[0], body[0].decode())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=HERE, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == '503 Service Unavailable {"error": "shutting down"}'
