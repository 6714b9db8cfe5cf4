"""A bounded load from another process: ``python load.py URL COUNT CONCURRENCY [DELAYS_MS...]``.

Prints one JSON line: a ``[status, body]`` pair per request, in order. Every request has a
timeout, so the load always ends.
"""

import http.client
import json
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def one(url: str, delay: int) -> list:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", f"/?delay={delay}")
        response = conn.getresponse()
        return [response.status, response.read().decode()]
    except OSError as exc:
        return [0, repr(exc)]
    finally:
        conn.close()


if __name__ == "__main__":
    url, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    delays = [int(d) for d in sys.argv[4:]] or [0]
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: one(url, delays[i % len(delays)]), range(count)))
    print(json.dumps(results))
