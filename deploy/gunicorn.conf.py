"""gunicorn settings for the web service (deploy/bin/run web).

Environment: GUNICORN_BIND (127.0.0.1:8000: nginx and the local Prometheus reach it
there), WEB_CONCURRENCY (worker processes, default 2 × CPUs + 1), GUNICORN_TIMEOUT (30).
"""

from __future__ import annotations

import multiprocessing
import os

from prometheus_client import multiprocess

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * multiprocessing.cpu_count() + 1)
# Sync workers behind nginx, which buffers whole requests and responses (slow clients wait on
# nginx, not on a worker). A request that takes longer than this is killed and logged.
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT") or 30)
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then (memory), at different moments.
max_requests = 2000
max_requests_jitter = 200
# nginx on this host sets X-Forwarded-Proto; nobody else is believed.
forwarded_allow_ips = "127.0.0.1,::1"
# One access line per request comes from the application (request id, route, member).
accesslog = None
errorlog = "-"
proc_name = "hashexchange-web"


def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's hook signature
    """A dead worker's live gauges leave /metrics; its counters stay counted."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
