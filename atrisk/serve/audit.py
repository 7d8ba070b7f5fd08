"""The access log: which key (its id, never the key) called what, touching which students.

:class:`AuditMiddleware` records every request made with a valid key once its answer
is sent: time (UTC), key id, organisation, method, endpoint (the route's template, e.g.
``/v1/students/{student_id}``), status, and the ids of the students whose data the
request read, wrote or erased (the endpoint names them in ``request.state.students``).
Entries are buffered in memory and written to the store's ``access_log`` table in one
insert per second (:class:`AccessLog`), so logging costs a request microseconds; the
buffer is written before the log is read and when the service stops (a killed service
loses at most the last second).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from atrisk.serve.store import Store

log = logging.getLogger(__name__)


class AccessLog:
    """Buffered writer of the store's ``access_log`` table.

    Args:
        store: The open store.
        flush_every: Seconds between writes of the buffer.
    """

    def __init__(self, store: Store, flush_every: float = 1.0):
        self.store = store
        self.flush_every = flush_every
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, key_id: str, org_id: str | None, method: str, endpoint: str, status: int,
               students: list[str] | tuple[str, ...] = ()) -> None:
        """Add one entry to the buffer."""
        row = (datetime.now(UTC).replace(tzinfo=None), key_id, org_id, method, endpoint,
               int(status), ",".join(students))
        with self._lock:
            self._rows.append(row)

    def flush(self) -> int:
        """Write the buffered entries to the store now; return how many."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            try:
                return self.store.append_access(rows)
            except Exception:  # noqa: BLE001 - keep the entries for the next try
                log.exception("cannot write %d access-log entries; retrying", len(rows))
                with self._lock:
                    self._rows[:0] = rows
                return 0

    def start(self) -> None:
        """Start the thread that writes the buffer every ``flush_every`` seconds."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="atrisk-access-log",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_every):
            self.flush()


class AuditMiddleware:
    """ASGI middleware that records each request made with a valid key in the access log.

    The auth dependency puts the key's :class:`~atrisk.serve.keys.Principal` in
    ``request.state.principal``; endpoints put the student ids they touched in
    ``request.state.students``.

    Args:
        app: The wrapped ASGI app.
        access_log: Where entries go.
    """

    def __init__(self, app, access_log: AccessLog):
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope, receive, send):
        """Pass the request on; afterwards record it when it carried a valid key."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def watched(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            state = scope.get("state") or {}
            who = state.get("principal")
            if who is not None:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or scope["path"]
                self.access_log.record(who.key_id, who.org_id, scope["method"], endpoint,
                                       status[0], state.get("students") or ())
