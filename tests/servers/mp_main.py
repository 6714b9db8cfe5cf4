"""``multiprocessing`` pools calling the agent: ``python mp_main.py fork|forkserver|spawn``.

With ``fork`` the children inherit the parent's (started) module-level runtime, which restarts
in each on first use; with ``forkserver`` and ``spawn`` each child imports ``app`` afresh. The
pool's ``initializer`` runs in every child: enter what it holds for its lifetime there.
"""

import json
import multiprocessing
import os
import sys

import app

if __name__ == "__main__":
    method = sys.argv[1]
    print(json.loads(app.runtime.chat("assistant", "0"))["pid"] == os.getpid())  # started in the parent
    context = multiprocessing.get_context(method)
    with context.Pool(2, initializer=app.start_worker) as pool:
        answers = pool.map(app.ask, [20] * 40, chunksize=1)
    print(json.dumps({"parent": os.getpid(), "answers": answers}))
