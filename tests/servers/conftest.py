"""Real servers, started by the tests on 127.0.0.1 and stopped by their pid.

These tests need the ``servers`` extra (gunicorn, uWSGI built by pip, Celery with redis) and
redis-server from the OS; CI runs them as a step of their own (see ``.ci/run``). The default
``pytest`` run does not collect them unless ``AGYBRIDGE_SERVER_TESTS=1``.
"""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("AGYBRIDGE_SERVER_TESTS") == "1" else ["test_*.py"]
