"""gunicorn settings for the app: run with ``gunicorn --preload -c gunicorn_conf.py app:application``.

``--preload`` imports the app (and its module-level runtime) once, in the master, before the
workers fork; the runtime restarts itself in each worker on first use, so nothing needs to be
done for it after the fork. What the worker holds for its lifetime is entered in ``post_fork``.
"""

worker_class = "gthread"
workers = 2
threads = 8
graceful_timeout = 10


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    import app

    app.start_worker()


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    import app

    app.stop_worker()
