"""Gunicorn hooks: the backend is built in each worker after the fork and closed when it exits."""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    import wsgi_app

    wsgi_app.start_backend()


def worker_exit(server: Any, worker: Any) -> None:
    import wsgi_app

    wsgi_app.stop_backend()
