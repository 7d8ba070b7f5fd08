"""Limits of the service: request body size (413) and a per-key rate limit (429).

:class:`BodyLimit` is an ASGI middleware: a body announced larger than the limit is
refused before it is read, and a body streamed without a length is counted as it
arrives and refused when it passes the limit, so no oversized body is ever buffered
(and nothing of it is echoed back).  Track uploads have their own, larger limit.

:class:`RateLimiter` is a token bucket per key id: ``rate`` requests a second, bursts
of up to ``burst``; past it a request gets 429 with ``Retry-After`` (seconds).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable

from fastapi import HTTPException


class BodyTooLarge(HTTPException):
    """A request body passed its limit (413; the connection is closed after the answer)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes (the service's "
                         "limit; see --max-body-mb and --max-upload-mb)",
                         headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware refusing request bodies over a size limit with 413.

    Args:
        app: The wrapped ASGI app.
        max_body: Limit of ordinary (JSON) bodies, bytes.
        max_upload: Limit of upload bodies, bytes.
        is_upload: Whether a request path is an upload.
    """

    def __init__(self, app, max_body: int, max_upload: int, is_upload: Callable[[str], bool]):
        self.app = app
        self.max_body = int(max_body)
        self.max_upload = int(max_upload)
        self.is_upload = is_upload

    async def __call__(self, scope, receive, send):
        """Check the announced length, then count the body as the app reads it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if self.is_upload(scope["path"]) else self.max_body
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _send_413(send, limit)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _send_413(send, limit: int) -> None:
    body = json.dumps({"detail": BodyTooLarge(limit).detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A token bucket per key id.

    Args:
        rate: Requests a second a key may make on average; ``0`` or less: no limit.
        burst: Requests a key may make at once (default: ``max(1, 2 * rate)``).
    """

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, 2 * self.rate))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str) -> int:
        """Take one token of ``key_id``; return 0, or the seconds to wait when it has none."""
        if self.rate <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key_id] = (tokens - 1, now)
                return 0
            self._buckets[key_id] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.rate))
