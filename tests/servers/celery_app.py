"""A Celery app whose tasks call the agent: ``celery -A celery_app worker --pool prefork -c 2``.

The worker's main process imports this module (and with it ``app``'s module-level runtime)
before its prefork pool forks the child processes; each child's first task restarts the
runtime there. ``worker_process_init`` runs in each child after the fork: enter what the
child holds for its lifetime there; ``worker_process_shutdown`` shuts the child's runtime down.
"""

import os

import app
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

broker = os.environ.get("AGY_BROKER_URL", "redis://127.0.0.1:6379/0")
celery = Celery("celery_app", broker=broker, backend=broker)


@worker_process_init.connect
def _start(**_kwargs: object) -> None:
    app.start_worker()


@worker_process_shutdown.connect
def _stop(**_kwargs: object) -> None:
    app.stop_worker()


@celery.task
def ask(delay_ms: int) -> dict:
    return app.ask(delay_ms)
